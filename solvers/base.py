"""The solver protocol: a small class with declared order, NFE per step, stochasticity and tags,
and one `step`. Multistep memory lives in an explicit `State`; noise comes from a `NoiseSource`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from solvers.model import Model, ScheduleLike
from solvers.noise import NoiseSource


@dataclass
class State:
    """What a solver may remember between steps. `i` indexes the step t = times[i] -> times[i+1]."""

    times: Tensor
    i: int = 0
    history: list = field(default_factory=list)  # solver-defined, newest last
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def steps_left(self) -> int:
        """Steps remaining including the current one."""
        return self.steps - self.i

    def remember(self, item: Any, keep: int) -> None:
        self.history.append(item)
        del self.history[:-keep]


REVERSE_SDE = "reverse-sde"


@dataclass(frozen=True)
class OrderException:
    """A proven reason for slopes above the implementation's asymptotic order: where every condition
    in `when` holds (none: always), the global error is A h^low + B h^high with A provably tiny (a
    warm-up step at high noise, a cancellation on Gaussian targets), so slopes anywhere in
    [low, high] are what the theory predicts at practical N. Conditions: "gaussian" (a single
    Gaussian target), "grid=<name>", "schedule=<name>"."""

    when: tuple[str, ...]
    high: float
    note: str


@dataclass
class Solver:
    """Base class. Subclasses are dataclasses whose fields are the solver's parameters.

    Declared orders are theorems, never measurements (`order_source` cites where each is proven):
    `order` is the nominal global order of the method (weak order for stochastic solvers);
    `strong_order` the mean-square (pathwise) order, required for every stochastic solver;
    `order_cap` the asymptotic global order this implementation provably reaches when it is below
    `order` (warm-up steps of lower order, fixed Adams-Bashforth weights on non-uniform grids), with
    `order_note` giving the derivation; `order_exceptions` the proven reasons for higher slopes at
    practical N (a warm-up cap's constant is tiny, so such solvers carry an unconditional one up to
    `order`). bench/measure/theory.py turns these into the interval a measured order is compared with.
    Other class attributes: `nfe_per_step`, `stochastic`, `tags` (e.g. "singlestep", "multistep",
    "adaptive", "exponential", "kdiff"), `min_steps`, `time_variable` and `reference` (paper and
    equation of the method). `affine`: the step is affine in (x, noise) whenever the model is affine
    (false for rules such as step sizes from state norms); the exact-law metric needs it.
    Parameterised solvers may set these per instance in `__post_init__`. The registry sets `name`.
    """

    name: ClassVar[str] = ""
    order: ClassVar[float] = 1
    strong_order: ClassVar[float | None] = None
    order_cap: ClassVar[float | None] = None
    order_note: ClassVar[str] = ""
    order_source: ClassVar[str] = ""
    order_exceptions: ClassVar[tuple[OrderException, ...]] = ()
    nfe_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False
    tags: ClassVar[frozenset[str]] = frozenset({"singlestep"})
    min_steps: ClassVar[int] = 1
    affine: ClassVar[bool] = True
    time_variable: ClassVar[str] = "t"
    reference: ClassVar[str] = ""

    def init_state(self, x: Tensor, times: Tensor) -> State:
        return State(times=times)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        raise NotImplementedError

    def nfe(self, steps: int) -> int:
        """Model calls for `steps` steps (adaptive solvers: None, counted at run time)."""
        return steps * self.nfe_per_step

    @property
    def params(self) -> dict[str, Any]:
        """The solver's parameters (the dataclass fields) as recorded in result rows."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @property
    def label(self) -> str:
        """CLI spelling: name plus the parameters that differ from the registered defaults."""
        fixed = getattr(self, "_fixed", {})
        changed = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name in fixed:
                continue
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            changed[f.name] = value
        if not changed:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in changed.items())}]"

    @property
    def sde_limit(self) -> str | None:
        """The SDE a stochastic solver converges to pathwise as h -> 0 on the Brownian path it is
        driven by: REVERSE_SDE where the step is a consistent strong discretisation of the reverse SDE
        dx = [f x - g^2 score] dt + g dW (Anderson 1982), None where it is another SDE or has no
        pathwise limit (its own fine run is then its reference). Solvers with the same limit share
        one pathwise reference per problem and Brownian path (bench/measure/reference.py)."""
        return None

    @property
    def kind(self) -> str:
        return "sde" if self.stochastic else "ode"

    @property
    def family(self) -> str:
        """The family figures and tables group solvers by: adaptive, sde, multistep or ode-singlestep."""
        tags = self.all_tags
        if "adaptive" in tags:
            return "adaptive"
        if self.stochastic:
            return "sde"
        return "multistep" if "multistep" in tags else "ode-singlestep"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "order": self.order,
            "strong_order": self.strong_order,
            "order_cap": self.order_cap,
            "order_note": self.order_note,
            "order_source": self.order_source,
            "order_exceptions": [dataclasses.asdict(e) for e in self.order_exceptions],
            "stochastic": self.stochastic,
            "nfe_per_step": self.nfe_per_step,
            "min_steps": self.min_steps,
            "affine": self.affine,
            "tags": sorted(self.all_tags),
            "time_variable": self.time_variable,
            "params": self.params,
            "reference": self.reference,
        }

    @property
    def all_tags(self) -> frozenset[str]:
        return self.tags | {self.kind}


def coeffs(schedule: ScheduleLike, t: float) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) at t as Python floats."""
    alpha, sigma, _, _, lam = schedule.scalars(t)
    return alpha, sigma, lam
