"""The bench command line: listings, bad input (one line, exit 2), resumable sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli.main import _user_errors, cli

BENCH = [sys.executable, "-m", "bench.cli"]
ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_list_solvers_json_has_the_fields():
    out = bench("list", "solvers", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {"euler", "ddim", "euler-maruyama"} <= {r["name"] for r in rows}
    for row in rows:
        assert {"name", "order", "stochastic", "nfe_per_step", "tags", "reference"} <= set(row)


@pytest.mark.parametrize("what", ["problems", "grids", "schedules", "metrics"])
def test_list_tables(what):
    result = CliRunner().invoke(cli, ["list", what])
    assert result.exit_code == 0 and result.output.strip()


BAD = [
    (["run", "--solvers", "eulr"], "unknown solver"),
    (["run", "--problem", "nope"], "unknown problem"),
    (["run", "--grid", "spiral"], "unknown grid"),
    (["run", "--metric", "w3"], "unknown metric"),
    (["run", "--problem", "mix-2d", "--metric", "w2-exact"], "w2-exact needs a Gaussian"),
    (["run", "--solvers", "euler", "--steps", "0"], "positive"),
    (["run", "--samples", "0"], "samples"),
    (["run", "--steps", "4,x"], "integers"),
    (["run", "--seeds", "-1"], "seeds"),
    (["run", "--seeds", "3-1"], "lo <= hi"),
    (["run", "--steps", "4", "--nfe", "8"], "not both"),
    (["run", "--solvers", "ddim-eta[eta=2]"], "eta"),
    (["run", "--device", "tpu"], "cpu or cuda"),
    (["plot", "/nonexistent/dir"], ""),
    (["report", "/nonexistent/dir"], ""),
    (["list", "solvers", "--tag", "nope"], ""),
    (["learned", "train", "--problem", "nope", "--train-steps", "1"], "unknown problem"),
    (["learned", "train", "--problem", "mix-2d,ring-8"], "one name"),
    (["learned", "decompose", "--model", "perturb:bias=0.1", "--steps", "4", "--device", "cuda"], "float64"),
    (["learned", "decompose", "--model", "missing.pt", "--steps", "4", "--seeds", "0"], ""),
    (["learned", "guided", "--scales", "1,x"], "numbers"),
    (["images", "train", "--dataset", "nope", "--train-steps", "1"], "unknown dataset"),
    (["images", "run", "--model", "/nonexistent/model", "--nfe", "5"], ""),
    (["images", "run", "--model", "m", "--seeds", "0-3"], "one seed"),
    (["fid", "ref", "--dataset", "nope", "--extractor", "tiny"], "unknown dataset"),
    (["fid", "calc", "--images", "folder:/nonexistent", "--dataset", "nope", "--extractor", "tiny"], ""),
    (["perf", "score", "--dims", "0"], "positive"),
]
NEEDS_OUT = {"run", "learned", "images"}


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    """Every command group answers bad input with one line on stderr and exit status 2."""
    out_args = ["--out", str(tmp_path / ("o.pt" if args[:2] == ["learned", "train"] else "o"))]
    out_args = out_args if args[0] in NEEDS_OUT else []
    out = bench(*args, *out_args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert message.lower() in lines[0].lower()


def test_bad_problem_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"weights": [0.5, 0.4], "means": [[0], [1]], "vars": [[1], [1]]}))
    out = bench("run", "--problem", str(path), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "sum to 1" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_other_runs_directory_is_refused(tmp_path):
    args = ["run", "--problem", "gauss-1d", "--solvers", "euler", "--steps", "4", "--out", str(tmp_path)]
    assert bench(*args).returncode == 0
    other = bench(*args[:-2], "--steps", "8", "--out", str(tmp_path))
    assert other.returncode == 2 and "different run" in other.stderr


def _command_paths() -> list[list[str]]:
    from bench.cli.main import _command_paths

    return [p.split() for p in _command_paths(cli) if p]


TOKENS = ["--solvers", "--steps", "--problem", "--grid", "--metric", "--nfe", "--samples", "--seeds",
          "--dtype", "--prior", "--device", "--train-steps", "--model", "--dataset", "--scales", "--images",
          "--reference", "--extractor", "--format", "--style", "all", "euler", "gauss-1d", "mix-2d",
          "w2-exact", "0", "-3", "4", "0-2", "2-1", "x", "[", "logsnr", "float16", "cuda", "", "json", "tiny",
          "ddim-eta[eta=3]"]


class _Ran(Exception):
    """Raised instead of running a study: the fuzz test checks parsing and validation only."""


@pytest.fixture
def no_studies(monkeypatch):
    """Every long-running entry point raises _Ran (the command got past its input checks)."""
    import bench.studies.analytic as analytic
    import bench.studies.grid_optimize as grid_optimize
    import bench.studies.images.run as image_run
    import bench.studies.images.train as image_train
    import bench.studies.learned as learned
    import bench.sweep.engine as engine

    def ran(*args, **kwargs):
        raise _Ran

    for module, name in [(analytic, "run_sweep"), (engine, "run_study"), (learned, "train"),
                         (image_train, "train"), (image_run, "run_images"), (grid_optimize, "optimize")]:
        monkeypatch.setattr(module, name, ran)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(_command_paths()), tokens=st.lists(st.sampled_from(TOKENS), max_size=5))
def test_fuzzed_arguments_never_traceback(tmp_path, no_studies, command, tokens):
    """Random arguments to every command either pass the checks, print help, or fail with one line and
    exit 2 (studies, trainings and FID never start: the fixture stops them)."""
    if command[0] == "perf" or command[:2] == ["fid", "convert"]:
        tokens = [*tokens, "--help"]  # these run benchmarks or write the Inception: check their parsing only
    argv = [*command, *tokens]
    if command[0] in NEEDS_OUT:
        argv += ["--out", str(tmp_path / "fuzz")]
    result = CliRunner().invoke(cli, argv, standalone_mode=False, catch_exceptions=True)
    exc = result.exception
    if exc is None or isinstance(exc, (SystemExit, _Ran, click.exceptions.NoArgsIsHelpError)):
        return
    assert isinstance(exc, (click.ClickException, *_user_errors())), repr(exc)
    assert "\n" not in str(exc).strip()


SWEEP = ["run", "--problem", "mix-2d", "--solvers", "euler,ddim", "--steps", "4,8,16,32,64",
         "--metric", "w2", "--samples", "300", "--seeds", "0-2"]


def _cells(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


def test_sigkill_then_rerun_completes_without_duplicates(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([*BENCH, *SWEEP, "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log = out / "cells.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len([ln for ln in log.read_text().splitlines() if ln.strip()])
    assert 4 <= partial < 30, "the sweep must have been killed mid-way"
    rerun = bench(*SWEEP, "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr
    frame = _cells(out)
    keys = ["problem", "solver", "steps", "seed", "metric"]
    assert len(frame) == 2 * 5 * 3 and not frame.duplicated(keys).any()
    assert (frame.status == "ok").all()
    # same seeds give bit-identical values: compare with an uninterrupted run
    clean = tmp_path / "clean"
    assert bench(*SWEEP, "--out", str(clean)).returncode == 0
    a = frame.sort_values(keys).reset_index(drop=True)
    b = _cells(clean).sort_values(keys).reset_index(drop=True)
    assert (a.value.to_numpy() == b.value.to_numpy()).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed"] and manifest["finished"] and manifest["git_commit"]
    assert (out / "orders.csv").exists() and (out / "results.parquet").exists()


def test_nfe_budgets_and_skips(tmp_path):
    out = tmp_path / "nfe"
    res = bench("run", "--problem", "gauss-1d", "--solvers", "euler,heun", "--nfe", "1,8", "--out", str(out))
    assert res.returncode == 0, res.stderr
    frame = _cells(out)
    heun = frame[frame.solver == "heun"].set_index("nfe")
    assert set(frame[frame.solver == "euler"].steps) == {1, 8}
    assert (heun.loc[8].steps == 4) and (heun.loc[8].status == "ok")
    skipped = frame[(frame.solver == "heun") & (frame.status == "skipped")]
    assert len(skipped) == 1 and "needs at least 2 NFE" in skipped.reason.iloc[0]


@pytest.mark.parametrize("text,seeds", [("0-3", [0, 1, 2, 3]), ("0,5,7", [0, 5, 7]), ("0-2,9", [0, 1, 2, 9]),
                                        ("4", [4]), ("1,1,0-1", [1, 0])])
def test_seed_lists_and_ranges(text, seeds):
    from bench.cli.options import SEEDS

    assert SEEDS.convert(text, None, None) == seeds


def test_name_lists_keep_brackets_whole():
    from bench.cli.options import NAMES

    names = NAMES.convert("ddim, ddim-eta[eta=0.5,x=1],heun", None, None)
    assert names == ["ddim", "ddim-eta[eta=0.5,x=1]", "heun"]


def test_every_command_parses_its_help_without_heavy_imports():
    """Start-up stays click-only: `bench --help` must not import torch, pandas or the studies."""
    code = ("import sys; from bench.cli.main import cli; "
            "heavy = [m for m in ('torch', 'pandas', 'ot', 'bench.studies.analytic') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
