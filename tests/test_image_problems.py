"""Exact targets fitted to real images: digits-* and fmnist-* (analytic/image_problems.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic import describe_problem, get_problem, make_grid, problem_names
from analytic.datasets import FASHION_ROOT, fashion_mnist_uint8
from analytic.problems import ProblemError
from analytic.targets import GaussianMixture, IsotropicMixture
from bench.measure.metrics import w2_exact
from bench.measure.models import analytic_model
from solvers import make_solver
from tests.requires import needs_fashion_mnist
from tests.util import eigen_recursion_w2

IMAGE_PROBLEMS = ["digits-gauss", "digits-gmm", "digits-empirical", "fmnist-gauss", "fmnist-gmm",
                  "fmnist-empirical"]


def test_the_six_image_problems_are_listed_with_descriptions() -> None:
    assert set(IMAGE_PROBLEMS) <= set(problem_names())
    info = describe_problem("fmnist-gauss")
    assert (info["dim"], info["components"], info["gaussian"]) == (1024, 1, True)
    assert describe_problem("digits-empirical[n=100]")["components"] == 100
    assert describe_problem("digits-gmm")["components"] == 10


def test_bad_image_problem_names() -> None:
    with pytest.raises(ProblemError, match="only -empirical takes"):
        get_problem("digits-gauss[n=3]")
    with pytest.raises(ProblemError, match="n must be in 1..1797"):
        get_problem("digits-empirical[n=5000]")


def _ddim_recursion_w2(mean: np.ndarray, cov: np.ndarray, schedule, times: torch.Tensor) -> float:
    """Exact W2 of DDIM from d independent 1-D problems: the covariance diagonalised with numpy, then
    tests.util.eigen_recursion_w2 (the DDIM update per direction, y' = a y + b with the exact eps)."""
    lam, u = np.linalg.eigh(cov)
    lam, m = torch.from_numpy(np.maximum(lam, 0.0)), torch.from_numpy(u.T @ mean)
    return eigen_recursion_w2("ddim", lam, m, schedule, times)


def _fitted(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = images.reshape(len(images), -1).astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False, bias=True)


@needs_fashion_mnist
def test_w2_exact_on_fmnist_gauss_equals_1024_independent_1d_problems() -> None:
    problem = get_problem("fmnist-gauss")
    mean, cov = _fitted(fashion_mnist_uint8(FASHION_ROOT).astype(np.float64) / 127.5 - 1.0)
    assert problem.dim == 1024 and problem.image_shape == (1, 32, 32)
    assert np.count_nonzero(np.diag(cov) == 0) >= 32 * 32 - 28 * 28  # the 2-pixel padding is constant
    times = make_grid("uniform", problem.schedule, 10, problem.t_min, problem.t_max)
    got = w2_exact(problem, make_solver("ddim"), analytic_model(problem), times)
    assert got == pytest.approx(_ddim_recursion_w2(mean, cov, problem.schedule, times), rel=1e-8)


def test_w2_exact_on_digits_gauss_equals_64_independent_1d_problems() -> None:
    from sklearn.datasets import load_digits

    problem = get_problem("digits-gauss", "vp-cosine")
    mean, cov = _fitted(load_digits().images / 8.0 - 1.0)
    times = make_grid("logsnr", problem.schedule, 7, problem.t_min, problem.t_max)
    got = w2_exact(problem, make_solver("ddim"), analytic_model(problem), times)
    assert got == pytest.approx(_ddim_recursion_w2(mean, cov, problem.schedule, times), rel=1e-8)


@pytest.mark.parametrize("solver", ["heun", "dpmpp-2m", "ddpm", "dpmpp-2m-sde", "edm-stochastic"])
def test_eigenbasis_probes_equal_probing_every_direction(solver: str) -> None:
    """w2-exact's 2 + draws eigenbasis probes against the 1 + d (1 + draws) general probes."""
    problem = get_problem("digits-gauss")
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 6, problem.t_min, problem.t_max)
    exact = problem.marginal(float(times[0]))
    fast = w2_exact(problem, make_solver(solver), model, times)
    general = w2_exact(problem, make_solver(solver), model, times, prior=(exact.means[0], exact.covs[0]))
    assert fast == pytest.approx(general, rel=1e-9)


