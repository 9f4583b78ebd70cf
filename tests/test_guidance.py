"""Exact guidance on mixtures: guided reference samples land in the guided class with the expected
frequency (the class weight at w = 0, the exact conditional's rate at w = 1, rising in between),
CFG is classifier guidance at 1 + w, and the guided sweep runs from the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from analytic import get_problem
from bench.cli.main import _user_errors, cli
from bench.measure import metrics
from bench.measure.reference import reference
from bench.studies.guidance import class_target, classify, guided_model
from bench.studies.learned import CheckpointError

N = 600


@pytest.fixture(scope="module")
def problem():
    return get_problem("mix-2d")


@pytest.mark.parametrize("label", [0, 2])
def test_guided_reference_class_frequency(problem, label):
    x_T = metrics.exact_samples(problem, N, 0, t=problem.t_max, stream=7)
    weight = float(problem.target.weights[label])
    exact_cond = class_target(problem, label).sample(N, torch.Generator().manual_seed(1))
    cond_rate = float((classify(problem, exact_cond) == label).double().mean())
    freqs = {}
    for w in (0.0, 0.5, 1.0, 3.0):
        model = guided_model(problem, label, w)
        ref = reference(problem, model, x_T, 0, model_name=f"test-guided-{label}-{w}")
        freqs[w] = float((classify(problem, ref.x) == label).double().mean())
    ci = 4 * math.sqrt(weight * (1 - weight) / N)
    assert abs(freqs[0.0] - weight) < ci  # unguided: the class weight
    assert freqs[0.0] < freqs[0.5] < freqs[1.0]  # rises with w
    assert abs(freqs[1.0] - cond_rate) < 0.02  # w = 1: the exact conditional law
    assert freqs[3.0] >= freqs[1.0] - 0.005 and freqs[3.0] > 0.98


def test_cfg_is_classifier_guidance_at_one_plus_w(problem):
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    cfg = guided_model(problem, 1, 1.5, "cfg").fn(x, t)
    assert torch.allclose(cfg, guided_model(problem, 1, 2.5, "classifier").fn(x, t))
    assert torch.allclose(guided_model(problem, 1, 0.0).fn(x, t), problem.eps(x, t))
    assert torch.allclose(guided_model(problem, 1, 1.0).fn(x, t), class_target(problem, 1).eps(
        x, *problem.coefficients(t)))
    with pytest.raises(CheckpointError):
        guided_model(problem, 5, 1.0)
    with pytest.raises(CheckpointError):
        guided_model(problem, 0, 1.0, "magic")


def test_guided_sweep_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "g"
    result = runner.invoke(cli, ["learned", "guided", "--label", "2", "--scales", "0,4", "--solvers",
                                 "ddim,dpmpp-2m",
                                 "--steps", "8,32", "--seeds", "0", "--samples", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 2 * 2 * 2 and set(frame["scale"]) == {0.0, 4.0}
    assert set(frame["metric"]) == {"path-rms"}
    assert (frame["value"] > frame["noise_floor"]).all()
    for _, part in frame.groupby(["scale", "solver"]):  # discretization error falls with steps
        assert part.sort_values("steps")["value"].is_monotonic_decreasing
    assert "w=4" in result.output
    assert json.loads((out / "manifest.json").read_text())["kind"] == "guided"
    result = runner.invoke(cli, ["plot", str(out)])  # one panel per scale
    assert result.exit_code == 0 and list((out / "figures").glob("error_vs_nfe-mix-2d-path-rms.png"))
    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0 and "guided:classifier:y=2:w=4" in (out / "report.md").read_text()
    result = runner.invoke(cli, ["learned", "guided", "--label", "7", "--out", str(out)])
    assert isinstance(result.exception, _user_errors())
