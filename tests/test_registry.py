"""The solver registry: every solver class in the package is registered without a list of modules to
edit; the registry knows nothing of the package but solvers.base (prefixes, entry points and files plug
into it); the explicit Runge-Kutta methods are Butcher tableaus whose samples match hand-written steps
and whose declared orders hold; third-party solvers from entry points and files register and sample."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import solvers
from analytic import get_problem, make_grid
from bench.cli.main import cli
from bench.measure.models import analytic_model
from solvers import Solver, make_solver, names, registry, resolve, sample
from solvers.external import ExternalSolver
from solvers.registry import UnknownSolverError
from solvers.runge_kutta import (
    DOPRI5,
    EULER,
    HEUN,
    MIDPOINT,
    RALSTON,
    RK4,
    ButcherTableau,
    _ExplicitRK,
    _trees,
)
from tests.util import exact_error, prior_sample, slope, within_theory

ROOT = Path(__file__).resolve().parent.parent


# --- registration needs no catalog -------------------------------------------------------------------

def _package_modules() -> list[types.ModuleType]:
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(solvers.__path__, "solvers.")]


def unregistered(modules: list[types.ModuleType], registered: set[type]) -> list[str]:
    """Concrete Solver subclasses defined in `modules` and not registered: private (`_`) bases and the
    external adapters (built per peer name by their prefix) excepted."""
    missing = []
    for module in modules:
        for name, cls in vars(module).items():
            if (not isinstance(cls, type) or not issubclass(cls, Solver) or cls is Solver
                    or cls.__module__ != module.__name__ or name.startswith("_")
                    or issubclass(cls, ExternalSolver) or inspect.isabstract(cls)):
                continue
            if cls not in registered:
                missing.append(f"{module.__name__}.{name}")
    return missing


def test_every_solver_class_is_registered():
    registered = {cls for cls, _ in registry._REGISTRY.values()}
    assert unregistered(_package_modules(), registered) == []


def test_the_registration_check_can_fail():
    fake = types.ModuleType("solvers.fake")

    @dataclass
    class Forgotten(Solver):
        """A solver nobody registered."""

    @dataclass
    class _Base(Solver):
        """A private base: not a solver of its own."""

    Forgotten.__module__ = _Base.__module__ = fake.__name__
    fake.Forgotten, fake._Base = Forgotten, _Base
    assert unregistered([fake], set()) == ["solvers.fake.Forgotten"]


def test_importing_the_package_imports_every_module():
    assert not (ROOT / "solvers" / "catalog.py").exists()
    found = {m.name for m in pkgutil.walk_packages(solvers.__path__, "solvers.")}
    assert {"solvers.runge_kutta", "solvers.external", "solvers.external.diffusers"} <= found
    assert found <= set(sys.modules)


def test_registry_imports_nothing_of_the_package_but_base():
    tree = ast.parse((ROOT / "solvers" / "registry.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert {m for m in imported if m.split(".")[0] == "solvers"} == {"solvers.base"}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(fn)), fn.name


def test_importing_solvers_needs_no_peer_library():
    """The adapters import diffusers / k-diffusion only when an external name is built."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("diffusers", "k_diffusion", "torchsde", "torchdiffeq"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
        import solvers
        from solvers.external import PeerMissingError
        assert "heun" in solvers.names() and "diffusers" not in sys.modules
        try:
            solvers.make_solver("diffusers:DDIMScheduler")
        except PeerMissingError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused: external solvers need diffusers" in out.stdout


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_PREFIXES", dict(registry._PREFIXES))
    monkeypatch.setattr(registry, "_LOADED_ENTRY_POINTS", set(registry._LOADED_ENTRY_POINTS))
    monkeypatch.setattr(registry, "_entry_points_scanned", registry._entry_points_scanned)
    return registry


