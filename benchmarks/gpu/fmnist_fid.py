"""Helpers of benchmarks/gpu/fmnist_fid.sh (run from the repository root).

`plan`: times the network (in the run's dtype, at its batch) and the Inception (at the FID batch) on the
device and prints the largest even --reference-steps <= --max-ref whose reference (DPM-Solver++(3M) at
N/2 and N steps: 1.5 N network calls a sample) fits in what the cells leave of --budget seconds; the
estimates go to stderr. `summary`: the FID table (solver x NFE budget) of a results directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import pandas as pd
import torch

from bench.studies.images import fid
from bench.studies.images.models import load_model
from bench.studies.images.sampling import with_dtype
from bench.sweep.store import ResultStore
from solvers import resolve

STARTUP_S = 25.0  # the run's imports, model and Inception loading, x_T, reference statistics' data
FRECHET_S = 1.0  # one Frechet distance at 2048-d on the GPU, generously


def _rate(fn: Callable[[], object], n: int, device: torch.device, repeats: int = 2) -> float:
    """Items per second of fn (n items a call) after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n * repeats / (time.perf_counter() - start)


def plan(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as bench images run does
    model = with_dtype(load_model(args.model, args.device), args.dtype)
    x = torch.randn(args.batch, 1, 32, 32, device=device)
    t = torch.tensor(0.5, dtype=torch.float64)
    net = _rate(lambda: model.fn(x, t), args.batch, device)
    extractor = fid.make_extractor("inception", args.cache, args.device, args.fid_dtype)
    images = torch.randint(0, 256, (args.fid_batch, 1, 32, 32), dtype=torch.uint8)
    inception = _rate(lambda: fid.features(images, extractor, args.fid_batch), args.fid_batch, device)
    calls = 0
    for solver in resolve(args.solvers.split(",")):
        for budget in args.nfe:
            steps = solver.steps_for_nfe(budget)
            calls += solver.nfe(steps) if steps else 0
    cells = len(args.nfe) * len(args.solvers.split(","))
    featurized = (cells + 1) * args.samples + args.fid_reference  # cells, the floor, the reference
    need = (STARTUP_S + calls * args.samples / net + featurized / inception + cells * FRECHET_S)
    left = args.budget - need
    steps = int(min(args.max_ref, max(0.0, left) * net / (1.5 * args.samples))) // 2 * 2
    steps = max(steps, 4)
    print(f"plan: network {net:,.0f} images/s at batch {args.batch} ({args.dtype}), Inception "
          f"{inception:,.0f} images/s at batch {args.fid_batch} ({args.fid_dtype}); cells: {calls} network "
          f"calls a sample, {featurized:,} images featurized, ~{need:.0f} s of the {args.budget:.0f} s "
          f"budget; reference steps {steps} (~{1.5 * steps * args.samples / net:.0f} s)", file=sys.stderr)
    print(steps)
    return 0


def summary(args: argparse.Namespace) -> int:
    rows = ResultStore(args.results).frame()
    ok = rows[rows["status"] == "ok"]
    fids = ok[ok["metric"] == "fid"]
    if fids.empty:
        print("no FID rows")
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(fids.pivot_table(index="solver", columns="nfe_budget", values="value").round(2))
        print(ok[ok["metric"] == "path-rms"].pivot_table(index="solver", columns="nfe_budget",
                                                         values="value").round(4))
        print(fids.pivot_table(index="solver", columns="nfe_budget", values=["images_per_s", "network_share"])
              .round(2))
    floor = fids["noise_floor"].iloc[0]
    print(f"FID floor (as many real images): {floor:.3f}; {fids['note'].iloc[0]}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--model", default="fmnist")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--fid-dtype", default="bfloat16")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--fid-batch", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--solvers", required=True)
    p.add_argument("--nfe", type=lambda s: [int(v) for v in s.split(",")], required=True)
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--fid-reference", type=int, required=True)
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--max-ref", type=int, default=100)
    s = sub.add_parser("summary")
    s.add_argument("results")
    args = parser.parse_args()
    return plan(args) if args.command == "plan" else summary(args)


if __name__ == "__main__":
    sys.exit(main())
