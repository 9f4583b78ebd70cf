"""Declared orders are theorems with a citation (solvers/base.py): every solver says where its orders are
proven; stochastic solvers declare a strong order within the Clark-Cameron bound, and only path noise
earns a positive one; caps sit below the nominal order and match what the code's warm-up does; and
`describe()` carries all of it, for the peers too."""

from __future__ import annotations

import math

import pytest
import torch

from analytic import get_problem, make_grid
from bench.measure.models import analytic_model
from solvers import BrownianTreeNoise, make_solver, names, resolve, sample
from solvers.base import OrderException
from tests.util import prior_sample

KEYS = ("order", "strong_order", "order_cap", "order_note", "order_source", "order_exceptions")
CONDITIONS = ("gaussian", "grid=", "schedule=")

# parameterised instances whose declarations are set per instance in __post_init__
STOCHASTIC_VARIANTS = [
    "pc-langevin[step_rule=fixed]", "pc-langevin[step_rule=norm]", "pc-langevin[corrector_steps=0]",
    "pc-langevin[snr=0]", "pc-langevin[predictor=dpmpp-2s-ancestral]",
    "pc-langevin[predictor=ddim,corrector_steps=0]", "dpmpp-3m-sde[eta=0]", "dpmpp-3m-sde[eta=0.5]",
    "ddim-eta[eta=0]", "ddim-eta[eta=0.5]", "lambda-sde[lam=0]", "lambda-sde[lam=1]",
    "euler-ancestral[eta=0.5]", "ddpm[variance=beta]", "dpmpp-2m-sde[solver_type=heun]", "dpmpp-sde[r=0.3]",
    "edm-stochastic[s_churn=5]",
]
ODE_VARIANTS = ["ipndm[max_order=2]", "ipndm[max_order=3]", "lms[max_order=2]", "lms[max_order=3]",
                "dpm-solver-3[r2=0.5]", "dpmpp-3m[taylor_d2=true]", "unipc-3[variant=bh1]",
                "deis-3[basis=logrho]", "dpm-adaptive[order=2]", "dpm-solver-2[r1=0.3]"]
ALL_SPECS = names() + STOCHASTIC_VARIANTS + ODE_VARIANTS
STOCHASTIC_SPECS = [s.label for s in resolve("sde")] + STOCHASTIC_VARIANTS

# (order, order_cap) derived from the code's first steps (warm-up rule) and fixed weights; see the classes
ORDERS = {
    "dpmpp-2m": (2, None), "dpmpp-3m": (2, None), "dpmpp-3m[taylor_d2=true]": (3, 2),
    "unipc-1": (2, None), "unipc-2": (3, None), "unipc-3": (4, 3),
    "deis-1": (1, None), "deis-2": (2, None), "deis-3": (3, 2),
    "ipndm": (4, 2), "ipndm[max_order=3]": (3, 2), "ipndm[max_order=2]": (2, None),
    "lms": (4, 2), "lms[max_order=3]": (3, 2), "lms[max_order=2]": (2, None), "pndm": (4, 2),
    "dpm-solver-3": (3, None), "dpm-solver-3[r2=0.5]": (2, None), "dpm-solver-2[r1=0.3]": (2, None),
    "dpmpp-3m-sde": (1, None), "dpmpp-3m-sde[eta=0]": (2, None), "rk45": (5, None),
    "dpmpp-sde": (1, None), "dpmpp-sde[eta=0]": (2, None), "dpmpp-2m-sde": (1, None),
    "dpmpp-2m-sde[eta=0]": (2, None),
    "dpm-adaptive": (3, None), "dpm-adaptive[order=2]": (2, None),
}


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_declared_order_names_its_source(spec):
    solver = make_solver(spec)
    info = solver.describe()
    assert all(key in info for key in KEYS), spec
    assert info["order_source"].strip(), f"{spec}: no order_source"
    if solver.order_cap is not None:
        assert solver.order_cap < solver.order, f"{spec}: a cap must lie below the nominal order"
        assert solver.order_note.strip(), f"{spec}: a cap needs its derivation in order_note"
    low = solver.order if solver.order_cap is None else solver.order_cap
    for exc in solver.order_exceptions:  # raise the interval above the implementation's asymptotic order
        assert isinstance(exc, OrderException) and exc.high > low and exc.note.strip(), spec
        assert all(w == "gaussian" or w.startswith(CONDITIONS[1:]) for w in exc.when), spec
        if not exc.when:  # unconditional: a warm-up cap's tiny constant, or an unproven step order
            assert exc.high <= max(solver.order, 2), spec


