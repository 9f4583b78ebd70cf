"""The trained models shipped as package data, packing a run into one, and time-limited training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from analytic import make_grid
from bench.studies.images.models import image_shape, load_model
from bench.studies.images.ship import pack, shipped
from bench.studies.images.train import TrainConfig, train
from solvers import make_solver

SHAPES = {"digits": (1, 8, 8), "fmnist": (1, 32, 32)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shipped_model_loads_offline_and_samples(name: str) -> None:
    root = shipped()[name]
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    record = json.loads((root / "train.json").read_text())
    assert record["steps"] > 0 and record["seconds_this_run"] > 0 and record["shipped_dtype"] == "float16"
    assert len(pd.read_csv(root / "loss.csv")) == record["steps"] and (root / "loss.png").exists()
    model = load_model(name)
    assert image_shape(model) == SHAPES[name]
    assert next(model.fn.unet.parameters()).dtype == torch.float32  # fp16 on disk, float32 to sample
    times = make_grid("logsnr", model.schedule, 4, model.schedule.t_min, model.schedule.t_max)
    x = make_solver("ddim").run(model, times, torch.randn(2, *SHAPES[name], generator=torch.Generator())).x
    assert torch.isfinite(x).all() and float(x.abs().max()) < 3


def test_training_stops_at_its_time_limit_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig("digits", out, subset=64, steps=10_000, batch=8, width=8, max_seconds=0.0,
                      checkpoint_every=10_000)
    first = train(cfg, echo=lambda _: None)
    assert first["steps"] == 1 and (out / "checkpoint.pt").exists()
    cfg.max_seconds, cfg.steps = None, 3
    assert train(cfg, echo=lambda _: None)["steps"] == 3
    assert list(pd.read_csv(out / "loss.csv")["step"]) == [1, 2, 3]
    packed = pack(out, tmp_path / "shipped")
    assert json.loads((packed / "train.json").read_text())["steps"] == 3
    assert load_model(packed).fn.unet.config.sample_size == 8
