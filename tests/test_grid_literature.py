"""The literature's grids reproduce what their sources state, and grid files round-trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from analytic import get_problem, get_schedule, make_grid
from analytic.grid_files import read_grid_file, write_grid_file
from analytic.grids import GridError, data_scale
from analytic.targets import GaussianMixture


def test_ays_gauss_is_theorem_3_1_in_sigma():
    """Sabour et al. 2024 Thm 3.1: sigma_i = c tan(lerp(arctan(sigma_max/c), arctan(sigma_min/c), i/N)),
    recomputed here in numpy on EDM's schedule (sigma~ = t)."""
    sched = get_schedule("edm")
    c, n = 0.5, 10
    times = make_grid("ays-gauss[c=0.5]", sched, n, 0.002, 80.0)
    ramp = np.arange(n + 1) / n
    expected = c * np.tan((1 - ramp) * np.arctan(80.0 / c) + ramp * np.arctan(0.002 / c))
    np.testing.assert_allclose(times.numpy(), expected, rtol=1e-12)


def test_ays_gauss_on_vp_equidistributes_the_angle():
    sched = get_schedule("vp-linear")
    times = make_grid("ays-gauss[c=1.5]", sched, 12, 1e-3, 1.0)
    angles = torch.atan(sched.sigma_tilde(times) / 1.5)
    step = torch.full((12,), float(angles[1] - angles[0]), dtype=torch.float64)
    torch.testing.assert_close(torch.diff(angles), step, rtol=1e-9, atol=1e-12)


def test_ays_gauss_default_c_is_the_data_scale():
    problem = get_problem("gauss-aniso-3d")
    c = data_scale(problem.target)
    assert c == pytest.approx(math.sqrt(float(torch.trace(problem.target.cov())) / 3))
    torch.testing.assert_close(
        make_grid("ays-gauss", problem.schedule, 8, problem.t_min, problem.t_max, target=problem.target),
        make_grid(f"ays-gauss[c={c!r}]", problem.schedule, 8, problem.t_min, problem.t_max))


def _gaussian(variances: list[float]) -> GaussianMixture:
    cov = torch.diag(torch.tensor(variances, dtype=torch.float64))[None]
    return GaussianMixture(torch.ones(1), torch.zeros(1, len(variances)), cov)


def test_tangent_law_reduces_to_ays_for_isotropic_data():
    sched = get_schedule("vp-cosine")
    tan = make_grid("tangent", sched, 9, sched.t_min, sched.t_max, target=_gaussian([0.36] * 4))
    ays = make_grid("ays-gauss[c=0.6]", sched, 9, sched.t_min, sched.t_max)
    torch.testing.assert_close(tan, ays, rtol=1e-10, atol=1e-12)


def test_tangent_law_sits_between_the_extreme_eigenvalues():
    """Equidistributing the mean angle: the grid lies between the AYS grids of the smallest and the
    largest eigenvalue (zero-variance directions ignored)."""
    sched = get_schedule("vp-linear")
    tan = make_grid("tangent", sched, 10, 1e-3, 1.0, target=_gaussian([0.01, 4.0, 0.0]))
    lo = make_grid("ays-gauss[c=0.1]", sched, 10, 1e-3, 1.0)
    hi = make_grid("ays-gauss[c=2.0]", sched, 10, 1e-3, 1.0)
    inner = slice(1, -1)
    between = ((tan[inner] - lo[inner]) * (tan[inner] - hi[inner]) <= 0).all()
    assert bool(between) and not torch.allclose(tan, lo) and not torch.allclose(tan, hi)


def test_grid_file_round_trip(tmp_path):
    problem = get_problem("gauss-aniso-3d")
    times = make_grid("karras", problem.schedule, 7, problem.t_min, problem.t_max)
    path = write_grid_file(tmp_path / "g.json", times, problem.schedule.name, solver="ddim", nfe=7)
    doc = json.loads(path.read_text())
    assert doc["steps"] == 7 and doc["solver"] == "ddim"
    got = make_grid(f"file:{path}", problem.schedule, 7, problem.t_min, problem.t_max)
    assert torch.equal(got, times)
    with pytest.raises(GridError, match="has 7 steps; this run needs 5"):
        make_grid(f"file:{path}", problem.schedule, 5, problem.t_min, problem.t_max)
    with pytest.raises(GridError, match="schedule"):
        read_grid_file(path, "edm")
    with pytest.raises(GridError, match="first time"):
        make_grid(f"file:{path}", problem.schedule, 7, problem.t_min, 0.5)


@pytest.mark.parametrize("content, message", [
    ("{", "readable JSON"), ('{"times": [1.0]}', "at least two"), ('{"times": [0.1, 0.5]}', "decreasing"),
    ('{"times": [1.0, "x"]}', "numbers"), ('[1, 0.5]', "list"),
])
def test_bad_grid_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(GridError, match=message):
        read_grid_file(path)
    with pytest.raises(GridError, match="does not exist"):
        read_grid_file(tmp_path / "missing.json")
