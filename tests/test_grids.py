"""Time grids are pure functions with exact end points and the spacing they promise."""

from __future__ import annotations

import pytest
import torch

from analytic import GRIDS, SCHEDULES, get_problem, get_schedule, make_grid
from analytic.grids import GridError

TARGET = get_problem("gauss-aniso-3d").target


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_end_points_and_monotone(grid, schedule):
    sched = get_schedule(schedule)
    for steps in (1, 4, 37):
        times = make_grid(grid, sched, steps, sched.t_min, sched.t_max, target=TARGET)
        assert times.dtype == torch.float64 and len(times) == steps + 1
        assert times[0] == sched.t_max and times[-1] == sched.t_min
        assert (torch.diff(times) < 0).all()


def test_pure_function():
    sched = get_schedule("vp-linear")
    a = make_grid("karras", sched, 10, 1e-3, 1.0)
    b = make_grid("karras", sched, 10, 1e-3, 1.0)
    assert torch.equal(a, b)


def test_logsnr_grid_is_uniform_in_log_snr():
    sched = get_schedule("vp-cosine")
    times = make_grid("logsnr", sched, 20, sched.t_min, sched.t_max)
    lam = sched.log_snr(times)
    torch.testing.assert_close(torch.diff(lam), torch.full((20,), float(lam[1] - lam[0]),
                                                            dtype=torch.float64), rtol=1e-8, atol=1e-10)


def test_karras_on_edm_matches_eq5():
    sched = get_schedule("edm")
    times = make_grid("karras", sched, 18, 0.002, 80.0, rho=7.0)
    ramp = torch.linspace(0, 1, 19, dtype=torch.float64)
    expected = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(times, expected, rtol=1e-12, atol=1e-12)


def test_quadratic_and_poly():
    sched = get_schedule("vp-linear")
    q = make_grid("quadratic", sched, 4, 0.0 + 1e-3, 1.0)
    torch.testing.assert_close(q[2], torch.tensor(1e-3 + (1 - 1e-3) * 0.25, dtype=torch.float64))
    p1 = make_grid("poly", sched, 8, 1e-3, 1.0, p=1.0)
    torch.testing.assert_close(p1, make_grid("uniform", sched, 8, 1e-3, 1.0))


def test_bad_grid_inputs():
    sched = get_schedule("vp-linear")
    with pytest.raises(GridError, match="valid"):
        make_grid("nope", sched, 4, 1e-3, 1.0)
    with pytest.raises(GridError, match="steps"):
        make_grid("uniform", sched, 0, 1e-3, 1.0)
    with pytest.raises(GridError, match="key=number"):
        make_grid("karras[rho]", sched, 4, 1e-3, 1.0)
    with pytest.raises(GridError, match="needs c"):
        make_grid("ays-gauss", sched, 4, 1e-3, 1.0)
    with pytest.raises(GridError, match="rho"):
        make_grid("logsnr[rho=3]", sched, 4, 1e-3, 1.0)
