"""The conformance card (bench conformance): the detectors on synthetic curves, reduced precision, a
deliberately broken sampler whose defects the card must catch, and the pinned diffusers schedulers."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from analytic import get_problem
from bench.measure.anomalies import outliers, ranges, shifts
from bench.measure.models import analytic_model
from bench.measure.precision import rounded_model, rounding_rms
from bench.report.conformance import cards, render
from bench.studies.conformance import ConformanceConfig, ConformanceError, ConformanceStudy, validate
from bench.sweep.engine import run_study
from bench.sweep.store import load_rows
from tests.requires import needs_diffusers

TOY = str(Path(__file__).with_name("toy_broken.py")) + ":BrokenDDIM"
NS = list(range(2, 61))


def _curve(spikes: dict[int, float] | None = None, order: float = 1.5) -> list[float]:
    return [3.0 * n**-order * (spikes or {}).get(n, 1.0) for n in NS]


def test_outliers_find_spikes_and_nothing_on_a_power_law() -> None:
    assert outliers(NS, _curve()) == []
    found = outliers(NS, _curve({7: 4.0, 30: 10.0, 31: 1.5}))
    assert [o.n for o in found] == [7, 30]
    assert found[1].ratio == pytest.approx(10.0, rel=1e-9)
    assert outliers(NS, _curve({7: 2.5})) == []  # below 3x: not an outlier


def test_outliers_ignore_points_below_their_noise_floor() -> None:
    values = _curve({40: 5.0})
    assert [o.n for o in outliers(NS, values)] == [40]
    assert outliers(NS, values, floors=[1.0] * len(NS)) == []


def test_shifts_find_a_level_change_between_consecutive_n() -> None:
    values = [v * (4.0 if n <= 14 else 1.0) for n, v in zip(NS, _curve(), strict=True)]
    found = shifts(NS, values, factor=2.0)
    assert [(s.n, s.n_next) for s in found] == [(14, 15)]
    assert found[0].ratio == pytest.approx(4.0, rel=1e-9)
    assert shifts(NS, _curve(), factor=2.0) == []


def test_ranges() -> None:
    assert ranges([2, 3, 4, 9, 12, 13, 1024]) == "2-4, 9, 12-13, 1024"


def test_rounded_model_rounds_input_and_output() -> None:
    problem = get_problem("gauss-unit-3d")
    model = analytic_model(problem)
    half = rounded_model(model, torch.bfloat16)
    x = problem.sample_marginal(0.5, 8, torch.Generator().manual_seed(0))
    raw = half.fn(x, torch.tensor(0.5, dtype=torch.float64))
    assert raw.dtype == torch.bfloat16
    exact = model.fn(x.to(torch.bfloat16).double(), torch.tensor(0.5, dtype=torch.float64))
    assert torch.equal(raw, exact.to(torch.bfloat16))
    assert rounded_model(model, torch.float64) is model
    rms, se = rounding_rms(torch.ones(4, 2), torch.zeros(4, 2))
    assert rms == pytest.approx(math.sqrt(2)) and se == 0.0


def _study(tmp_path: Path, samplers: list[str], **settings) -> list:
    config = ConformanceConfig(samplers=samplers, **settings)
    run_study(ConformanceStudy(config), tmp_path / "out", jobs=1)
    return cards(load_rows(tmp_path / "out"))


def test_card_catches_a_broken_sampler_and_passes_its_healthy_twin(tmp_path: Path) -> None:
    found = _study(tmp_path, [TOY, "ddim"], dense=list(range(2, 36)), ladder=[],
                   dtypes=["float64", "float16"], order_steps=[], scales=[])
    by_name = {c.sampler: c for c in found}
    broken, healthy = by_name["toy_broken.BrokenDDIM"], by_name["ddim"]
    assert healthy.summary == "PASS", render(healthy)
    assert broken.summary.startswith("FLAG"), render(broken)
    dense = [f.text for f in broken.flags if f.axis == "dense"]
    assert [int(t.split("N = ")[1].split(":")[0]) for t in dense] == [7, 14, 21, 28, 35]
    precision = [f.text for f in broken.flags if f.axis == "precision"]
    assert len(precision) == 1 and precision[0].startswith("float16: first non-finite N = 2")


def test_guidance_and_order_axes_and_resume(tmp_path: Path) -> None:
    settings = dict(dense=[2, 3, 4, 8, 16], ladder=[32], dtypes=["float64", "bfloat16"],
                    order_steps=[8, 16, 32, 64], order_seeds=[0], order_samples=64, scales=[0.0, 8.0],
                    guidance_nfe=[10], guidance_samples=64)
    (card,) = _study(tmp_path, ["dpmpp-2m"], **settings)
    axes = {f.axis for f in card.findings}
    assert axes == {"dense", "order", "precision", "guidance"}, render(card)
    rows = load_rows(tmp_path / "out")
    guided = rows[rows["axis"] == "guidance"]
    assert len(guided) == 2 and (guided["status"] == "ok").all()
    assert (guided["baseline"] > 0).all() and (guided["value"] > 0).all()
    strong = [f.text for f in card.findings if "pathwise" in f.text]
    assert strong and "path-rms on mix-unit-2d" in strong[0]
    before = len(rows)
    again = ConformanceStudy(ConformanceConfig(samplers=["dpmpp-2m"], **settings))
    run_study(again, tmp_path / "out", jobs=1)
    assert len(load_rows(tmp_path / "out")) == before  # resumed: nothing recomputed or duplicated


@pytest.mark.parametrize("settings, message", [
    (dict(samplers=["nosuch"]), "unknown solver"),
    (dict(gauss_problem="mix-2d"), "needs a Gaussian target"),
    (dict(dtypes=["float32"]), "must include float64"),
    (dict(dtypes=["float64", "float8"]), "unknown dtype"),
    (dict(scales=[math.inf]), "finite"),
])
def test_bad_input_is_one_clear_error(settings: dict, message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        validate(ConformanceConfig(**{"samplers": ["ddim"], **settings}))


def test_cli_prints_cards_and_report_renders_them(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    args = [sys.executable, "-m", "bench.cli", "conformance", f"{TOY},ddim", "--dense", "2-22", "--ladder",
            "32", "--dtypes", "float64,float16", "--order-steps", "4,8,16", "--scales", "0,4",
            "--guidance-nfe", "10", "--jobs", "1", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "toy_broken.BrokenDDIM: FLAG" in done.stdout and "ddim: PASS" in done.stdout
    assert "2 cards: 1 PASS, 1 FLAG" in done.stdout
    report = subprocess.run([sys.executable, "-m", "bench.cli", "report", str(out)], capture_output=True,
                            text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "## Conformance cards" in text and "N = 7:" in text and "figures/conformance.png" in text
    bad = subprocess.run([sys.executable, "-m", "bench.cli", "conformance", "ddim", "--dtypes", "float8",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@needs_diffusers
def test_cards_of_pinned_diffusers_schedulers(tmp_path: Path) -> None:
    """The findings come from the measurements: which flags appear for three pinned schedulers."""
    names = ["diffusers:DDIMScheduler",
             "diffusers:UniPCMultistepScheduler[solver_type=bh1,final_sigmas_type=zero]",
             "diffusers:DPMSolverMultistepScheduler[solver_order=3]"]
    found = _study(tmp_path, names, dtypes=["float64"], order_steps=[], scales=[0.0, 8.0], guidance_nfe=[20],
                   guidance_samples=100)
    ddim, unipc, dpm3 = ({c.sampler: c for c in found}[name] for name in names)
    text = {c.sampler: render(c) for c in (ddim, unipc, dpm3)}
    # DDIM: "leading" spacing steps from t = N (1000 // N) - 1000 // N: at N = 512 it starts at knot 511
    flags = [f.text for f in ddim.flags]
    assert any(t.startswith("N = 512:") for t in flags), text[ddim.sampler]
    assert any("refused before any model call" in f.text and "1024" in f.text for f in ddim.findings)
    assert any(f.axis == "guidance" for f in ddim.flags), text[ddim.sampler]
    # UniPC bh1 with a zero final sigma: non-finite at every step count
    dense = [f.text for f in unipc.flags if f.axis == "dense"]
    assert dense and dense[0].startswith("N = 2-100, 128, 256, 512, 1024: non-finite"), text[unipc.sampler]
    # DPM-Solver++ order 3: finite to N = 512, non-finite at 1024 (more steps than 1000 training knots)
    dense = [f.text for f in dpm3.flags if f.axis == "dense"]
    assert dense == ["N = 1024: non-finite output (float64)"], text[dpm3.sampler]


def test_conformance_rows_carry_the_study_columns(tmp_path: Path) -> None:
    _study(tmp_path, ["ddim"], dense=[2, 3, 4, 5, 6], ladder=[], dtypes=["float64", "float32"],
           order_steps=[], scales=[])
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    assert {"axis", "declared_nfe"} <= set(frame.columns)
    assert set(frame["metric"]) == {"w2-exact", "w2-bound", "rounding-rms"}
    orders = pd.read_csv(tmp_path / "out" / "orders.csv")
    assert set(orders["metric"]) == {"w2-exact"}  # fitted on the powers of two only


def test_bench_run_samples_in_half_precision_and_records_divergence(tmp_path: Path) -> None:
    from bench.studies.analytic import SweepConfig, run_sweep

    config = SweepConfig(problems=["gauss-unit-3d"], solvers=[f"ddim,{TOY}"], steps=[8, 16], seeds=[0],
                         samples=64, dtype="float16")
    frame = load_rows(run_sweep(config, tmp_path / "run", jobs=1))
    ddim = frame[frame["solver"] == "ddim"]
    assert (ddim["status"] == "ok").all() and ddim["reason"].str.startswith("W2 bound in float16").all()
    exact = load_rows(run_sweep(SweepConfig(problems=["gauss-unit-3d"], solvers=["ddim"], steps=[8, 16],
                                            seeds=[0], samples=64), tmp_path / "run64", jobs=1))
    gap = ddim["value"].to_numpy() - exact["value"].to_numpy()
    assert (gap > 0).all() and (gap < 0.01).all()  # the rounding RMS of float16, added to the exact W2
    broken = frame[frame["solver"] == "toy_broken.BrokenDDIM"]
    assert (broken["status"] == "diverged").all() and (broken["reason"] == "non-finite samples").all()


def test_guided_study_runs_in_bfloat16(tmp_path: Path) -> None:
    from bench.studies.guidance import GuidedConfig, GuidedStudy

    config = GuidedConfig(problem="mix-unit-2d", scales=[2.0], solvers=["ddim"], steps=[8], seeds=[0],
                          samples=32, dtype="bfloat16")
    run_study(GuidedStudy(config), tmp_path / "guided", jobs=1)
    rows = load_rows(tmp_path / "guided")
    assert list(rows["dtype"]) == ["bfloat16"] and (rows["status"] == "ok").all()


def test_decompose_study_runs_in_float16(tmp_path: Path) -> None:
    from bench.studies.decompose import DecomposeConfig, DecomposeStudy

    config = DecomposeConfig(problem="mix-unit-2d", model="perturb:bias=0.05", solvers=["ddim"], steps=[8],
                             seeds=[0], samples=32, dtype="float16")
    run_study(DecomposeStudy(config), tmp_path / "dec", jobs=1)
    rows = load_rows(tmp_path / "dec")
    assert (rows["status"] == "ok").all()
    assert set(rows.loc[rows["component"] != "score", "dtype"]) == {"float16"}


@needs_diffusers
def test_dpmsolver_sde_is_deterministic_given_the_noise_seed() -> None:
    """Its Brownian tree is seeded from the global RNG unless given a seed: the adapter gives the run's."""
    from bench.measure.grids import problem_grid
    from solvers import make_solver

    problem = get_problem("gauss-unit-3d")
    model = analytic_model(problem)
    sampler = make_solver("diffusers:DPMSolverSDEScheduler")
    x = problem.sample_marginal(problem.t_max, 8, torch.Generator().manual_seed(0))
    times = problem_grid("logsnr", problem, 10, model)

    def run(seed: int) -> torch.Tensor:
        torch.rand(7)  # move the global RNG between runs
        noise = sampler.noise_source(seed, problem.t_min, problem.t_max)
        return sampler.run(model, times, x.clone(), noise).x

    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