def test_external_prefixes_are_registered_resolvers(isolated_registry):
    assert {"diffusers:", "kdiff:"} <= set(registry.prefixes())
    built = []

    def make(spec):
        built.append(spec)
        return make_solver("euler")

    registry.register_prefix("toy:", make, lambda spec: [make(spec), make_solver("heun")])
    assert make_solver("toy:anything[k=1]").name == "euler" and built == ["toy:anything[k=1]"]
    assert [s.name for s in resolve("toy:*,ddim")] == ["euler", "heun", "ddim"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_prefix("toy:", make_solver)


# --- explicit Runge-Kutta methods by Butcher tableau -------------------------------------------------

def _hand_written(name: str):
    """The steps euler, heun and rk4 had before they became tableaus (the regression reference)."""

    def euler(model, x, t, t_next):
        return x + (t_next - t) * model(x, t).drift

    def heun(model, x, t, t_next):
        h = t_next - t
        d1 = model(x, t).drift
        d2 = model(x + h * d1, t_next).drift
        return x + 0.5 * h * (d1 + d2)

    def rk4(model, x, t, t_next):
        h = t_next - t
        t_mid = t + 0.5 * h
        k1 = model(x, t).drift
        k2 = model(x + 0.5 * h * k1, t_mid).drift
        k3 = model(x + 0.5 * h * k2, t_mid).drift
        k4 = model(x + h * k3, t_next).drift
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return {"euler": euler, "heun": heun, "rk4": rk4}[name]


@pytest.mark.parametrize("name", ["euler", "heun", "rk4"])
@pytest.mark.parametrize(("problem", "schedule"), [("gauss-aniso-3d", "vp-linear"), ("mix-2d", "edm"),
                                                   ("mix-2d", "vp-cosine")])
def test_tableau_methods_reproduce_the_hand_written_steps(name, problem, schedule):
    problem = get_problem(problem, schedule)
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 10, problem.t_min, problem.t_max)
    x = prior_sample(problem, 32)
    ours = sample(make_solver(name), model, times, x.clone()).x
    ref, step, grid = x.clone(), _hand_written(name), times.tolist()
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        ref = step(model, ref, t, t_next)
    assert float((ours - ref).abs().max()) <= 1e-12 * max(1.0, float(ref.abs().max()))


METADATA = {  # name: (order, nfe_per_step, stages of its tableau)
    "euler": (1, 1, EULER), "heun": (2, 2, HEUN), "midpoint": (2, 2, MIDPOINT), "ralston": (2, 2, RALSTON),
    "rk4": (4, 4, RK4), "dopri5": (5, 6, DOPRI5),
}


@pytest.mark.parametrize("name", sorted(METADATA))
def test_tableau_solvers_declare_their_order_and_cost(name):
    order, nfe, tableau = METADATA[name]
    solver = make_solver(name)
    info = solver.describe()
    assert (solver.order, solver.nfe_per_step, solver.tableau) == (order, nfe, tableau)
    assert tableau.order == order, "the declared order is the tableau's algebraic order"
    assert (info["time_variable"], info["tags"], info["min_steps"]) == ("t", ["ode", "singlestep"], 1)
    assert "HNW I" in info["order_source"] and info["reference"] and len(type(solver).__doc__) > 40
    assert name in {row["name"] for row in json.loads(
        CliRunner().invoke(cli, ["list", "solvers", "--format", "json"]).output)}


def test_old_metadata_is_kept():
    assert make_solver("heun").order_source.startswith("Heun's method / explicit trapezoidal rule")
    assert make_solver("rk4").order_source.startswith("Kutta 1901 classical RK4 (HNW I Table II.1.2")
    assert make_solver("euler").reference == "Song et al. 2021 (score SDE) eq. 13, explicit Euler"
    assert "Dormand & Prince 1980" in make_solver("dopri5").order_source


def test_butcher_tableau_checks_and_order_conditions():
    assert [len(_trees(n)) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]  # rooted trees (HNW I Table II.2.1)
    kutta3 = ButcherTableau(a=((1 / 2,), (-1.0, 2.0)), b=(1 / 6, 2 / 3, 1 / 6), c=(1 / 2, 1.0))
    assert kutta3.order == 3
    assert ButcherTableau(a=((1.0,),), b=(1.0, 0.0), c=(1.0,)).order == 1
    for bad in [dict(a=((1 / 2,),), b=(1.0,), c=(1 / 2,)),  # b too short
                dict(a=((1 / 2,),), b=(0.0, 1.0), c=(1.0,)),  # node is not the row sum
                dict(a=((1 / 2,),), b=(0.5, 0.4), c=(1 / 2,)),  # weights do not sum to 1
                dict(a=((1 / 2, 0.0),), b=(0.0, 1.0), c=(1 / 2,))]:  # not explicit
        with pytest.raises(ValueError):
            ButcherTableau(**bad)


