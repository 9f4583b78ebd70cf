"""The external-solver metadata shared by the diffusers and k-diffusion adapters."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from solvers import citations as cite
from solvers.model import Model
from solvers.noise import NoiseSource, SeededNoise
from solvers.registry import UnknownSolverError, make_solver
from solvers.sampler import OrderException, Progress, Sampler, SampleResult

NoiseHook = Callable[[float, float, Tensor], Tensor]
"""noise(s0, s1, like): the standard normal a library asks for on its step s0 -> s1 (s in its own
noise time, k-diffusion's sigma), shaped like `like` (k-diffusion's `noise_sampler`); the `normal`
of the NoiseSource a run is handed."""

TWINS = {  # peer scheduler/sampler -> our solver implementing the same method (bench report compares them)
    "diffusers:DDIMScheduler": "ddim", "diffusers:EulerDiscreteScheduler": "ddim",
    "diffusers:DPMSolverMultistepScheduler": "dpmpp-2m", "diffusers:UniPCMultistepScheduler": "unipc-2",
    "diffusers:DEISMultistepScheduler": "deis-2", "diffusers:PNDMScheduler": "pndm",
    "diffusers:LMSDiscreteScheduler": "lms", "diffusers:KDPM2DiscreteScheduler": "dpm2",
    "kdiff:sample_euler": "ddim", "kdiff:sample_euler_ancestral": "euler-ancestral",
    "kdiff:sample_heun": "edm-heun", "kdiff:sample_dpm_2": "dpm2",
    "kdiff:sample_dpm_2_ancestral": "dpm2-ancestral",
    "kdiff:sample_lms": "lms", "kdiff:sample_dpmpp_2s_ancestral": "dpmpp-2s-ancestral",
    "kdiff:sample_dpmpp_sde": "dpmpp-sde", "kdiff:sample_dpmpp_2m": "dpmpp-2m",
    "kdiff:sample_dpmpp_2m_sde": "dpmpp-2m-sde", "kdiff:sample_dpmpp_3m_sde": "dpmpp-3m-sde",
}

NOISE_KINDS = ("brownian", "iid")
"""How the draws of a NoiseHook relate: normalised increments (W(s1) - W(s0)) / sqrt|s1 - s0| of one
Brownian path W in the noise time (k-diffusion's BrownianTreeNoiseSampler), or independent per call."""


class PeerMissingError(UnknownSolverError):
    """An external solver whose library is not installed; the message names the extra."""


def missing(library: str) -> PeerMissingError:
    return PeerMissingError(f"external solvers need {library}, which is not installed; install the extra: "
                            f"pip install 'diffusion-solver-bench[peers]'")


DENOISE_TOL = 1e-5  # relative: the libraries' float32 tables leave ~1e-7


def is_denoise(x: Tensor, counted: CountingModel) -> bool:
    """Whether `x` is the x0 prediction of the counted model's last call."""
    x0 = counted.last_x0
    if x0 is None or x0.shape != x.shape:
        return False
    scale = float(x0.abs().max()) + 1e-300
    return float((x.to(x0.dtype) - x0).abs().max()) <= DENOISE_TOL * scale


class CountingModel:
    """Wraps a Model; counts real calls (the NFE recorded for external solvers)."""

    def __init__(self, model: Model):
        self.model, self.calls, self.last_t = model, 0, float("nan")
        self.last_x0: Tensor | None = None

    def __call__(self, x: Tensor, t: float):
        self.calls += 1
        self.last_t = float(t)
        pred = self.model(x, torch.tensor(float(t), dtype=torch.float64))
        self.last_x0 = pred.x0.detach()
        return pred


@dataclass
class ExternalSolver(Sampler):
    """A peer library's sampler with the shared Sampler metadata; `run` drives a whole trajectory.

    Its `noise_kind` is a NOISE_KINDS entry when a run draws each library call's normals from the
    NoiseSource it is handed (else it draws its own). Stochastic ones get SeededNoise from
    `noise_source`: the run builds its default noise of that kind, or seeds the library, from it."""

    target: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    affine: ClassVar[bool | None] = None  # unknown (clipping, thresholding): the exact-law prober checks
    # libraries also fail inside their own code at odd step counts
    failures: ClassVar[tuple[type[Exception], ...]] = (RuntimeError, ValueError, ArithmeticError, IndexError,
                                                       TypeError)
    prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.prefix + self.target)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def label(self) -> str:
        if not self.config:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.config.items())}]"

    def noise_source(self, seed: int, t_lo: float, t_hi: float) -> NoiseSource | None:
        return SeededNoise(seed) if self.stochastic else None

    def run(self, model: Model, times: Tensor, x: Tensor, noise: NoiseSource | None = None, *,
            denoise_final: bool = False, progress: Progress | None = None) -> SampleResult:
        """Sample from x on `times` (its end points are the problem's interval); a sampler with a
        `noise_kind` draws from `noise` (SeededNoise: its own source of that kind from the seed), the
        others from a generator seeded by SeededNoise's seed (0 without one)."""
        raise NotImplementedError


