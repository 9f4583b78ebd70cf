"""One engine, one results format: every kind of study (analytic sweep, peers, learned-score
decomposition, guidance, images) runs at toy size into a results directory that `bench plot` and
`bench report` read like any other."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.sweep.store import CELL_LOG, RESULT_COLUMNS

TOY = {
    "sweep": ["run", "--problem", "mix-2d", "--solvers", "ddim,ddpm", "--steps", "4,8,16", "--seeds", "0",
              "--samples", "50"],
    "peers": ["run", "--problem", "gauss-aniso-3d", "--solvers", "kdiff:sample_euler,ddim", "--steps",
              "4,8,16", "--seeds", "0", "--samples", "50"],
    "decompose": ["learned", "decompose", "--model", "perturb:bias=0.1", "--solvers", "ddim",
                  "--steps", "4,8,16",
                  "--seeds", "0", "--samples", "50"],
    "guided": ["learned", "guided", "--label", "1", "--scales", "0,2", "--solvers", "ddim", "--steps",
               "4,8,16",
               "--seeds", "0", "--samples", "50"],
}
MANIFEST_KIND = {"sweep": "sweep", "peers": "sweep", "decompose": "decompose", "guided": "guided",
                 "images": "images"}


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)


def _images_args(tmp_path: Path) -> list[str]:
    from tests.test_image_models import save_model_dir

    model = save_model_dir(tmp_path / "model")
    return ["images", "run", "--model", str(model), "--solvers", "ddim,heun", "--nfe", "2,4,8",
            "--samples", "2",
            "--reference-steps", "8"]


@pytest.mark.parametrize("kind", ["sweep", "peers", "decompose", "guided", "images"])
def test_every_kind_writes_the_one_format_and_is_plotted_and_reported(kind, tmp_path):
    if kind == "peers" and importlib.util.find_spec("k_diffusion") is None:
        pytest.skip("k-diffusion is not installed")
    out = tmp_path / "out"
    args = _images_args(tmp_path) if kind == "images" else TOY[kind]
    _run([*args, "--out", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == MANIFEST_KIND[kind] and manifest["finished"] and manifest["config"]
    rows = pd.read_csv(out / "results.csv")
    assert list(rows.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS and (rows["status"] == "ok").any()
    assert (out / "orders.csv").exists() and (out / CELL_LOG).exists()
    log = (out / CELL_LOG).read_text()
    _run([*args, "--out", str(out)])  # resume: every cell is done, nothing is added
    assert (out / CELL_LOG).read_text() == log
    _run(["plot", str(out)])
    pngs = {p.stem for p in (out / "figures").glob("*.png")}
    assert any(p.startswith("error_vs_nfe") for p in pngs), pngs
    if kind == "decompose":
        assert {"decomposition-path-rms", "decomposition-w2", "score_vs_discretization"} <= pngs
    _run(["report", str(out)])
    report = (out / "report.md").read_text()
    assert "## Measured orders" in report and "](figures/" in report
    if kind == "peers":
        assert "kdiff:sample_euler" in report