def test_a_new_method_is_a_tableau_and_a_class():
    """A stage with a zero row repeats k_1: this 2-stage tableau is Euler with a wasted call."""

    @dataclass
    class EulerTwice(_ExplicitRK):
        """Euler written as two stages at the same point (test only, not registered)."""

        tableau = ButcherTableau(a=((0.0,),),
                                 b=(1 / 2, 1 / 2),
                                 c=(0.0,))
        order = 1

    solver = EulerTwice()
    assert solver.nfe_per_step == 2 and solver.tableau.order == 1
    assert torch.allclose(_sample_gauss_1d(solver), _euler_reference(), rtol=1e-14, atol=1e-14)


# (solver, schedule, grid, steps): ranges where the local slopes have settled and errors stay above 1e-11
ORDER_CASES = [
    ("midpoint", "vp-linear", "logsnr", (16, 32, 64, 128)),  # local slopes 1.94 1.97 1.98
    ("ralston", "vp-cosine", "logsnr", (16, 32, 64, 128)),  # 2.02 1.97 1.98 (vp-linear: 2.2 -> 2 from above)
    ("ralston", "edm", "karras", (32, 64, 128, 256)),  # 1.91 1.96 1.98
    ("dopri5", "ve", "karras", (16, 32, 64, 128)),  # 5.21 5.11 5.05 (3.1e-10 at 128)
]


@pytest.mark.parametrize(("spec", "schedule", "grid", "steps"), ORDER_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in ORDER_CASES])
def test_new_runge_kutta_orders_hold(spec, schedule, grid, steps):
    errors = [exact_error(spec, "gauss-aniso-3d", n, grid=grid, schedule=schedule) for n in steps]
    assert min(errors) > 1e-11, "round-off range: choose fewer steps"
    observed = slope(list(steps), errors)
    assert abs(observed - make_solver(spec).order) <= 0.15, f"{spec}: observed order {observed:.3f}"
    assert within_theory(spec, observed, schedule, grid, tol=0.15)


@pytest.mark.parametrize("schedule", ["edm", "rectified-flow"])
def test_midpoint_exception_on_affine_schedules(schedule):
    """alpha, sigma affine in t and a Gaussian target: the midpoint rule's h^3 local error vanishes
    (MIDPOINT_AFFINE), so W2 falls at 3; the interval the harness compares with says so."""
    steps = (16, 32, 64, 128)
    observed = slope(list(steps), [exact_error("midpoint", "gauss-aniso-3d", n, schedule=schedule)
                                   for n in steps])
    assert abs(observed - 3) <= 0.1, observed
    assert within_theory("midpoint", observed, schedule, "logsnr", tol=0.1)
    assert not within_theory("midpoint", observed, "vp-linear", "logsnr", tol=0.1)


# --- third-party solvers ------------------------------------------------------------------------------

def _sample_gauss_1d(solver: Solver) -> torch.Tensor:
    problem = get_problem("gauss-1d")
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 8, problem.t_min, problem.t_max)
    return sample(solver, model, times, prior_sample(problem, 16)).x


def _euler_reference() -> torch.Tensor:
    return _sample_gauss_1d(make_solver("euler"))


@dataclass
class PluginEuler(Solver):
    """Explicit Euler on the PF-ODE, as a third-party package would ship it (test plugin)."""

    name = "plugin-euler"
    order = 1
    order_source = "HNW I Thm II.3.6, p = 1"
    reference = "test plugin"

    def step(self, model, x, t, t_next, state, noise):
        return x + (t_next - t) * model(x, t).drift


