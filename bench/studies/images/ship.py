"""The trained models shipped with the package (bench/models/NAME), and packing a training run into one.

A shipped model is a training run's EMA UNet in half precision (safetensors), its scheduler config,
and the run's record: `loss.csv`, `loss.png` and `train.json` (steps, images, parameters, wall time,
the training configuration), so that its provenance travels with the weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

SHIPPED_ROOT = Path(__file__).resolve().parents[2] / "models"
RECORD_FILES = ("loss.csv", "loss.png", "train.json")


def shipped() -> dict[str, Path]:
    """Name -> directory of every model shipped with the package."""
    if not SHIPPED_ROOT.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_ROOT.iterdir()) if (p / "unet" / "config.json").exists()}


def pack(run: Path, dest: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the EMA UNet of training run `run` in `dtype`, its scheduler and its record to `dest`."""
    from diffusers import UNet2DModel

    run, dest = Path(run), Path(dest)
    unet = UNet2DModel.from_pretrained(str(run / "unet"), local_files_only=True, low_cpu_mem_usage=False,
                                       torch_dtype=dtype)
    if dest.exists():
        shutil.rmtree(dest)
    unet.save_pretrained(str(dest / "unet"), safe_serialization=True)
    shutil.copytree(run / "scheduler", dest / "scheduler")
    for name in RECORD_FILES:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)
    summary = json.loads((run / "train.json").read_text()) if (run / "train.json").exists() else {}
    summary["shipped_dtype"] = str(dtype).removeprefix("torch.")
    (dest / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    return dest
