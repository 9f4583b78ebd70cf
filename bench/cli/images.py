"""`bench train-image` and `bench image-run` (registered in bench/cli/main.py)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import torch

from bench.studies.images.data import DataError
from bench.studies.images.models import ModelLoadError
from bench.studies.images.run import ImageRunConfig, ImageRunError, run_images
from bench.studies.images.train import TrainConfig, TrainError, train

IMAGE_ERRORS = (DataError, ModelLoadError, TrainError, ImageRunError)


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise click.BadParameter(f"{option} takes positive integers, got {text!r}")
    return values


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter(f"--device {device}: no CUDA device here")
    return device


@click.command("train-image")
@click.option("--dataset", required=True, help="cifar10, fashion-mnist or folder:PATH")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory (resumable).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Fashion-MNIST idx directory or CIFAR-10 torchvision root.")
@click.option("--download", is_flag=True, help="Let torchvision download CIFAR-10 (needs network).")
@click.option("--subset", type=click.IntRange(min=1), default=None, help="Train on the first N images.")
@click.option("--steps", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Total optimizer steps (a rerun continues to this count).")
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--width", type=click.IntRange(min=8), default=64, show_default=True,
              help="Base channels (multiple of 8); UNet widths w, 2w, 2w.")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--log-every", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:k] (bf16 autocast on cuda).")
def train_image(dataset: str, out: Path, data_root: Path | None, download: bool, subset: int | None,
                steps: int, batch: int, lr: float, width: int, ema: float, checkpoint_every: int,
                log_every: int, seed: int, device: str) -> None:
    """Train an eps-prediction UNet with EMA on the ddpm-discrete schedule (diffusers layout)."""
    cfg = TrainConfig(dataset, out, data_root, subset, steps, batch, lr, width, ema, checkpoint_every,
                      log_every, seed, _device(device), download)
    try:
        summary = train(cfg, click.echo)
    except IMAGE_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out}: {summary['steps']} steps, {summary['parameters']:,} parameters; "
               f"loss curve in {out / 'loss.png'}; load with --model {out}")


@click.command("image-run")
@click.option("--model", required=True, help="diffusers model directory or cached Hugging Face org/name.")
@click.option("--solvers", default="ddim,heun,dpmpp-2m,dpmpp-3m", show_default=True,
              help="Solver specs, names or selectors (bench list solvers).")
@click.option("--nfe", default="5,10,20,50", show_default=True, help="Comma-separated NFE budgets.")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--grid", default="logsnr", show_default=True, help="Time grid (bench list grids).")
@click.option("--reference-steps", type=click.IntRange(min=2), default=500, show_default=True,
              help="Steps of the path-rms reference (DPM-Solver++(3M); SDE solvers: themselves).")
@click.option("--denoise-final", is_flag=True, help="End with x <- E[x0 | x_tmin] (one more NFE).")
@click.option("--fid-dataset", default=None,
              help="Also score FID of each cell's samples against this dataset's training images "
                   "(fashion-mnist, cifar10 or folder:PATH).")
@click.option("--fid-extractor", type=click.Choice(["inception", "tiny"]), default="inception",
              show_default=True,
              help="FID features: the converted Inception (bench fid convert-inception), or a fixed random "
                   "16-d net for quick CPU studies and tests (not comparable with published FIDs).")
@click.option("--fid-reference", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Training images in the FID reference statistics.")
@click.option("--fid-data-root", type=click.Path(path_type=Path), default=None,
              help="Directory of the FID dataset (Fashion-MNIST idx files or CIFAR-10 root) "
                   "[default: /usr/share/datasets/fashion-mnist, data/cifar10].")
@click.option("--fid-cache-dir", type=click.Path(path_type=Path), default=None,
              help="Cache of Inception weights and reference statistics "
                   "[default: $XDG_CACHE_HOME or ~/.cache, /diffusion-solver-bench].")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results directory.")
def image_run(model: str, solvers: str, nfe: str, samples: int, batch: int, seed: int, grid: str,
              reference_steps: int, denoise_final: bool, fid_dataset: str | None, fid_extractor: str,
              fid_reference: int, fid_data_root: Path | None, fid_cache_dir: Path | None, device: str,
              out: Path) -> None:
    """path-rms (and FID) against NFE for every solver on a learned image model."""
    from analytic import GRIDS

    if grid not in GRIDS:
        raise click.BadParameter(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    cfg = ImageRunConfig(model, [solvers], _ints(nfe, "--nfe"), samples, seed, batch, grid, reference_steps,
                         denoise_final, _device(device), fid_dataset, fid_extractor, fid_reference,
                         _opt_str(fid_data_root), _opt_str(fid_cache_dir))
    def report(done: int, total: int, cell, elapsed: float, rows: list[dict]) -> None:
        first = rows[0]
        if first["status"] != "ok":
            click.echo(f"{first['solver']:>14} NFE budget {cell.params[1]}: {first['reason']}")
            return
        fids = "".join(f", FID {r['value']:.4g}" for r in rows if r["metric"] == "fid")
        click.echo(f"{first['solver']:>14} NFE {first['nfe']:>4}: path-rms {first['value']:.4g}{fids}  "
                   f"{first['images_per_s']:.2f} img/s, network {100 * first['network_share']:.0f}% of "
                   f"wall time [{done}/{total}]")

    try:
        frame = run_images(cfg, out, shlex.join(["bench", *sys.argv[1:]]), report)
    except IMAGE_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(frame)} rows in {out / 'results.csv'}; plot with: bench plot {out}")