class FakeEntryPoint:
    def __init__(self, name, value, load):
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def _fake_entry_points(monkeypatch, points):
    def entry_points(**kw):
        assert kw == {"group": registry.ENTRY_POINT_GROUP}
        return points

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_entry_point_classes_and_modules_register(isolated_registry, monkeypatch):
    @dataclass
    class Unnamed(PluginEuler):
        """The same Euler without a `name`: registered under the entry point's name."""

        name = ""

    def module_with_register():
        module = types.ModuleType("fake_plugin_module")

        @registry.register("module-euler")
        @dataclass
        class ModuleEuler(PluginEuler):
            """Registered by its module's decorator when the entry point imports it."""

        module.ModuleEuler = ModuleEuler
        return module

    def broken():
        raise ImportError("no such module")

    _fake_entry_points(monkeypatch, [
        FakeEntryPoint("pe", "tests.test_registry:PluginEuler", lambda: PluginEuler),
        FakeEntryPoint("ep-unnamed", "x:Unnamed", lambda: Unnamed),
        FakeEntryPoint("mod", "fake_plugin_module", module_with_register),
        FakeEntryPoint("bad", "nowhere:Nothing", broken),
    ])
    monkeypatch.setattr(registry, "_entry_points_scanned", False)  # as in a fresh process
    with pytest.warns(UserWarning, match="solver entry point bad = nowhere:Nothing skipped"):
        listed = names()  # the first use loads them
    assert {"plugin-euler", "ep-unnamed", "module-euler"} <= set(listed) and "bad" not in listed
    assert registry.load_entry_points() == []  # each entry point loads once
    reference = _euler_reference()
    for name in ("plugin-euler", "ep-unnamed", "module-euler"):
        (solver,) = resolve(name)
        assert solver.name == name
        assert torch.equal(_sample_gauss_1d(solver), reference)


def test_entry_point_that_is_not_a_solver_is_skipped(isolated_registry, monkeypatch):
    _fake_entry_points(monkeypatch, [FakeEntryPoint("nope", "builtins:dict", lambda: dict)])
    with pytest.warns(UserWarning, match="not a subclass of solvers.Solver"):
        assert registry.load_entry_points() == []


MY_FILE = '''
from dataclasses import dataclass

from solvers import Solver


@dataclass
class MyEuler(Solver):
    """Explicit Euler on the PF-ODE from a file outside the package."""

    scale: float = 1.0
    order = 1
    order_source = "HNW I Thm II.3.6, p = 1"
    reference = "test file"

    def step(self, model, x, t, t_next, state, noise):
        return x + self.scale * (t_next - t) * model(x, t).drift


@dataclass
class Named(MyEuler):
    """The same, registered under its `name`."""

    name = "file-euler"


class NotASolver:
    pass
'''


def test_solver_from_a_file(isolated_registry, tmp_path):
    path = tmp_path / "my.py"
    path.write_text(MY_FILE)
    reference = _euler_reference()
    (solver,) = resolve(f"{path}:MyEuler")
    assert solver.name == solver.label == "my.MyEuler" and "my.MyEuler" in names()
    assert torch.equal(_sample_gauss_1d(solver), reference)
    assert make_solver(f"{path}:MyEuler[scale=2.0]").label == "my.MyEuler[scale=2.0]"
    assert make_solver("my.MyEuler").name == "my.MyEuler"  # registered: later lookups by label work
    (named,) = resolve(f" {path}:Named ")
    assert named.name == "file-euler" and "file-euler" in names()
    assert torch.equal(_sample_gauss_1d(named), reference)
    assert resolve(f"{path}:MyEuler")[0].name == "my.MyEuler"  # a second resolve reuses the module


def test_bad_solver_files_give_one_line_errors(isolated_registry, tmp_path):
    path = tmp_path / "my.py"
    path.write_text(MY_FILE)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    cases = [(f"{tmp_path / 'none.py'}:MyEuler", "not found"),
             (f"{path}:Missing", "defines no class 'Missing'"),
             (f"{path}:NotASolver", "is not a subclass of solvers.Solver"),
             (f"{broken}:X", "cannot import solver file .*RuntimeError: boom")]
    for spec, message in cases:
        with pytest.raises(UnknownSolverError, match=message) as info:
            resolve(spec)
        assert "\n" not in str(info.value)


def test_cli_runs_a_solver_from_a_file(isolated_registry, tmp_path):
    path = tmp_path / "my.py"
    path.write_text(MY_FILE)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "--problem", "gauss-1d", "--solvers", f"{path}:MyEuler,euler",
                                      "--steps", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv").set_index("solver")
    assert float(rows.loc["my.MyEuler", "value"]) == float(rows.loc["euler", "value"])
    bad = CliRunner().invoke(cli, ["run", "--problem", "gauss-1d", "--solvers", f"{path}:Missing",
                                   "--steps", "4", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "defines no class 'Missing'" in str(bad.exception)  # main: exit 2
