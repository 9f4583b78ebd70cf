"""Frechet distance in pixel space between a model's samples and the Fashion-MNIST test split.

    python benchmarks/model_quality.py MODEL [MODEL ...] [--n 500] [--nfe 20]

Pixel-space FD (fid.statistics and fid.frechet with the raw 1024 pixels as features) is computable
offline on a CPU in seconds; like FID it is biased upwards at small n, so the script also prints the
FD between n training and n test images (what an exact sampler scores at this n). Samples:
DPM-Solver++(2M) at `--nfe` log-SNR steps from seed 0.
"""

from __future__ import annotations

import argparse

import torch

from analytic import make_grid
from bench.studies.images.data import load_dataset
from bench.studies.images.fid import frechet, statistics
from bench.studies.images.models import load_model
from bench.studies.images.sampling import generate
from solvers import make_solver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--nfe", type=int, default=20)
    args = parser.parse_args()
    test = statistics(load_dataset("fashion-mnist-test", subset=args.n).reshape(args.n, -1).double())
    train = statistics(load_dataset("fashion-mnist", subset=args.n).reshape(args.n, -1).double())
    print(f"pixel FD, n = {args.n}: train vs test {frechet(train, test):.2f} (floor at this n)")
    for name in args.models:
        model = load_model(name)
        times = make_grid("logsnr", model.schedule, args.nfe, model.schedule.t_min, model.schedule.t_max)
        with torch.no_grad():
            images = generate(model, make_solver("dpmpp-2m"), times, args.n, 0, batch=100)
        x = images[:, :1].double().reshape(args.n, -1) / 127.5 - 1.0  # grey: one channel
        print(f"pixel FD, n = {args.n}: {name} (dpmpp-2m, NFE {args.nfe}) vs test "
              f"{frechet(statistics(x), test):.2f}")


if __name__ == "__main__":
    main()
