"""`bench images train|run`: learned image models (the training and sampling code lives in
bench/studies/images)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.options import INTS, NAMES, SEEDS, check_device, command_line, out_option, stacked
from bench.studies.defaults import DEFAULT_GRID

_fid_options = stacked(  # `bench fid ref` spells the same options without the fid- prefix
    click.option("--fid-dataset", default=None,
                 help="Also score FID of each cell's samples against this dataset's images (fashion-mnist, "
                      "fashion-mnist-test: the 10000 test images, digits, cifar10 or folder:PATH)."),
    click.option("--fid-extractor", type=click.Choice(["inception", "tiny"]), default="inception",
                 show_default=True, help="FID features: the converted Inception (bench fid convert), or a "
                 "fixed random 16-d net for quick CPU studies and tests (not comparable with "
                 "published FIDs)."),
    click.option("--fid-reference", type=click.IntRange(min=2), default=2000, show_default=True,
                 help="Images of --fid-dataset in the FID reference statistics (the first N)."),
    click.option("--fid-data-root", type=click.Path(path_type=Path), default=None,
                 help="Directory of the FID dataset [default: /usr/share/datasets/fashion-mnist, "
                      "data/cifar10]."),
    click.option("--fid-cache-dir", type=click.Path(path_type=Path), default=None,
                 help="Cache of Inception weights and reference statistics "
                      "[default: $XDG_CACHE_HOME or ~/.cache, /diffusion-solver-bench]."),
    click.option("--fid-dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
                 show_default=True, help="Inception precision (autocast; statistics are cached per dtype)."),
    click.option("--fid-batch", type=click.IntRange(min=1), default=50, show_default=True,
                 help="Images per Inception batch."),
)


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@click.group("images")
def images_group() -> None:
    """Learned image models: train an eps-prediction UNet, run every solver on it (path-rms, FID)."""


@images_group.command("train")
@click.option("--dataset", required=True, help="digits, fashion-mnist, cifar10 or folder:PATH")
@out_option(required=True, help="Run directory (resumable).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Fashion-MNIST idx directory or CIFAR-10 torchvision root.")
@click.option("--download", is_flag=True, help="Let torchvision download CIFAR-10 (needs network).")
@click.option("--subset", type=click.IntRange(min=1), default=None, help="Train on the first N images.")
@click.option("--train-steps", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Total optimizer steps (a rerun continues to this count).")
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--width", type=click.IntRange(min=8), default=64, show_default=True,
              help="Base channels (multiple of 8); UNet widths w, 2w, 2w.")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--log-every", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Training seed.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:k] (bf16 autocast on cuda).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop with a checkpoint after this much wall time (a rerun continues).")
def train_cmd(dataset: str, out: Path, data_root: Path | None, download: bool, subset: int | None,
              train_steps: int, batch: int, lr: float, width: int, ema: float, checkpoint_every: int,
              log_every: int, seed: int, device: str, max_minutes: float | None) -> None:
    """Train an eps-prediction UNet with EMA on the ddpm-discrete schedule (diffusers layout)."""
    from bench.studies.images.train import TrainConfig, train

    cfg = TrainConfig(dataset, out, data_root, subset, train_steps, batch, lr, width, ema, checkpoint_every,
                      log_every, seed, check_device(device), download,
                      None if max_minutes is None else 60 * max_minutes)
    summary = train(cfg, click.echo)
    click.echo(f"{out}: {summary['steps']} steps, {summary['parameters']:,} parameters; "
               f"loss curve in {out / 'loss.png'}; load with --model {out}")


@images_group.command("run")
@click.option("--model", required=True, help="diffusers model directory or cached Hugging Face org/name.")
@click.option("--solvers", type=NAMES, default="ddim,heun,dpmpp-2m,dpmpp-3m", show_default=True,
              help="Comma list of solver specs, names or selectors (bench list solvers).")
@click.option("--nfe", type=INTS, default="5,10,20,50", show_default=True, help="NFE budgets.")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seeds", type=SEEDS, default="0", show_default=True,
              help="Seed of the initial noise (one seed per results directory).")
@click.option("--grid", default=DEFAULT_GRID, show_default=True, help="Time grid (bench list grids).")
@click.option("--reference-steps", type=click.IntRange(min=2), default=500, show_default=True,
              help="Steps of the path-rms reference (DPM-Solver++(3M); SDE solvers: their limit's "
                   "integrator).")
@click.option("--denoise-final", is_flag=True, help="End with x <- E[x0 | x_tmin] (one more NFE).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True,
              help="Network precision (bfloat16, float16: autocast); the solvers' arithmetic stays "
                   "float32.")
@_fid_options
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:k].")
@out_option(required=True)
def run_cmd(model: str, solvers: list[str], nfe: list[int], samples: int, batch: int, seeds: list[int],
            grid: str, reference_steps: int, denoise_final: bool, dtype: str, fid_dataset: str | None,
            fid_extractor: str, fid_reference: int, fid_data_root: Path | None, fid_cache_dir: Path | None,
            fid_dtype: str, fid_batch: int, device: str, out: Path) -> None:
    """path-rms (and FID) against NFE for every solver on a learned image model."""
    from analytic.grids import GridError, check_grid
    from bench.studies.images.run import ImageRunConfig, run_images

    try:
        check_grid(grid)
    except GridError as exc:
        raise click.BadParameter(str(exc)) from None
    if len(seeds) != 1:
        raise click.BadParameter(f"--seeds: an image run takes one seed per results directory, got "
                                 f"{len(seeds)}")
    cfg = ImageRunConfig(model, [",".join(solvers)], nfe, samples, seeds[0], batch, grid, reference_steps,
                         denoise_final, check_device(device), fid_dataset, fid_extractor, fid_reference,
                         _opt_str(fid_data_root), _opt_str(fid_cache_dir), dtype=dtype, fid_dtype=fid_dtype,
                         fid_batch=fid_batch)

    def report(done: int, total: int, cell, elapsed: float, rows: list[dict]) -> None:
        first = rows[0]
        if first["status"] != "ok":
            click.echo(f"{first['solver']:>14} NFE budget {cell.params[1]}: {first['reason']}")
            return
        fids = "".join(f", FID {r['value']:.4g}" for r in rows if r["metric"] == "fid")
        click.echo(f"{first['solver']:>14} NFE {first['nfe']:>4}: path-rms {first['value']:.4g}{fids}  "
                   f"{first['images_per_s']:.2f} img/s, network {100 * first['network_share']:.0f}% of "
                   f"wall time [{done}/{total}]")

    frame = run_images(cfg, out, command_line(), report)
    click.echo(f"{len(frame)} rows in {out / 'results.csv'}\n  figures: bench plot {out}\n"
               f"  report:  bench report {out}")
