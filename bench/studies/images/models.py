"""Pretrained eps-prediction networks in the diffusers layout, wrapped as `solvers.model.Model`.

A model directory holds a UNet2DModel (in `unet/` or at the root, as google/ddpm-cifar10-32 has it)
and a DDPMScheduler config (`scheduler/scheduler_config.json` or `scheduler_config.json`). Only
linear-beta epsilon schedules are accepted; they become `DiscreteDDPM(beta_start, beta_end, N)`,
whose knot t = (k + 1) / N is diffusers' timestep k, so the network sees timestep t N - 1
(continuous between knots).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import Tensor

from analytic.schedules import DiscreteDDPM
from bench.studies.images.ship import shipped
from solvers.model import Model


class ModelLoadError(ValueError):
    """A model directory or name that cannot be loaded (one-line message)."""


def resolve_dir(name: str | Path) -> Path:
    """A shipped model's name (bench/models), a local directory, or a Hugging Face repo id found in the
    local cache (never downloads)."""
    path = Path(name)
    if path.is_dir():
        return path
    if str(name) in shipped():
        return shipped()[str(name)]
    if path.exists() or path.is_absolute() or str(name).startswith(".") or str(name).count("/") != 1:
        raise ModelLoadError(f"model {name} is neither a shipped model ({', '.join(shipped()) or 'none'}), a "
                             "directory nor an org/name in the Hugging Face cache")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), local_files_only=True,
                                      cache_dir=os.environ.get("HF_HUB_CACHE") or None))
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises several unrelated types
        raise ModelLoadError(f"model {name} is not in the Hugging Face cache "
                             f"({type(exc).__name__}); download it first or pass a directory") from None


def _unet_dir(root: Path) -> Path:
    for cand in (root / "unet", root):
        if (cand / "config.json").exists():
            return cand
    raise ModelLoadError(f"no UNet config.json in {root} or {root / 'unet'}")


def schedule_from_config(root: Path) -> DiscreteDDPM:
    """The discrete schedule of the model's scheduler config; refuses schedules we do not model."""
    for cand in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json"):
        if cand.exists():
            cfg = json.loads(cand.read_text())
            break
    else:
        raise ModelLoadError(f"no scheduler_config.json in {root} or {root / 'scheduler'}")
    if cfg.get("trained_betas") is not None or cfg.get("beta_schedule", "linear") != "linear":
        kind = "trained_betas" if cfg.get("trained_betas") is not None else repr(cfg.get("beta_schedule"))
        raise ModelLoadError(f"{cand}: only linear betas are supported, got {kind}")
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise ModelLoadError(f"{cand}: only epsilon prediction is supported, got {cfg['prediction_type']!r}")
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    schedule = DiscreteDDPM(start, end, int(cfg.get("num_train_timesteps", 1000)))
    if (start, end, schedule.num_steps) != (1e-4, 0.02, 1000):
        schedule.name = f"ddpm-discrete({start:g}..{end:g}, {schedule.num_steps})"
    return schedule


class EpsNetwork:
    """fn(x, t) for `Model`: calls the UNet at timestep t N - 1 and times every call."""

    def __init__(self, unet: torch.nn.Module, num_steps: int):
        self.unet, self.num_steps = unet, num_steps
        self.seconds = 0.0
        param = next(unet.parameters())
        self.device, self.dtype = param.device, param.dtype

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        start = time.perf_counter()
        timestep = (t.to(torch.float64) * self.num_steps - 1).to(torch.float32).to(self.device)
        with torch.no_grad():
            out = self.unet(x.to(self.device, self.dtype), timestep.expand(len(x))).sample
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return out.to(x.dtype)


def load_model(name: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Model:
    """The eps `Model` of a diffusers model directory or cached repo id; `model.fn` is its EpsNetwork."""
    from diffusers import UNet2DModel

    root = resolve_dir(name)
    schedule = schedule_from_config(root)
    try:
        unet = UNet2DModel.from_pretrained(str(_unet_dir(root)), local_files_only=True, torch_dtype=dtype,
                                           low_cpu_mem_usage=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the UNet in {root}: {str(exc).splitlines()[0]}") from None
    unet = unet.to(device).eval()
    return Model(EpsNetwork(unet, schedule.num_steps), "eps", schedule)


def image_shape(model: Model) -> tuple[int, int, int]:
    """(C, H, W) the network expects."""
    cfg = model.fn.unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return int(cfg.in_channels), int(size), int(size)
