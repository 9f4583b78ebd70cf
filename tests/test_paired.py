"""Paired estimators (bench/measure/paired.py) on constructed samples with known answers, the theory each
metric is compared with (bench/measure/theory.py), and the acceptance run of the weak metrics."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from analytic.targets import GaussianMixture
from bench.measure.paired import (
    Paired,
    WeakFamily,
    mmd,
    path_stats,
    weak_bump,
    weak_cov,
    weak_error,
    weak_family,
    weak_mean,
)
from bench.measure.theory import conditions, theory
from solvers import make_solver

STD2 = GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]])
TWO_MODES = GaussianMixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [torch.eye(2).tolist()] * 2)


def _normal(n: int, seed: int, d: int = 2) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_weak_mean_of_a_shift_and_the_richardson_correction():
    r = _normal(4000, 0)
    shift = torch.tensor([0.03, -0.04], dtype=torch.float64)
    est = weak_mean(Paired.of(r + shift, r, r, ref_order=4), weak_family(STD2))
    assert est.value == pytest.approx(0.05, rel=1e-12) and est.stderr < 1e-12  # exact pairing: no noise
    assert est.stderr_plain == pytest.approx(1 / math.sqrt(4000), rel=0.1)  # plain: Var x / n
    # the reference's own bias, estimated from its coarse twin (order 1: c = 1): added to the estimate
    est = weak_mean(Paired.of(r, r, r - shift, ref_order=1), weak_family(STD2))
    assert est.value == pytest.approx(0.05, rel=1e-12) and est.noise_floor >= 0.05  # and to the floor


def test_weak_cov_of_a_scaling_matches_the_closed_form():
    r = _normal(20000, 1)
    x = 1.1 * r  # Cov X_N = 1.21 Cov R; Cov R = I: ||0.21 I||_F = 0.21 sqrt 2 in expectation
    est = weak_cov(Paired.of(x, r, r, ref_order=4), weak_family(STD2))
    exact = 0.21 * math.sqrt(2)
    assert abs(est.value - exact) < 3 * est.stderr + 0.01 * exact, (est, exact)
    assert est.stderr < est.stderr_plain


def test_mmd_matches_the_gaussian_closed_form():
    """MMD^2 between N(0, I) and N(delta, I) with a Gaussian kernel of bandwidth h (d = 2):
    2 (h^2 / (h^2 + 2)) (1 - exp(-|delta|^2 / (2 (h^2 + 2))))."""
    r = _normal(3000, 2)
    delta = torch.tensor([0.2, 0.0], dtype=torch.float64)
    family = weak_family(STD2)
    h2 = family.bandwidth**2
    exact = math.sqrt(2 * h2 / (h2 + 2) * (1 - math.exp(-0.04 / (2 * (h2 + 2)))))
    est = mmd(Paired.of(r + delta, r, r, ref_order=4), family)
    assert abs(est.value - exact) < 3 * est.stderr, (est, exact)
    same = mmd(Paired.of(r, r, r, ref_order=4), family)
    assert same.value < same.noise_floor < 1e-7  # round-off of the kernel differences is in the floor


def test_weak_bump_is_rms_over_the_family():
    family = WeakFamily(torch.zeros(1, dtype=torch.float64), torch.zeros(64, 1, dtype=torch.float64),
                        torch.ones(64, dtype=torch.float64), 1.0)
    r = torch.zeros(10, 1, dtype=torch.float64)
    x = r + 1.0  # every bump: exp(-1/2) - 1
    est = weak_error("weak-bump", Paired.of(x, r, r, ref_order=4), GaussianMixture([1.0], [[0.0]], [[[1.0]]]))
    assert math.isfinite(est.value) and est.value > 0
    assert weak_bump(Paired.of(x, r, r, ref_order=4), family).value == pytest.approx(1 - math.exp(-0.5))


def test_path_stats_count_mode_flips():
    ref = TWO_MODES.sample(1000, torch.Generator().manual_seed(3))
    x = ref.clone()
    x[:10, 0] = -x[:10, 0]  # 10 samples end in the other mode
    stats = path_stats(x, ref, ref, TWO_MODES)
    assert stats.mode_flips == pytest.approx(0.01)
    d = (x - ref).norm(dim=1)
    assert stats.rms == pytest.approx(float(d.pow(2).mean().sqrt())) and stats.median == 0.0
    assert path_stats(x, ref, ref, STD2).mode_flips == 0.0  # one component: no modes to flip


def test_theory_per_metric_kind():
    ddpm, ddim, unipc3, exp_sde = (make_solver(n) for n in ("ddpm", "ddim", "unipc-3", "exp-sde"))
    assert theory(ddpm, "path-rms").kind == "strong" and theory(ddpm, "path-rms").low == ddpm.strong_order
    assert theory(ddpm, "weak-cov").kind == "weak" and theory(ddpm, "weak-cov").low == ddpm.order
    assert theory(ddim, "path-rms").kind == "ode" and theory(ddim, "path-median").low == 1
    capped = theory(unipc3, "w2-exact")
    assert (capped.low, capped.high) == (unipc3.order_cap, unipc3.order) and capped.low < capped.high
    gaussian_logsnr = theory(exp_sde, "w2-exact", conditions(True, "logsnr", "vp-linear"))
    assert gaussian_logsnr.high > exp_sde.order and gaussian_logsnr.note
    assert theory(exp_sde, "w2-exact", conditions(False, "logsnr", "vp-linear")).high == exp_sde.order
    assert theory(exp_sde, "w2-exact", conditions(True, "karras[rho=7]", "vp-linear")).high == exp_sde.order
    assert math.isnan(theory(ddim, "mode-flips").low)


def test_weak_metrics_run_from_the_cli(tmp_path):
    """The issue's acceptance command, at toy size: rows carry stderr, orders carry a verdict and the
    theory used (weak for the weak metrics, strong for path-rms of the SDE solvers)."""
    out = tmp_path / "run"
    metrics = ["weak-mean", "weak-cov", "weak-bump", "mmd", "path-rms"]
    cmd = [sys.executable, "-m", "bench.cli", "run", "--problem", "mix-2d", "--solvers",
           "ddim,heun,dpmpp-2m,ddpm,euler-maruyama", "--steps", "8,16,32", "--seeds", "0",
           "--samples", "200", "--out", str(out), *[a for m in metrics for a in ("--metric", m)]]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.metric) == set(metrics) and (rows.status == "ok").all()
    assert rows.stderr.notna().all() and (rows.stderr > 0).all()
    sde_path = rows[(rows.solver == "ddpm") & (rows.metric == "path-rms")]
    assert (sde_path.theory_kind == "strong").all() and sde_path.mode_flips.notna().all()
    assert (rows[(rows.solver == "ddpm") & (rows.metric == "mmd")].theory_kind == "weak").all()
    orders = pd.read_csv(out / "orders.csv")
    assert set(orders.verdict) <= {"agrees", "disagrees", "unresolved"} and orders.theory.notna().all()
    assert (orders[orders.verdict != "agrees"].reason.fillna("") != "").all()
    assert json.loads((out / "manifest.json").read_text())["config"]["metrics"] == metrics
    assert sorted(orders[orders.solver == "ddpm"].theory_kind.unique()) == ["strong", "weak"]
    assert set(orders[orders.solver == "ddim"].theory_kind) == {"ode"}
