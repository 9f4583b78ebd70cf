"""Image data, diffusers-layout model loading, batched sampling and training on tiny synthetic data."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analytic.schedules import DiscreteDDPM
from bench.studies.images.data import DataError, load_dataset, read_idx, to_uint8
from bench.studies.images.models import ModelLoadError, load_model, schedule_from_config
from bench.studies.images.sampling import generate, initial_noise, sample_batches
from bench.studies.images.train import TrainConfig, TrainError, make_unet, train
from solvers import make_solver
from tests.requires import needs_fashion_mnist


def write_idx(path: Path, images: np.ndarray, gz: bool = True) -> None:
    raw = bytes([0, 0, 8, images.ndim]) + struct.pack(f">{images.ndim}I", *images.shape) + images.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def fashion_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    return tmp_path


def save_model_dir(root: Path, channels: int = 1, unet_subdir: bool = True, **sched) -> Path:
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    unet = make_unet(channels, 8)
    unet.save_pretrained(str(root / "unet" if unet_subdir else root))
    cfg = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
           **sched}
    DDPMScheduler(**cfg).save_pretrained(str(root / "scheduler" if unet_subdir else root))
    return root


def test_fashion_idx_padded_and_scaled(fashion_dir: Path) -> None:
    x = load_dataset("fashion-mnist", fashion_dir, subset=5)
    assert x.shape == (5, 1, 32, 32)
    assert float(x[..., :2, :].max()) == -1.0  # the padding is black
    raw = read_idx(fashion_dir / "train-images-idx3-ubyte.gz")
    assert torch.allclose(x[0, 0, 2:30, 2:30], torch.from_numpy(raw[0].astype(np.float32)) / 127.5 - 1)


def test_missing_and_bad_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="no image files"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03")
    with pytest.raises(DataError, match="not a uint8 idx"):
        load_dataset("fashion-mnist", tmp_path)


def test_folder_dataset(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 255, np.uint8)).save(tmp_path / "a.png")
    x = load_dataset(f"folder:{tmp_path}")
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x, torch.ones_like(x))


@needs_fashion_mnist
def test_real_fashion_mnist() -> None:
    x = load_dataset("fashion-mnist", subset=100)
    assert x.shape == (100, 1, 32, 32) and -1 <= float(x.min()) < float(x.max()) <= 1


def test_load_model_maps_time_to_timestep(tmp_path: Path) -> None:
    model = load_model(save_model_dir(tmp_path / "m"))
    assert model.parameterization == "eps"
    assert torch.equal(model.schedule.knots_lam, DiscreteDDPM().knots_lam)
    x = torch.randn(2, 1, 32, 32)
    for k in (0, 499, 999):  # knot t = (k + 1) / 1000 is diffusers' timestep k
        want = model.fn.unet(x, torch.tensor([k, k])).sample
        got = model(x, (k + 1) / 1000).eps
        assert torch.allclose(got, want, atol=1e-5)
    assert model.calls == 3 and model.fn.seconds > 0


def test_load_model_root_layout_and_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    save_model_dir(snap, unet_subdir=False)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_model(snap).fn.num_steps == 1000
    assert load_model("org/tiny").parameterization == "eps"
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        load_model("org/absent")
    with pytest.raises(ModelLoadError, match="neither a shipped model"):
        load_model(tmp_path / "nope")


def test_refuses_unknown_schedules(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="only linear betas"):
        schedule_from_config(save_model_dir(tmp_path / "a", beta_schedule="squaredcos_cap_v2"))
    with pytest.raises(ModelLoadError, match="only epsilon"):
        schedule_from_config(save_model_dir(tmp_path / "b", prediction_type="v_prediction"))
    other = schedule_from_config(save_model_dir(tmp_path / "c", beta_end=0.012, num_train_timesteps=500))
    assert other.num_steps == 500 and other.name != "ddpm-discrete"


def test_generate_is_batch_independent(tmp_path: Path) -> None:
    model = load_model(save_model_dir(tmp_path / "m"))
    times = torch.linspace(1.0, 1e-3, 4, dtype=torch.float64)
    a = generate(model, make_solver("ddim"), times, 3, seed=1, batch=2)
    b = generate(model, make_solver("ddim"), times, 3, seed=1, batch=3)
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert torch.equal(initial_noise(model, 2, 5, start=1)[0], initial_noise(model, 3, 5)[1])
    res = sample_batches(model, make_solver("dpmpp-2m-sde"), times, initial_noise(model, 2, 0), 0, 1)
    assert res.nfe == 3 and torch.isfinite(res.x).all() and 0 < res.network_share <= 1


@pytest.mark.parametrize("name", ["euler-ancestral", "dpmpp-sde"])  # dpmpp-sde: two draws per step
def test_stochastic_generate_is_batch_and_shard_independent(tmp_path: Path, name: str) -> None:
    model = load_model(save_model_dir(tmp_path / "m"))
    times = torch.linspace(1.0, 1e-3, 4, dtype=torch.float64)
    solver = make_solver(name)
    full = generate(model, solver, times, 5, seed=2, batch=5)
    assert torch.equal(generate(model, solver, times, 5, seed=2, batch=2), full)
    shards = [generate(model, solver, times, n, seed=2, batch=4, start=lo)
              for lo, n in ((0, 1), (1, 3), (4, 1))]
    assert torch.equal(torch.cat(shards), full)
    # the step noise matters: another seed's paths (same x_T) give other images
    x_T = initial_noise(model, 5, 2)
    other = to_uint8(sample_batches(model, solver, times, x_T, 3, 5).x).repeat(1, 3, 1, 1)
    assert not torch.equal(other, full)
    assert torch.equal(to_uint8(sample_batches(model, solver, times, x_T, 2, 3).x).repeat(1, 3, 1, 1), full)


def test_per_sample_brownian_rows_are_single_trees() -> None:
    from bench.studies.images.sampling import PerSampleBrownianNoise, path_seeds
    from solvers import BrownianTreeNoise

    seeds = path_seeds(0, 10, 3)
    assert seeds == path_seeds(0, 0, 13)[10:] and len(set(seeds)) == 3
    like = torch.zeros(3, 2, 4, 4)
    batch = PerSampleBrownianNoise(seeds, 1e-3, 1.0, cache_bytes=0)  # smallest cache: nodes recomputed
    grid = torch.linspace(1.0, 1e-3, 9).tolist()
    steps = list(zip(grid, grid[1:], strict=False))
    for t0, t1 in steps:
        dw = batch.increment(t0, t1, like)
        z = batch.extra(t1, 1, like)
        for row, seed in enumerate(seeds):
            alone = BrownianTreeNoise(seed, 1e-3, 1.0)
            assert torch.equal(dw[row:row + 1], alone.increment(t0, t1, like[:1]))
            assert torch.equal(z[row:row + 1], alone.extra(t1, 1, like[:1]))
    coarse = PerSampleBrownianNoise(seeds, 1e-3, 1.0)  # a coarser grid sums to the same path
    total = sum(batch.increment(t0, t1, like) for t0, t1 in steps)
    assert torch.allclose(coarse.increment(grid[0], grid[-1], like), total, atol=1e-12)
    with pytest.raises(ValueError, match="3 per-sample"):
        batch.increment(0.5, 0.4, torch.zeros(2, 1))


def test_train_records_loss_and_resumes(fashion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig("fashion-mnist", out, data_root=fashion_dir, steps=3, batch=4, width=8,
                      checkpoint_every=2, log_every=1)
    lines: list[str] = []
    train(cfg, lines.append)
    assert lines[-1].startswith("step 3/3 loss")
    losses = (out / "loss.csv").read_text().splitlines()
    assert losses[0] == "step,loss,seconds" and len(losses) == 4
    assert (out / "loss.png").stat().st_size > 0
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["beta_end"] == 0.02
    first = torch.load(out / "checkpoint.pt", weights_only=False)
    assert first["step"] == 3
    cfg.steps = 5
    lines.clear()
    summary = train(cfg, lines.append)
    assert lines[0] == f"resuming {out} at step 3" and summary["steps"] == 5
    assert [int(r.split(",")[0]) for r in (out / "loss.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4, 5]
    second = torch.load(out / "checkpoint.pt", weights_only=False)
    assert not torch.equal(second["ema"]["conv_in.weight"], first["ema"]["conv_in.weight"])
    assert len(second["optimizer"]["state"]) > 0
    model = load_model(out)  # the saved EMA loads as an eps model
    assert torch.allclose(model.fn.unet.conv_in.weight, second["ema"]["conv_in.weight"])
    with pytest.raises(TrainError, match="holds a run"):
        train(TrainConfig("fashion-mnist", out, data_root=fashion_dir, steps=6, width=16))


def test_image_run_cli_rows_and_figure(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bench.cli.main import cli

    model_dir = save_model_dir(tmp_path / "m")
    out = tmp_path / "res"
    args = ["images", "run", "--model", str(model_dir), "--solvers", "ddim,heun", "--nfe", "1,3",
            "--samples", "2", "--reference-steps", "6", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 4 and set(rows["metric"]) == {"path-rms"}
    ok = rows[rows["status"] == "ok"].set_index(["solver", "nfe"])["value"]
    assert set(ok.index) == {("ddim", 1), ("ddim", 3), ("heun", 2)}  # heun: no 1-NFE run
    assert ok[("ddim", 3)] < ok[("ddim", 1)] and (rows["noise_floor"].dropna() > 0).all()
    timed = rows[rows["status"] == "ok"]  # throughput and the network's share of the wall time, per cell
    assert ((timed["network_share"] > 0) & (timed["network_share"] <= 1) & (timed["images_per_s"] > 0)).all()
    assert json.loads((out / "manifest.json").read_text())["kind"] == "images"
    again = CliRunner().invoke(cli, args)  # every cell is done: nothing is resampled
    assert again.exit_code == 0 and "path-rms" not in again.output
    assert CliRunner().invoke(cli, ["plot", str(out)]).exit_code == 0
    assert [f.stat().st_size > 0 for f in (out / "figures").glob("error_vs_nfe-*-path-rms.png")] == [True]


def test_image_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.cli.main import main

    for argv in (["images", "run", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "r")],
                 ["images", "train", "--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--out",
                  str(tmp_path / "t")],
                 ["images", "run", "--model", str(tmp_path), "--nfe", "0", "--out", str(tmp_path / "r")]):
        with pytest.raises(SystemExit) as exc, pytest.MonkeyPatch.context() as mp:
            mp.setattr("sys.argv", ["bench", *argv])
            main()
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err


def test_ema_decay_warms_up() -> None:
    from bench.studies.images.train import ema_decay

    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.999, 10**6) == 0.999


def _check_image_results(out: Path, solvers: set[str], nfe: set[int]) -> pd.DataFrame:
    """fid and path-rms rows per (solver, NFE budget) in the standard results format."""
    from bench.report.figures import load_results
    from bench.sweep.store import KIND_COLUMNS, RESULT_COLUMNS

    rows = pd.read_csv(out / "results.csv")
    # "note" (the last images column): what each row's value and noise_floor are (reference, FID regime)
    assert list(rows.columns) == [*RESULT_COLUMNS, *KIND_COLUMNS["images"]]
    assert KIND_COLUMNS["images"][-1] == "note"
    assert load_results(out).rows.shape[0] == len(rows)  # bench plot's schema check
    ok = rows[rows["status"] == "ok"]
    for metric in ("fid", "path-rms"):
        cells = ok[ok["metric"] == metric]
        assert set(cells["solver"]) == solvers and not cells.duplicated(["solver", "nfe"]).any()
        assert (cells["nfe"] <= max(nfe)).all() and len(cells) >= len(solvers) * (len(nfe) - 1)
        assert np.isfinite(cells["value"]).all() and (cells["value"] > 0).all()
        assert (cells["metric_time"] >= 0).all() and (cells["sample_time"] > 0).all()
    fid, rms = (ok[ok["metric"] == m].set_index(["solver", "nfe"]) for m in ("fid", "path-rms"))
    assert set(fid.index) == set(rms.index)
    assert (fid["n_samples"] == rms["n_samples"]).all() and (rms["noise_floor"] > 0).all()
    orders = pd.read_csv(out / "orders.csv")
    assert "fid" not in set(orders["metric"])  # FID tends to the model's own FID: no order is fitted
    return rows


def _check_image_figures(out: Path) -> None:
    from click.testing import CliRunner

    from bench.cli.main import cli

    plotted = CliRunner().invoke(cli, ["plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    for name in ("fid_vs_nfe-*", "error_vs_nfe-*-path-rms"):  # FID and path-rms: <kind>-<problem>-<metric>
        for ext in ("png", "pdf"):
            files = list((out / "figures").glob(f"{name}.{ext}"))
            assert files and all(f.stat().st_size > 1000 for f in files), name
            assert all(str(f) in plotted.output for f in files)


def test_image_run_cli_fid_rows_resume_and_figures(tmp_path: Path, fashion_dir: Path) -> None:
    from click.testing import CliRunner

    from bench.cli.main import cli

    model_dir = save_model_dir(tmp_path / "m")
    out, cache = tmp_path / "res", tmp_path / "cache"
    args = ["images", "run", "--model", str(model_dir), "--solvers", "ddim,euler-ancestral", "--nfe", "2,4",
            "--samples", "6", "--batch", "4", "--reference-steps", "8", "--fid-dataset", "fashion-mnist",
            "--fid-extractor", "tiny", "--fid-reference", "10", "--fid-data-root", str(fashion_dir),
            "--fid-cache-dir", str(cache), "--out", str(out)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    rows = _check_image_results(out, {"ddim", "euler-ancestral"}, {2, 4})
    assert len(rows) == 8 and list((cache / "fid-stats").glob("fashion-mnist-dsb-tiny-n10.npz"))
    floors = rows.loc[rows["metric"] == "fid", "noise_floor"]  # images 10..15 vs the stats
    assert floors.nunique() == 1 and floors.iloc[0] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fid"] == {"fid_dataset": "fashion-mnist", "fid_extractor": "tiny", "fid_reference": 10,
                               "fid_dtype": "float32"}
    cells = (out / "cells.jsonl").read_text()
    again = CliRunner().invoke(cli, args)  # every cell is done: nothing is sampled or scored again
    assert again.exit_code == 0 and "path-rms" not in again.output
    assert (out / "cells.jsonl").read_text() == cells
    assert pd.read_csv(out / "results.csv").equals(rows)
    _check_image_figures(out)
    other = CliRunner().invoke(cli, [*args[:-2], "--fid-reference", "8", "--out", str(out)])
    assert other.exit_code != 0 and "other FID settings" in str(other.exception)


def test_image_run_adds_fid_to_cells_sampled_without_it(tmp_path: Path, fashion_dir: Path) -> None:
    from click.testing import CliRunner

    from bench.cli.main import cli

    out = tmp_path / "res"
    base = ["images", "run", "--model", str(save_model_dir(tmp_path / "m")), "--solvers", "ddim",
            "--nfe", "2",
            "--samples", "4", "--reference-steps", "4", "--out", str(out)]
    assert CliRunner().invoke(cli, base).exit_code == 0
    rms = pd.read_csv(out / "results.csv")["value"]
    fid_args = ["--fid-dataset", "fashion-mnist", "--fid-extractor", "tiny", "--fid-reference", "16",
                "--fid-data-root", str(fashion_dir), "--fid-cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, base + fid_args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows["metric"]) == ["fid", "path-rms"]
    assert rows.loc[rows["metric"] == "path-rms", "value"].tolist() == rms.tolist()  # same samples


def test_bf16_network_keeps_float32_solver_arithmetic(tmp_path: Path) -> None:
    from bench.studies.images.sampling import AutocastNetwork, with_dtype

    model = load_model(save_model_dir(tmp_path / "m"))
    assert with_dtype(model, "float32") is model
    bf16 = with_dtype(model, "bfloat16")
    assert isinstance(bf16.fn, AutocastNetwork) and bf16.fn.unet is model.fn.unet  # attributes pass through
    times = torch.linspace(1.0, 1e-3, 4, dtype=torch.float64)
    x_T = initial_noise(model, 3, seed=0)
    exact, low = (sample_batches(m, make_solver("ddim"), times, x_T, 0, 3).x for m in (model, bf16))
    assert low.dtype == torch.float32 and not torch.equal(low, exact)
    assert (low - exact).norm() < 0.05 * exact.norm()
    assert bf16.fn.seconds > 0
    half = sample_batches(with_dtype(model, "float16"), make_solver("ddim"), times, x_T, 0, 3).x
    assert half.dtype == torch.float32 and (half - exact).norm() < 0.05 * exact.norm()
    with pytest.raises(ValueError, match="unknown network dtype"):
        with_dtype(model, "int8")


def test_image_run_dtype_and_fid_against_the_test_split(tmp_path: Path, fashion_dir: Path) -> None:
    from click.testing import CliRunner

    from bench.cli.main import cli

    rng = np.random.default_rng(1)
    write_idx(fashion_dir / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    out = tmp_path / "res"
    args = ["images", "run", "--model", str(save_model_dir(tmp_path / "m")), "--solvers", "ddim",
            "--nfe", "2", "--samples", "6", "--reference-steps", "4", "--dtype", "bfloat16",
            "--fid-dataset", "fashion-mnist-test", "--fid-extractor", "tiny", "--fid-reference", "8",
            "--fid-dtype", "bfloat16", "--fid-batch", "4", "--fid-data-root", str(fashion_dir),
            "--fid-cache-dir", str(tmp_path / "c"), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv").set_index("metric")
    assert (rows["dtype"] == "bfloat16").all() and (rows["n_samples"] == 6).all()
    # the whole test split is the reference: the floor is 6 training images against it
    assert rows.loc["fid", "noise_floor"] > 0 and rows.loc["fid", "value"] > 0
    assert rows.loc["fid", "note"] == ("6 samples vs 8 fashion-mnist-test images (dsb-tiny-bfloat16); "
                                       "small-sample regime (< 10000: biased up, compare at equal n only); "
                                       "floor: the first 6 fashion-mnist images")
    assert rows.loc["path-rms", "note"].startswith("vs dpmpp-3m at 4 logsnr steps")
    assert list((tmp_path / "c" / "fid-stats").glob("fashion-mnist-test-dsb-tiny-bfloat16-n8.npz"))
    other = CliRunner().invoke(cli, [*args[:-2], "--dtype", "float32", "--out", str(out)])
    assert other.exit_code != 0 and "dtype bfloat16" in str(other.exception)
    too_many = CliRunner().invoke(cli, [*args[:-2], "--fid-reference", "9", "--out", str(tmp_path / "r2")])
    assert too_many.exit_code != 0 and "fewer than the 9" in str(too_many.exception)
    alone_dir = tmp_path / "test-split-only"  # no other split: no floor
    alone_dir.mkdir()
    (fashion_dir / "t10k-images-idx3-ubyte.gz").rename(alone_dir / "t10k-images-idx3-ubyte.gz")
    alone = CliRunner().invoke(cli, [*args[:-6], "--fid-data-root", str(alone_dir), *args[-4:-2], "--out",
                                     str(tmp_path / "r3")])
    assert alone.exit_code == 0, alone.output
    fid_row = pd.read_csv(tmp_path / "r3" / "results.csv").set_index("metric").loc["fid"]
    assert np.isnan(fid_row["noise_floor"]) and fid_row["note"].endswith(
        "floor: none (fewer than 6 real images outside the reference)")


# The documented small CPU study (README, "Learned image models"): the exact commands, run by `bench`.
STUDY_TRAIN = ["images", "train", "--dataset", "fashion-mnist", "--subset", "2000", "--width", "16",
               "--batch", "32", "--train-steps", "300", "--log-every", "100", "--checkpoint-every", "300"]
STUDY_RUN = ["images", "run", "--solvers", "ddim,heun,dpmpp-2m,euler-ancestral", "--nfe", "5,10,20,40",
             "--samples", "32", "--batch", "32", "--reference-steps", "200", "--fid-dataset", "fashion-mnist",
             "--fid-extractor", "tiny", "--fid-reference", "2000"]


@pytest.mark.slow
@needs_fashion_mnist
def test_small_fashion_mnist_study_from_the_cli(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def bench(*args: str) -> str:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-2000:]
        print(f"bench {args[0]}: {time.perf_counter() - start:.0f} s\n{done.stdout}")
        return done.stdout

    model, out = tmp_path / "fm", tmp_path / "study"
    bench(*STUDY_TRAIN, "--out", str(model))
    losses = pd.read_csv(model / "loss.csv")["loss"]
    assert len(losses) == 300 and losses.iloc[-50:].mean() < 0.5 * losses.iloc[:10].mean()
    bench(*STUDY_RUN, "--model", str(model), "--out", str(out))
    rows = _check_image_results(out, {"ddim", "heun", "dpmpp-2m", "euler-ancestral"}, {5, 10, 20, 40})
    ok = rows[rows["status"] == "ok"]
    rms_rows = ok[ok["metric"] == "path-rms"]
    assert (rms_rows["value"] > rms_rows["noise_floor"]).all()  # each reference resolves its solver's error
    rms = rms_rows.set_index(["solver", "nfe"])["value"]
    for solver in ("ddim", "dpmpp-2m", "heun"):  # deterministic: closer to the ODE reference with more NFE
        assert rms[solver].iloc[-1] < rms[solver].iloc[0]
    _check_image_figures(out)
    table = ok.pivot_table(index=["solver", "nfe"], columns="metric", values="value")
    print(table.round(3).to_string())