def hook_and_seed(noise: NoiseSource | None, default: Callable[[int], NoiseHook]) -> tuple[NoiseHook, int]:
    """The per-call noise of a run and the seed of the library's own generator: `default(seed)` for
    SeededNoise (or none), else the handed source's `normal`."""
    if noise is None or isinstance(noise, SeededNoise):
        seed = 0 if noise is None else noise.seed
        return default(seed), seed
    return noise.normal, 0


def result(x: Tensor, counted: CountingModel, steps: int, start: float, t_end: float) -> SampleResult:
    """A library run's SampleResult: ends at t_end; at sigma = 0 (t_end = 0.0) a final denoise is read
    from the run (the output is the last call's x0 prediction), judged against the Tweedie law."""
    denoise = t_end == 0.0 and is_denoise(x, counted)
    return SampleResult(x, counted.calls, steps, time.perf_counter() - start, t_end, counted.last_t, denoise,
                        denoise)


STRONG_SOURCE = ("strong order 1: per step a consistent drift step plus fresh normals of std "
                 "g sqrt(h) (1 + O(h)), read as normalised Brownian increments of the additive-noise reverse "
                 f"SDE: {cite.STRONG}; {cite.CLARK_CAMERON}")


def twin_meta(peer: str, params: dict[str, Any], stochastic: bool,
              renames: dict[str, str] | None = None) -> dict[str, Any]:
    """The proven-order metadata of our solver implementing the same method (`TWINS`),
    built with the peer's parameters that it shares, or {} when there is no twin or it refuses those
    parameters. The twin's declared order is the theorem for both (the parity tests show they are the
    same method), so it replaces the adapter's table entry `order`."""
    name = TWINS.get(peer)
    if name is None:
        return {}
    twin_cls = type(make_solver(name))
    fields = {f.name for f in dataclasses.fields(twin_cls) if f.init}
    shared = {(renames or {}).get(k, k): v for k, v in params.items()}
    shared = {k: v for k, v in shared.items() if k in fields}
    spec = name + (f"[{','.join(f'{k}={v}' for k, v in shared.items())}]" if shared else "")
    try:
        twin = make_solver(spec)
    except UnknownSolverError:
        return {}
    return {"order": twin.order, "strong_order": twin.strong_order if stochastic else None,
            "order_cap": twin.order_cap,
            "order_note": twin.order_note, "order_exceptions": twin.order_exceptions,
            "order_source": f"as our twin {twin.label}: {twin.order_source}"}


def set_meta(solver: ExternalSolver, order: float | None, stochastic: bool, nfe_per_step: int,
             tags: set[str], *, strong_order: float | None = None, order_cap: float | None = None,
             order_note: str = "", order_source: str = "",
             order_exceptions: tuple[OrderException, ...] = ()) -> ExternalSolver:
    """Instance-level metadata (the class attributes of registered solvers). A stochastic peer without a
    declared strong order gets 1 with the justification of STRONG_SOURCE."""
    if stochastic and strong_order is None:
        strong_order = 1
        order_source = f"{order_source}; {STRONG_SOURCE}" if order_source else STRONG_SOURCE
    values = {"order": math.nan if order is None else order, "stochastic": stochastic,
              "nfe_per_step": nfe_per_step, "tags": frozenset(tags | {"external"}),
              "strong_order": strong_order if stochastic else None, "order_cap": order_cap,
              "order_note": order_note, "order_source": order_source,
              "order_exceptions": tuple(order_exceptions)}
    for key, value in values.items():
        object.__setattr__(solver, key, value)
    return solver
