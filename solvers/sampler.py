"""The sampler protocol: whatever turns x_T into samples (our solvers through the one loop, a
diffusers scheduler, a k-diffusion function) declares its metadata and has one
`run(model, times, x, noise) -> SampleResult`. Measurements (exact laws, references, NFE) take any
Sampler; `noise_source` says which noise a run takes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from solvers.model import Model
from solvers.noise import NoiseSource

Progress = Callable[[int, int], None]
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
class SampleResult:
    """One run from x_T: output `x`, counted model calls `nfe`, `steps`, `wall_time`, and where the
    output belongs: `t_end` is its time (0.0: sigma = 0, the data), `t_last` the time of the last
    model call, `final_denoise` whether the output is that call's x0 prediction. `tweedie_law`: its
    exact counterpart is the law of E[x0 | x_{t_last}] for x_{t_last} exact (a library's own final
    denoise); otherwise the law at t_end (the loop's requested denoise_final: the data law)."""

    x: Tensor
    nfe: int
    steps: int
    wall_time: float
    t_end: float
    t_last: float
    final_denoise: bool = False
    tweedie_law: bool = False

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.x).all())


@dataclass
class Sampler(ABC):
    """Base class: declared metadata and `run`.

    Declared orders are theorems, never measurements (`order_source` cites where each is proven):
    `order` is the nominal global order of the method (weak order for stochastic samplers);
    `strong_order` the mean-square (pathwise) order, required for every stochastic one;
    `order_cap` the asymptotic global order the implementation provably reaches when it is below
    `order` (warm-up steps of lower order, fixed Adams-Bashforth weights on non-uniform grids), with
    `order_note` giving the derivation; `order_exceptions` the proven reasons for higher slopes at
    practical N (a warm-up cap's constant is tiny, so such solvers carry an unconditional one up to
    `order`). bench/measure/theory.py turns these into the interval a measured order is compared with.
    Other attributes: `nfe_per_step`, `stochastic`, `tags` (e.g. "singlestep", "multistep",
    "adaptive", "exponential", "kdiff", "external"), `min_steps`, `time_variable` and `reference`
    (paper and equation of the method). `affine`: True where the run is provably affine in (x, noise)
    whenever the model is affine, False where it is not (step sizes from state norms), None where
    unknown (a library: the exact-law prober checks it with mirrored probes). `noise_kind`: how the
    draws a run asks its NoiseSource for relate, for samplers that ask per library call ("iid",
    "brownian" in the library's noise time); None for our solvers (each draw an independent normal
    of the step) and for samplers that draw their own. Parameterised samplers may set these per
    instance. `failures`: the exceptions a run raises for a failed sample (recorded as diverged)
    rather than a bug. The registry sets `name`.
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
    affine: ClassVar[bool | None] = True
    noise_kind: ClassVar[str | None] = None
    time_variable: ClassVar[str] = "t"
    reference: ClassVar[str] = ""
    failures: ClassVar[tuple[type[Exception], ...]] = (RuntimeError, ValueError, ArithmeticError)

    @abstractmethod
    def run(self, model: Model, times: Tensor, x: Tensor, noise: NoiseSource | None = None, *,
            denoise_final: bool = False, progress: Progress | None = None) -> SampleResult:
        """Sample from x (drawn by the caller at times[0]) along the decreasing grid `times`,
        drawing from `noise` (see `noise_source`). `denoise_final` asks the loop for a final Tweedie
        step; libraries end where they end (reported in the result)."""

    def noise_source(self, seed: int, t_lo: float, t_hi: float) -> NoiseSource | None:
        """The noise of run `seed` on a problem over [t_lo, t_hi]; None for deterministic samplers."""
        return None

    def nfe(self, steps: int) -> int:
        """Model calls for `steps` steps (adaptive solvers: counted at run time)."""
        return steps * self.nfe_per_step

    def steps_for_nfe(self, budget: int) -> int | None:
        """The most steps whose NFE fits in `budget` (None when even min_steps does not): how every
        study places a sampler at an NFE budget."""
        fits = [s for s in range(self.min_steps, budget + 1) if self.nfe(s) <= budget]
        return max(fits) if fits else None

    @property
    def params(self) -> dict[str, Any]:
        """The parameters (the dataclass fields) as recorded in result rows."""
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
        """The SDE a stochastic sampler converges to pathwise as h -> 0 on the Brownian path it is
        driven by: REVERSE_SDE where the step is a consistent strong discretisation of the reverse SDE
        dx = [f x - g^2 score] dt + g dW (Anderson 1982); for another SDE shared by several samplers,
        the spec of the registered solver whose fine run integrates it (EDM's churn SDE:
        "edm-stochastic" with the same churn settings); None where no other sampler shares the limit
        or there is no pathwise limit (its own fine run is then its reference). Samplers with the
        same limit share one pathwise reference per problem and Brownian path
        (bench/measure/reference.py)."""
        return None

    @property
    def pathwise(self) -> bool:
        """False where a stochastic sampler draws noise independent of its driving Brownian path
        (`noise.extra`: Langevin correctors), so that no fine run of it is a pathwise limit: its path
        metrics are skipped and its weak metrics pair it with the reverse-SDE reference, which only
        needs the right law."""
        return True

    @property
    def kind(self) -> str:
        return "sde" if self.stochastic else "ode"

    @property
    def family(self) -> str:
        """The family figures and tables group samplers by: adaptive, sde, multistep or ode-singlestep."""
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

    @property
    def fixed_step_ode(self) -> bool:
        """Deterministic and on a given grid (neither stochastic nor adaptive): what studies comparing
        pathwise flows from one x_T (decompose, guidance, the image split) accept."""
        return not (self.stochastic or "adaptive" in self.all_tags)
