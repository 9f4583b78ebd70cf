"""The external-solver metadata shared by the diffusers and k-diffusion adapters."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from solvers import citations as cite
from solvers.base import OrderException, Solver
from solvers.model import Model
from solvers.registry import UnknownSolverError, make_solver

NoiseHook = Callable[[float, float, Tensor], Tensor]
"""noise(s0, s1, like): the standard normal a library asks for on its step s0 -> s1 (s in its own
noise time, k-diffusion's sigma), shaped like `like` (k-diffusion's `noise_sampler`)."""

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


@dataclass
class Run:
    """One external trajectory: output `x` at VP scale, counted model calls, the time the library
    ended at (0.0 when it ends at sigma = 0, on the data), the time of its last model call, and
    whether the output is that call's x0 prediction (a final Tweedie denoise, as most samplers that
    end at sigma = 0 do; k-diffusion's LMS instead takes a multistep ODE step down to sigma = 0)."""

    x: Tensor
    nfe: int
    t_end: float
    t_last: float
    final_denoise: bool = False


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
class ExternalSolver(Solver):
    """A peer library's sampler with the Solver metadata; `run` replaces `step`."""

    target: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    external: ClassVar[bool] = True
    affine: ClassVar[bool] = True  # deterministic ones: affine in x_T on a Gaussian target
    prefix: ClassVar[str] = ""
    noise_kind: ClassVar[str | None] = None  # a NOISE_KINDS entry when `run` takes a NoiseHook

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

    def nfe(self, steps: int) -> int:
        return steps * self.nfe_per_step

    def run(self, model: Model, problem: Any, steps: int, x_T: Tensor, seed: int, grid: Tensor,
            noise: NoiseHook | None = None) -> Run:
        """Sample from x_T on `grid`; a stochastic sampler with a `noise_kind` draws from `noise`
        (default: its own seeded source of that kind), the others from a generator seeded `seed`."""
        raise NotImplementedError


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
