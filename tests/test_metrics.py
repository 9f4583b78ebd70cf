"""Sample metrics and their noise floors (REFERENCE.md), exact samples, w2-exact refusals, and the
pathwise reference's self-check and cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analytic import get_problem, make_grid
from analytic.problems import problem_from_dict
from bench.measure import metrics
from bench.measure.exact_law import output_law
from bench.measure.metrics import MetricError, exact_samples, noise_floor, sample_metric, w2_exact
from bench.measure.models import analytic_model
from bench.measure.reference import brownian_noise, path_rms, reference
from bench.studies.analytic import SweepConfig, plan_cells, run_cell
from solvers import Model, make_solver, names, sample
from solvers.first_order import DDIM
from tests.util import prior_sample


@pytest.fixture(scope="module")
def std2d():
    """VP marginals of N(0, I) are N(0, I) at every t: p_t_min is the 2-D standard Gaussian."""
    return problem_from_dict({"weights": [1.0], "means": [[0.0, 0.0]], "vars": [[1.0, 1.0]]}, "std-2d")


def test_metric_tables():
    assert set(metrics.METRICS) == {"w2-exact", "w2", "sw2", "sinkhorn", "path-rms", "path-median", "mmd",
                                    "mmd-sample", "weak-mean", "weak-cov", "weak-bump"}
    assert set(metrics.SAMPLE_METRICS) == {"w2", "sw2", "sinkhorn", "mmd-sample"}
    with pytest.raises(MetricError, match="unknown sample metric"):
        sample_metric("fid", torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(MetricError, match="dimensions"):
        sample_metric("w2", torch.zeros(3, 2), torch.zeros(3, 3))


def test_noise_floors_match_reference_table(std2d):
    # REFERENCE.md, 2-D standard Gaussian: W2 0.19 (n = 1000), 0.17 (2000); sliced 0.08, 0.07, 0.03
    w2 = [noise_floor("w2", std2d, 1000, s) for s in range(3)]
    assert all(0.14 < v < 0.26 for v in w2), w2
    sw2 = [noise_floor("sw2", std2d, 1000, s) for s in range(3)]
    assert all(0.04 < v < 0.12 for v in sw2), sw2
    assert 0.015 < noise_floor("sw2", std2d, 4000, 0) < 0.06
    assert noise_floor("w2", std2d, 1000, 0) == w2[0]  # cached, and deterministic


@pytest.mark.parametrize("name", ["w2", "sw2", "sinkhorn", "mmd-sample"])
def test_shift_is_resolved_above_the_floor(std2d, name):
    floor = noise_floor(name, std2d, 1000, 0)
    assert floor > 0
    x = exact_samples(std2d, 1000, 0)
    shifted = sample_metric(name, x + torch.tensor([1.0, 0.0], dtype=torch.float64),
                            exact_samples(std2d, 1000, 0, stream=5))
    assert shifted > 3 * floor
    # translation moves W2 exactly by the shift for equal point clouds
    if name == "w2":
        assert sample_metric(name, x + torch.tensor([0.5, 0.0], dtype=torch.float64), x) == pytest.approx(0.5)


def test_converged_solver_sits_at_the_floor_and_coarse_one_above():
    problem = get_problem("mix-2d")
    model = analytic_model(problem)
    x_T = prior_sample(problem, 1000, seed=0)
    exact = exact_samples(problem, 1000, 0)
    for name in ("w2", "sw2"):
        floor = noise_floor(name, problem, 1000, 0)
        fine = make_grid("logsnr", problem.schedule, 200, problem.t_min, problem.t_max)
        out = sample(make_solver("dpmpp-2m" if "dpmpp-2m" in names() else "ddim"), model, fine, x_T).x
        assert 0.5 * floor < sample_metric(name, out, exact) < 1.6 * floor
        coarse = make_grid("uniform", problem.schedule, 2, problem.t_min, problem.t_max)
        out = sample(make_solver("ddim"), model, coarse, x_T).x
        assert sample_metric(name, out, exact) > 3 * floor


def test_exact_samples_streams(std2d):
    problem = get_problem("gauss-aniso-3d")
    a, b = exact_samples(problem, 500, 3), exact_samples(problem, 500, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, exact_samples(problem, 500, 4))
    assert not torch.equal(a, exact_samples(problem, 500, 3, stream=1))
    # independent of the manual_seed(seed) stream that x_T comes from
    same_seed = problem.sample_marginal(problem.t_min, 500, torch.Generator().manual_seed(3))
    assert not torch.allclose(a, same_seed)
    # right law: mean and covariance of p_t_min
    big = exact_samples(problem, 40000, 0, dtype=torch.float32)
    assert big.dtype == torch.float32
    law = problem.marginal(problem.t_min)
    assert torch.allclose(big.double().mean(0), law.means[0], atol=0.03)
    assert torch.allclose(torch.cov(big.double().T), law.covs[0], atol=0.05)
    prior = exact_samples(problem, 40000, 0, t=problem.t_max)
    assert float(prior.var(0).mean()) == pytest.approx(1.0, abs=0.03)


@dataclasses.dataclass
class _NormScaledDDIM(DDIM):
    """DDIM with a state-norm-dependent step: not affine (only for the refusal test)."""

    affine = False


def test_w2_exact_refusals():
    mix = get_problem("mix-2d")
    times = make_grid("logsnr", mix.schedule, 4, mix.t_min, mix.t_max)
    with pytest.raises(MetricError, match="Gaussian target; mix-2d has 3 components"):
        w2_exact(mix, make_solver("ddim"), analytic_model(mix), times)
    gauss = get_problem("gauss-1d")
    times = make_grid("logsnr", gauss.schedule, 4, gauss.t_min, gauss.t_max)
    with pytest.raises(MetricError, match="affine in \\(x, noise\\)"):
        w2_exact(gauss, _NormScaledDDIM(), analytic_model(gauss), times)
    exact = analytic_model(gauss)
    warped = Model(lambda x, t: exact.fn(x, t) + 0.1 * x**3, "eps", gauss.schedule)
    with pytest.raises(MetricError, match="model affine in x"):
        w2_exact(gauss, make_solver("ddim"), warped, times)
    assert w2_exact(gauss, make_solver("ddim"), exact, times) > 0


def test_w2_exact_denoise_final_compares_with_data():
    """With denoise_final the output is the Tweedie map of the t_min law, judged against the data
    N(1, 0.25): check against that map applied by hand to the plain output law."""
    problem = get_problem("gauss-1d")
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 20, problem.t_min, problem.t_max)
    prior = problem.marginal(problem.t_max)
    law = output_law(make_solver("ddim"), model, times, prior.means[0], prior.covs[0])
    alpha, sigma = problem.coefficients(problem.t_min)
    gain = alpha * 0.25 / (alpha**2 * 0.25 + sigma**2)  # Tweedie: x0 = 1 + gain (x - alpha)
    mean, std = 1 + gain * (float(law.mean[0]) - alpha), gain * float(law.cov[0, 0]) ** 0.5
    want = ((mean - 1) ** 2 + (std - 0.5) ** 2) ** 0.5
    got = w2_exact(problem, make_solver("ddim"), model, times, denoise_final=True)
    assert got == pytest.approx(want, rel=1e-8)
    assert got != pytest.approx(w2_exact(problem, make_solver("ddim"), model, times), rel=1e-3)


def test_path_rms():
    x = torch.zeros(4, 2, dtype=torch.float64)
    y = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert path_rms(x, y) == pytest.approx(2.5)  # sqrt(25 / 4)


def test_ode_reference_self_check_order_and_cache(tmp_path):
    problem = get_problem("ring-8")
    model = analytic_model(problem)
    x_T = prior_sample(problem, 100, seed=1)
    r32 = reference(problem, model, x_T, 1, steps=32)
    r64 = reference(problem, model, x_T, 1, steps=64)
    # error estimates path-rms(x_N, x_2N) fall like RK4's h^4
    assert r32.error / r64.error == pytest.approx(16, rel=0.25)
    assert path_rms(r32.x, r64.x) < r32.error  # the estimate bounds the 2N run's real error
    assert reference(problem, model, x_T, 1, steps=64) is r64  # in-memory cache
    disk = reference(problem, model, x_T, 1, steps=16, cache_dir=tmp_path)
    assert list(tmp_path.glob("reference-*.pt"))
    metrics_ref = metrics.reference_for(problem, model, x_T, 1, None, steps=16, cache_dir=tmp_path)
    assert torch.equal(disk.x, metrics_ref.x)
    tight = reference(problem, model, x_T, 1, steps=16, tol=1e-7)
    assert tight.error <= 1e-7 and tight.steps >= 128
    if "rk4" in names():  # a registered solver by name agrees with the built-in integrator
        named = reference(problem, model, x_T, 1, method="rk4", steps=256)
        assert path_rms(named.x, r64.x) < 1e-4


def test_sde_reference_uses_the_same_brownian_path():
    problem = get_problem("gauss-1d")
    model = analytic_model(problem)
    x_T = prior_sample(problem, 200, seed=2)
    em = make_solver("euler-maruyama")
    ref = reference(problem, model, x_T, 5, em, steps=256, grid="uniform")
    other_path = reference(problem, model, x_T, 6, em, steps=256, grid="uniform")
    assert ref.error < 0.05
    assert path_rms(ref.x, other_path.x) > 10 * ref.error  # a different path ends elsewhere
    same = reference(problem, model, x_T, 99, em, steps=256, grid="uniform", noise_seed=5)
    assert torch.equal(same.x, ref.x)


REVERSE_SDE_SOLVERS = ["euler-maruyama", "ddpm", "ddpm[variance=beta]", "ddim-eta", "lambda-sde[lam=1.0]",
                       "euler-ancestral", "dpm2-ancestral", "dpmpp-2s-ancestral", "dpmpp-sde", "dpmpp-2m-sde",
                       "dpmpp-3m-sde", "exp-sde"]


def test_sde_limits_are_declared_where_proven():
    limits = {name: make_solver(name).sde_limit for name in names() if make_solver(name).stochastic}
    declared = {s.split("[")[0] for s in REVERSE_SDE_SOLVERS} - {"lambda-sde"}  # lambda-sde: lam = 1 only
    assert {n for n, lim in limits.items() if lim == "reverse-sde"} == declared
    for other in ("lambda-sde", "pc-langevin", "ddim-eta[eta=0.5]", "dpmpp-sde[eta=0.5]",
                  "euler-ancestral[s_noise=1.1]"):
        assert make_solver(other).sde_limit is None
    assert make_solver("ddim").sde_limit is None
    # EDM's churn SDE: both variants name the Heun variant with their churn settings
    assert limits["edm-stochastic"] == limits["edm-stochastic-euler"] == "edm-stochastic"
    assert make_solver("edm-stochastic-euler[s_churn=10]").sde_limit == "edm-stochastic[s_churn=10]"
    assert make_solver("edm-stochastic[s_churn=10]").sde_limit != limits["edm-stochastic"]


def test_edm_churn_samplers_converge_to_one_shared_reference():
    """edm-stochastic-euler and edm-stochastic share the fine edm-stochastic run on the same path; both
    converge to it (median distance falls at least 2.5x per 4x steps; measured 3.1x and 4.3x)."""
    problem = problem_from_dict({"weights": [0.5, 0.5], "means": [[-1.5], [1.5]], "vars": [[0.1], [0.1]]},
                                "bimodal-1d")
    model = analytic_model(problem)
    x_T = prior_sample(problem, 64, seed=3)
    ref = reference(problem, model, x_T, 11, make_solver("edm-stochastic-euler"), steps=2048)
    assert ref.method == "edm-stochastic" and ref.order == 2
    assert ref is reference(problem, model, x_T, 11, make_solver("edm-stochastic"), steps=2048)
    for name in ("edm-stochastic-euler", "edm-stochastic"):
        solver = make_solver(name)

        def median_distance(steps: int, solver=solver) -> float:
            times = make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)
            x = sample(solver, model, times, x_T.clone(), brownian_noise(problem, 11)).x
            return float((x - ref.x).abs().flatten().median())

        coarse, fine = median_distance(128), median_distance(512)
        assert fine < coarse / 2.5, (name, coarse, fine)


@pytest.mark.parametrize("name", REVERSE_SDE_SOLVERS)
def test_reverse_sde_solvers_converge_to_the_shared_reference(name):
    """Every solver declaring the reverse SDE as its pathwise limit converges on the same Brownian
    path to a fine exp-sde run (the shared reference): the median distance falls at least 2.5x per
    4x steps (strong order 1 predicts 4x) and ends well below the coarse one."""
    problem = problem_from_dict({"weights": [0.5, 0.5], "means": [[-1.5], [1.5]], "vars": [[0.1], [0.1]]},
                                "bimodal-1d")
    model = analytic_model(problem)
    x_T = prior_sample(problem, 64, seed=3)
    solver = make_solver(name)
    ref = reference(problem, model, x_T, 11, solver, steps=2048)
    assert ref.method == "exp-sde" and ref.steps == 4096
    assert ref is reference(problem, model, x_T, 11, make_solver("exp-sde"), steps=2048)  # one per path

    def median_distance(steps: int) -> float:
        times = make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)
        x = sample(solver, model, times, x_T.clone(), brownian_noise(problem, 11)).x
        return float((x - ref.x).abs().flatten().median())

    coarse, fine = median_distance(32), median_distance(128)
    assert fine < coarse / 2.5, (coarse, fine)


def test_a_sampler_without_pathwise_limit_gets_weak_metrics_only(tmp_path):
    """pc-langevin's corrector draws noise independent of the Brownian path: its path metrics are
    skipped with the reason, its weak metrics pair it with the shared reverse-SDE reference (same
    chain as the reverse-SDE solvers); without a corrector it is its predictor, limit included."""
    pc = make_solver("pc-langevin")
    assert not pc.pathwise and pc.sde_limit is None
    bare = make_solver("pc-langevin[corrector_steps=0]")
    assert bare.pathwise and bare.sde_limit == "reverse-sde"
    config = SweepConfig(problems=["mix-2d"], solvers=["pc-langevin", "ddpm"], steps=[8], seeds=[0],
                         samples=200, metrics=["weak-mean", "path-rms"])
    assert len({c.chain for c in plan_cells(config)}) == 1
    rows = {(r["solver"], r["metric"]): r for c in plan_cells(config) for r in run_cell(config, c)}
    skipped = rows[("pc-langevin", "path-rms")]
    assert skipped["status"] == "skipped" and "pathwise limit" in skipped["reason"]
    weak = rows[("pc-langevin", "weak-mean")]
    assert weak["status"] == "ok" and weak["stderr"] > 0
    assert rows[("ddpm", "path-rms")]["status"] == "ok"