def test_gmm_is_one_gaussian_per_class_with_class_frequencies() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    target = get_problem("digits-gmm").target
    assert isinstance(target, GaussianMixture) and target.k == 10
    freq = np.bincount(bunch.target) / len(bunch.target)
    np.testing.assert_allclose(target.weights.numpy(), freq, rtol=1e-12)
    x3 = bunch.images[bunch.target == 3].reshape(-1, 64) / 8.0 - 1.0
    np.testing.assert_allclose(target.means[3].numpy(), x3.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(target.covs[3].numpy(), np.cov(x3, rowvar=False, bias=True), atol=1e-12)


def test_empirical_target_is_the_first_n_images_as_point_masses() -> None:
    from sklearn.datasets import load_digits

    target = get_problem("digits-empirical[n=50]").target
    assert isinstance(target, IsotropicMixture) and target.k == 50 and target.var == 0.0
    np.testing.assert_array_equal(target.means.numpy(), load_digits().images[:50].reshape(50, 64) / 8.0 - 1.0)


@pytest.mark.parametrize("var", [0.0, 0.3])
def test_isotropic_mixture_equals_the_general_mixture(var: float) -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(7, 5, generator=g, dtype=torch.float64)
    weights = torch.rand(7, generator=g, dtype=torch.float64)
    weights /= weights.sum()
    iso = IsotropicMixture(weights, means, var)
    eye = torch.eye(5, dtype=torch.float64).expand(7, 5, 5)
    general = GaussianMixture(weights, means, (var + 1e-300) * eye)
    x = torch.randn(11, 5, generator=g, dtype=torch.float64)
    for alpha, sigma in ((0.9, 0.4), (0.5, 0.8)):
        for fn in ("score", "eps", "denoise", "log_prob", "responsibilities"):
            want = getattr(general, fn)(x, alpha, sigma)
            torch.testing.assert_close(getattr(iso, fn)(x, alpha, sigma), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(iso.noised(0.5, 0.8).cov(), general.noised(0.5, 0.8).cov())


def test_empirical_score_is_the_gradient_of_its_log_density() -> None:
    target = get_problem("digits-empirical[n=200]").target
    x = target.sample(16, torch.Generator().manual_seed(1), 0.8, 0.3).requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(x, 0.8, 0.3).sum(), x)
    torch.testing.assert_close(target.score(x.detach(), 0.8, 0.3), grad, rtol=1e-10, atol=1e-10)


def test_image_problems_take_any_schedule() -> None:
    problem = get_problem("digits-gmm", "ddpm-discrete")
    assert problem.schedule.name.startswith("ddpm-discrete") and problem.image_shape == (1, 8, 8)


def test_plot_draws_sample_grids_for_image_problems(tmp_path) -> None:
    from click.testing import CliRunner

    from bench.cli.main import cli
    from bench.report.image_samples import sample_grids
    from bench.report.results import load_results

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--problem", "digits-gauss", "--solvers", "ddim,dpmpp-2m",
                                      "--nfe", "5,10", "--seeds", "0", "--jobs", "1", "--samples", "20",
                                      "--summary", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    paths = sample_grids(load_results(out).rows, tmp_path / "figures")
    names = sorted(p.name for p in paths)
    assert names == ["samples-digits-gauss-nfe10.png", "samples-digits-gauss-nfe5.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_score_throughput_on_an_image_problem() -> None:
    from bench.studies.speed import image_score_throughput

    res = image_score_throughput("digits-gmm", n=128, repeats=1)
    assert res["evals_per_s"] > 0 and res["efficiency"] > 0 and res["gemm_gflops"] > 0