@pytest.mark.parametrize("spec", STOCHASTIC_SPECS)
def test_stochastic_solvers_declare_a_strong_order_within_clark_cameron(spec):
    solver = make_solver(spec)
    assert solver.stochastic
    assert solver.strong_order is not None, f"{spec}: stochastic solvers need a strong order"
    assert 0 <= solver.strong_order <= 1, f"{spec}: above the Clark-Cameron bound"
    assert solver.strong_order <= solver.order, f"{spec}: strong order above the weak order"


@pytest.mark.parametrize("spec", [n for n in names() if not make_solver(n).stochastic])
def test_deterministic_solvers_have_no_strong_order(spec):
    assert make_solver(spec).strong_order is None


@pytest.mark.parametrize("spec", sorted(ORDERS))
def test_orders_and_caps(spec):
    solver = make_solver(spec)
    assert (solver.order, solver.order_cap) == ORDERS[spec], spec


def test_dpmpp_3m_family_is_order_2_and_taylor_d2_is_3():
    """The shipped 3M update halves D2; eta = 0 is dpmpp-3m itself. With eta > 0 only weak order 1 is
    proven; the ODE step's 2 tops the interval measured slopes are compared with."""
    assert make_solver("dpmpp-3m-sde[eta=0]").order == make_solver("dpmpp-3m").order == 2
    sde = make_solver("dpmpp-3m-sde")
    assert sde.order == 1 and [e.high for e in sde.order_exceptions] == [2]
    taylor = make_solver("dpmpp-3m[taylor_d2=true]")
    assert taylor.order == 3 and taylor.order_cap == 2
    problem = get_problem("mix-2d", "vp-linear")
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 12, problem.t_min, problem.t_max)
    x = prior_sample(problem, 16)
    ode = sample(make_solver("dpmpp-3m"), model, times, x.clone()).x
    noise = BrownianTreeNoise(0, problem.t_min, problem.t_max)
    sde = sample(make_solver("dpmpp-3m-sde[eta=0]"), model, times, x.clone(), noise).x
    assert float((ode - sde).abs().max()) < 1e-12


def test_pc_langevin_strong_order_follows_its_corrector():
    assert make_solver("pc-langevin").strong_order == 0  # noise.extra, independent of the path
    assert make_solver("pc-langevin[step_rule=fixed]").order == 0
    for spec in ("pc-langevin[corrector_steps=0]", "pc-langevin[snr=0]"):
        solver, em = make_solver(spec), make_solver("euler-maruyama")
        assert (solver.order, solver.strong_order, solver.order_exceptions) == (
            em.order, em.strong_order, em.order_exceptions)
    heun = make_solver("pc-langevin[predictor=heun,corrector_steps=0]")
    assert heun.order == 2 and heun.strong_order == 1


def test_proven_exceptions():
    ve = {("gaussian", "schedule=ve")}
    assert {e.when for e in make_solver("euler-maruyama").order_exceptions} == ve
    assert {e.when for e in make_solver("lambda-sde[lam=1]").order_exceptions} == ve
    assert not make_solver("lambda-sde").order_exceptions  # (1 + lam)^2 / 4 != 1: no telescoping
    assert {e.when for e in make_solver("exp-sde").order_exceptions} == {("gaussian", "grid=logsnr")}
    assert {e.when for e in make_solver("ipndm").order_exceptions} == {("schedule=edm", "grid=uniform")}
    for spec in ("unipc-3", "deis-3", "lms", "dpmpp-3m[taylor_d2=true]"):  # warm-up caps: tiny constants
        solver = make_solver(spec)
        assert [(e.when, e.high) for e in solver.order_exceptions] == [((), solver.order)]


def _run(spec: str, steps: int, schedule: str = "vp-linear", grid: str = "logsnr") -> torch.Tensor:
    problem = get_problem("mix-2d", schedule)
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max)
    return sample(make_solver(spec), analytic_model(problem), times, prior_sample(problem, 32)).x


@pytest.mark.parametrize("spec", ["deis-3", "deis-3[basis=logrho]", "lms", "ipndm",
                                  "dpmpp-3m[taylor_d2=true]", "unipc-3"])
def test_capped_solvers_start_with_a_first_order_step(spec):
    """The caps' premise, read from the code: the first step is DDIM (local error O(h^2)), so by the
    warm-up rule the asymptotic order is at most 2 (unipc-3: the corrector UniC-1 lifts that step to
    local O(h^3) at the next call, hence its cap 3)."""
    for schedule in ("vp-linear", "edm"):
        first = _run(spec, 1, schedule)
        assert float((first - _run("ddim", 1, schedule)).abs().max()) < 1e-10, (spec, schedule)


