"""Tracked accuracy: exact W2 at 10 and 50 steps and the measured order per solver on
gauss-aniso-3d (exact output law, no sampling error), path-rms at 20 steps on mix-2d."""

from __future__ import annotations

from benchmarks import exact_w2, get_problem, is_adaptive, make_solver, observed_order, path_rms, solver_names

PATH_RMS_N = 500


def _exact_law_solver(name: str):
    solver = make_solver(name)
    if is_adaptive(solver) or not solver.affine:
        raise NotImplementedError(f"{name}: the exact law needs a fixed-grid affine solver")
    return solver


class TrackW2Exact:
    params = [solver_names(), [10, 50]]
    param_names = ["solver", "steps"]
    unit = "W2 [data units]"
    timeout = 120.0

    def setup(self, name: str, steps: int) -> None:
        self.solver = _exact_law_solver(name)
        self.problem = get_problem("gauss-aniso-3d")

    def track_w2_exact(self, name: str, steps: int) -> float:
        return exact_w2(self.solver, self.problem, steps)


class TrackOrder:
    """Least-squares slope of log W2-exact against log steps over 32..256 steps."""

    params = [solver_names()]
    param_names = ["solver"]
    unit = "order"
    timeout = 300.0

    def setup(self, name: str) -> None:
        self.solver = _exact_law_solver(name)
        self.problem = get_problem("gauss-aniso-3d")

    def track_order(self, name: str) -> float:
        return observed_order(self.solver, self.problem)


class TrackPathRms:
    """RMS distance to a high-accuracy solution from the same x_T (and Brownian path), 20 steps."""

    params = [solver_names()]
    param_names = ["solver"]
    unit = "RMS [data units]"
    timeout = 300.0

    def setup(self, name: str) -> None:
        self.solver = make_solver(name)
        self.problem = get_problem("mix-2d")

    def track_path_rms(self, name: str) -> float:
        return path_rms(self.solver, self.problem, 20, PATH_RMS_N)
