"""Train an eps-prediction UNet2DModel by denoising score matching on the ddpm-discrete schedule.

t is drawn uniformly from [1/N, 1] (continuous, the solvers' time; t N - 1 is the network's
timestep), x_t = alpha(t) x0 + sigma(t) eps and the loss is ||eps_theta(x_t, t) - eps||^2
(Ho et al. 2020), with gradient-norm clipping at 1 and a linear learning-rate warm-up. An EMA of the
weights is what gets saved, in the diffusers layout
(`unet/` + `scheduler/`) that `bench.studies.images.models.load_model` reads. `checkpoint.pt` holds the step
counter, weights, optimizer and EMA, so rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from analytic.schedules import DiscreteDDPM
from bench.studies.images.data import load_dataset

CHECKPOINT = "checkpoint.pt"
GRAD_CLIP = 1.0  # global gradient-norm clip, as in Ho et al. (2020)'s training
WARMUP_STEPS = 500  # linear learning-rate warm-up (Ho et al. 2020 use 5000 at batch 128)
LOSS_CSV = "loss.csv"


class TrainError(ValueError):
    """Bad training input or an incompatible output directory (one-line message)."""


@dataclass
class TrainConfig:
    dataset: str
    out: Path
    data_root: Path | None = None
    subset: int | None = None
    steps: int = 10_000
    batch: int = 128
    lr: float = 2e-4
    width: int = 64
    ema: float = 0.999
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    device: str = "cpu"
    download: bool = False
    max_seconds: float | None = None  # stop (with a checkpoint) after this much wall time; rerun resumes

    def architecture(self) -> dict:
        return {"dataset": self.dataset, "width": self.width}


def make_unet(channels: int, width: int, size: int = 32) -> torch.nn.Module:
    """A small DDPM-style UNet: widths (w, 2w, 2w), attention at the middle resolution."""
    from diffusers import UNet2DModel

    if width < 8 or width % 8:
        raise TrainError(f"--width must be a positive multiple of 8, got {width}")
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(width, 2 * width, 2 * width), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, attention_head_dim=8)


def ema_decay(target: float, step: int) -> float:
    """EMA decay with warm-up, min(target, (1 + step) / (10 + step)) as in diffusers' EMAModel, so
    that short runs do not keep the initial weights."""
    return min(target, (1 + step) / (10 + step))


def dsm_loss(unet: torch.nn.Module, schedule: DiscreteDDPM, x0: Tensor, gen: torch.Generator) -> Tensor:
    n = len(x0)
    t = schedule.t_min + (1 - schedule.t_min) * torch.rand(n, generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    alpha = schedule.alpha(t).float().to(x0.device).view(-1, 1, 1, 1)
    sigma = schedule.sigma(t).float().to(x0.device).view(-1, 1, 1, 1)
    timestep = (t * schedule.num_steps - 1).float().to(x0.device)
    pred = unet(alpha * x0 + sigma * eps, timestep).sample
    return torch.nn.functional.mse_loss(pred.float(), eps)


def _save_pretrained(ema: torch.nn.Module, out: Path) -> None:
    from diffusers import DDPMScheduler

    ema.save_pretrained(str(out / "unet"))
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  prediction_type="epsilon").save_pretrained(str(out / "scheduler"))


def _plot_loss(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(out / LOSS_CSV)
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    ax.plot(frame["step"], frame["loss"], lw=0.6, alpha=0.4, label="batch loss")
    ax.plot(frame["step"], frame["loss"].ewm(alpha=0.05).mean(), lw=1.2, label="smoothed")
    ax.set(xlabel="step", ylabel="DSM loss (eps MSE)", yscale="log", title=f"training loss: {out.name}")
    ax.legend()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)


def _trim_log(path: Path, step: int) -> None:
    """Drop loss rows newer than the checkpoint being resumed (they will be redone)."""
    if not path.exists():
        return
    with path.open() as fh:
        rows = list(csv.reader(fh))
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(keep)


def train(cfg: TrainConfig, echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) to cfg.steps; returns a summary dict (also written to train.json)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.subset, cfg.download).to(device)
    torch.manual_seed(cfg.seed)
    unet = make_unet(data.shape[1], cfg.width, data.shape[-1]).to(device)
    ema = make_unet(data.shape[1], cfg.width, data.shape[-1]).to(device)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    schedule = DiscreteDDPM()
    step = 0
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["architecture"] != cfg.architecture():
            raise TrainError(f"{out} holds a run with {ckpt['architecture']}, not {cfg.architecture()}; "
                             "use another --out")
        unet.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        _trim_log(out / LOSS_CSV, step)
        echo(f"resuming {out} at step {step}")
    if step >= cfg.steps:
        echo(f"{out} is already trained to step {step} >= --steps {cfg.steps}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    ema_params, unet_params = list(ema.parameters()), list(unet.parameters())
    new_log = not (out / LOSS_CSV).exists()
    start, start_step = time.perf_counter(), step
    with (out / LOSS_CSV).open("a", newline="") as log:
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "seconds"])
        while step < cfg.steps:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            idx = torch.randint(len(data), (min(cfg.batch, len(data)),), generator=gen)
            with autocast:
                loss = dsm_loss(unet, schedule, data[idx.to(device)], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), GRAD_CLIP)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / WARMUP_STEPS)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, unet_params, 1 - ema_decay(cfg.ema, step))
            step += 1
            writer.writerow([step, f"{loss.item():.6g}", f"{time.perf_counter() - start:.3f}"])
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = (step - start_step) / (time.perf_counter() - start)
                echo(f"step {step}/{cfg.steps} loss {loss.item():.4f} ({rate:.2f} steps/s)")
            out_of_time = cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                log.flush()
                _checkpoint(unet, ema, opt, step, cfg, out)
            if out_of_time:
                echo(f"stopping at step {step}: --max-minutes reached (rerun to continue)")
                break
    summary = {"steps": step, "images": len(data), "parameters": sum(p.numel() for p in unet.parameters()),
               "seconds_this_run": time.perf_counter() - start, "config": asdict(cfg)}
    (out / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    if (out / LOSS_CSV).stat().st_size > 0:
        _plot_loss(out)
    return summary


def _checkpoint(unet, ema, opt, step: int, cfg: TrainConfig, out: Path) -> None:
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save({"step": step, "model": unet.state_dict(), "ema": ema.state_dict(),
                "optimizer": opt.state_dict(), "architecture": cfg.architecture()}, tmp)
    _save_pretrained(ema, out)
    os.replace(tmp, out / CHECKPOINT)
    _plot_loss(out)