def test_fixed_weights_are_the_variable_step_ones_only_on_grids_uniform_in_sigma_tilde():
    """ipndm (fixed AB weights) equals lms (variable-step Adams) on a grid uniform in sigma~ (edm, uniform
    in t = sigma) and differs on karras: the premise of ipndm's nominal order 4 and of its cap 2."""
    same = _run("ipndm", 20, "edm", "uniform") - _run("lms", 20, "edm", "uniform")
    assert float(same.abs().max()) < 1e-10
    apart = _run("ipndm", 20, "edm", "karras") - _run("lms", 20, "edm", "karras")
    assert float(apart.abs().max()) > 1e-4


class _Recorder(BrownianTreeNoise):
    """A Brownian tree that records which draws a solver asks for."""

    def __init__(self, *args):
        super().__init__(*args)
        self.path: list[tuple[float, float]] = []
        self.extra_calls = 0
        self.zero_extra = False

    def normal(self, t0, t1, like):
        self.path.append((t0, t1))
        return super().normal(t0, t1, like)

    def increment(self, t0, t1, like):
        self.path.append((t0, t1))
        return super().increment(t0, t1, like)

    def extra(self, t, k, like):
        self.extra_calls += 1
        return torch.zeros_like(like) if self.zero_extra else super().extra(t, k, like)


@pytest.mark.parametrize("spec", STOCHASTIC_SPECS)
def test_only_path_noise_earns_a_positive_strong_order(spec):
    """A positive strong order needs every draw that matters to be a normalised increment of the noise
    source's path over (part of) the current step; a solver whose output depends on `noise.extra`
    draws (independent of the path) must declare strong order 0."""
    problem = get_problem("mix-2d", "vp-linear")
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 6, problem.t_min, problem.t_max)
    x, solver = prior_sample(problem, 8), make_solver(spec)
    noise, inert = (_Recorder(0, problem.t_min, problem.t_max) for _ in range(2))
    inert.zero_extra = True
    out = sample(solver, model, times, x.clone(), noise).x
    if noise.extra_calls and not torch.equal(out, sample(solver, model, times, x.clone(), inert).x):
        assert solver.strong_order == 0, f"{spec} adds noise independent of the path"
        return
    steps = list(zip(times.tolist(), times.tolist()[1:], strict=False))
    for t0, t1 in noise.path:
        assert any(a + 1e-12 >= t0 > t1 >= b - 1e-12 for a, b in steps), (spec, t0, t1)


def _check_peer(solver) -> None:
    info = solver.describe()
    assert all(key in info for key in KEYS), solver.label
    assert info["order_source"].strip(), solver.label
    if solver.stochastic:
        assert info["strong_order"] is not None and 0 <= info["strong_order"] <= 1, solver.label
    else:
        assert info["strong_order"] is None, solver.label
    if info["order_cap"] is not None:
        assert info["order_cap"] < info["order"] and info["order_note"].strip(), solver.label


def test_kdiffusion_peers_carry_their_twins_declarations():
    from tests.peers import kdiffusion_sampling

    kdiffusion_sampling()  # skips without k-diffusion
    from solvers.external import TWINS, available

    for name in available("kdiff:"):
        _check_peer(make_solver(f"kdiff:{name}"))
    for peer, ours in TWINS.items():
        if peer.startswith("kdiff:"):
            theirs, twin = make_solver(peer), make_solver(ours)
            assert (theirs.order, theirs.order_cap, theirs.order_exceptions) == (
                twin.order, twin.order_cap, twin.order_exceptions), peer
            if theirs.stochastic:
                assert theirs.strong_order == twin.strong_order, peer
            assert twin.order_source in theirs.order_source, peer
    ancestral = make_solver("kdiff:sample_euler_ancestral").describe()
    assert ancestral["strong_order"] == 1 and "Clark & Cameron" in ancestral["order_source"]
    assert make_solver("kdiff:sample_dpmpp_3m_sde[eta=0]").order == make_solver("dpmpp-3m").order == 2
    lms = make_solver("kdiff:sample_lms[order=3]")
    assert (lms.order, lms.order_cap) == (3, 2)


def test_diffusers_peers_declare_complete_metadata():
    from tests.peers import diffusers

    diffusers()  # skips without diffusers
    from solvers.external import available

    for name in available("diffusers:"):
        solver = make_solver(f"diffusers:{name}")
        if not math.isnan(solver.order):
            _check_peer(solver)
    unipc = make_solver("diffusers:UniPCMultistepScheduler")
    assert unipc.order == make_solver("unipc-2").order == 3  # UniP-2 + UniC-2, as the parity test shows
    third = make_solver("diffusers:DPMSolverMultistepScheduler[solver_order=3]")
    assert third.order == make_solver("dpmpp-3m").order == 2 and "D2" in third.order_note  # the shipped 3M
    assert make_solver("diffusers:PNDMScheduler").order_cap == make_solver("pndm").order_cap == 2
