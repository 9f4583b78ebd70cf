"""Learned and perturbed scores: DSM training lowers the measured score error, checkpoints
round-trip, perturbations have the score error they claim, and the score/discretization split."""

from __future__ import annotations

import json
import math

import pytest
import torch

from analytic import get_problem
from bench.studies.decompose import COMPONENTS, crossover, decompose, table
from bench.studies.learned import (
    CheckpointError,
    TrainConfig,
    learned_model,
    load_checkpoint,
    save_checkpoint,
    score_error,
    train,
)
from bench.studies.perturb import parse_model_spec


@pytest.fixture(scope="module")
def trained():
    config = TrainConfig(problem="mix-2d", width=32, depth=2, train_steps=400, samples=4000, batch=256,
                         eval_every=100)
    return train(config)


def test_score_error_falls_as_training_proceeds(trained):
    errors = [p["score_error"] for p in trained.curve]
    assert [p["step"] for p in trained.curve] == [0, 100, 200, 300, 400]
    assert errors[-1] < 0.5 * errors[0]
    assert errors[-1] < errors[1]
    assert all(math.isfinite(p["loss"]) for p in trained.curve[1:])


def test_checkpoint_round_trip(trained, tmp_path):
    path = save_checkpoint(trained, tmp_path / "net.pt")
    loaded = load_checkpoint(path)
    assert loaded.config == trained.config and loaded.curve[1:] == trained.curve[1:]
    problem = get_problem("mix-2d")
    x = torch.randn(7, 2, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    assert torch.equal(learned_model(loaded).fn(x, t), learned_model(trained).fn(x, t))
    assert score_error(problem, learned_model(loaded).fn) == pytest.approx(trained.curve[-1]["score_error"])
    with pytest.raises(CheckpointError, match="mix-2d"):
        parse_model_spec(str(path), get_problem("ring-8"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_perturbation_score_error_scales_with_its_size():
    problem = get_problem("mix-2d")
    assert score_error(problem, parse_model_spec("exact", problem).fn) < 1e-20
    small = score_error(problem, parse_model_spec("perturb:bias=0.05", problem).fn)
    large = score_error(problem, parse_model_spec("perturb:bias=0.1", problem).fn)
    assert large / small == pytest.approx(4.0, rel=1e-6)
    noise = score_error(problem, parse_model_spec("perturb:noise=0.1", problem).fn)
    assert noise == pytest.approx(problem.dim * 0.01, rel=0.1)  # E||size xi||^2 = d size^2
    for bad in ("perturb:bias=x", "perturb:wobble=0.1", "no-such-file.pt"):
        with pytest.raises(CheckpointError):
            parse_model_spec(bad, problem)


def test_decomposition_rows_are_consistent():
    frame = decompose("mix-2d", "perturb:bias=0.1", ["ddim", "dpmpp-2m"], [4, 16, 64], seeds=2, samples=200)
    assert set(frame["component"]) == set(COMPONENTS)
    assert len(frame) == 2 * 2 * 3 * 3 * 2  # seeds x solvers x steps x components x metrics
    wide = table(frame, "path-rms")
    # the score-only error does not depend on the solver or the step count
    assert wide["score"].nunique() == 1 and wide["score"].iloc[0] > 0
    # discretization error falls with steps; with a score error, "both" stays above the score floor
    for _, part in wide.groupby("solver"):
        assert part["discretization"].iloc[-1] < part["discretization"].iloc[0]
    fine = wide[wide["steps"] == 64]
    assert (fine["discretization"] <= fine["both"] + fine["both_ci"]).all()
    assert (fine["both"] >= 0.5 * fine["score"]).all()
    for solver in ("ddim", "dpmpp-2m"):
        assert math.isfinite(crossover(frame)[solver])
    w2 = table(frame, "w2")
    assert (w2[list(COMPONENTS)] > 0).all().all()


def test_cli_train_decompose_plot(tmp_path):
    from click.testing import CliRunner

    from bench.cli.main import _user_errors, cli

    runner = CliRunner()
    ckpt = tmp_path / "net.pt"
    result = runner.invoke(cli, ["learned", "train", "--problem", "mix-2d", "--width", "16", "--depth",
                                 "2", "--train-steps",
                                 "50", "--samples", "500", "--batch", "64", "--out", str(ckpt)])
    assert result.exit_code == 0, result.output
    assert ckpt.exists() and "score_error" in result.output
    out = tmp_path / "dec"
    result = runner.invoke(cli, ["learned", "decompose", "--model", str(ckpt), "--solvers", "ddim",
                                 "--steps", "4,8",
                                 "--seeds", "0", "--samples", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "score error dominates from NFE" in result.output
    figures = out / "figures"
    assert (out / "results.csv").exists() and (figures / "decomposition-path-rms.png").exists()
    assert json.loads((out / "manifest.json").read_text())["kind"] == "decompose"
    (figures / "decomposition-w2.png").unlink()
    result = runner.invoke(cli, ["plot", str(out)])
    assert result.exit_code == 0 and (figures / "decomposition-w2.png").exists()
    assert (figures / "score_vs_discretization.png").exists()
    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0 and "## Measured orders" in (out / "report.md").read_text()
    result = runner.invoke(cli, ["learned", "decompose", "--model", "perturb:oops=1", "--out", str(out)])
    assert isinstance(result.exception, _user_errors())
