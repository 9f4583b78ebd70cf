"""External solvers: diffusers schedulers and k-diffusion samplers driven inside the harness.

Names are `diffusers:<SchedulerClass>[k=v,...]` and `kdiff:<sample_fn>[k=v,...]`. An external
sampler drives a whole trajectory, so it has no `step`; `ExternalSolver.run` samples from x_T and
returns the output, the counted model calls and the noise level the library ended at.
The peers are optional (the `peers` extra); without them these names are refused.
"""

from __future__ import annotations

import fnmatch

from solvers.external.base import ExternalSolver, PeerMissingError, Run
from solvers.registry import UnknownSolverError, parse_spec

PREFIXES = ("diffusers:", "kdiff:")
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


def is_external(spec: str) -> bool:
    return spec.strip().startswith(PREFIXES)


def _module(prefix: str):
    if prefix == "diffusers:":
        from solvers.external import diffusers as mod
    else:
        from solvers.external import kdiffusion as mod
    return mod


def available(prefix: str) -> list[str]:
    """Names the installed peer offers under `prefix` (raises PeerMissingError without it)."""
    return _module(prefix).available()


def installed_globs() -> str:
    """'diffusers:*,kdiff:*' restricted to the installed peers (PeerMissingError when none is)."""
    globs, error = [], None
    for prefix in PREFIXES:
        try:
            available(prefix)
            globs.append(prefix + "*")
        except PeerMissingError as exc:
            error = exc
    if not globs:
        raise error
    return ",".join(globs)


def make_external(spec: str) -> ExternalSolver:
    """Build one external solver from 'diffusers:Class[k=v]' or 'kdiff:sample_fn[k=v]'."""
    name, params = parse_spec(spec)
    prefix = next(p for p in PREFIXES if name.startswith(p))
    target = name[len(prefix):]
    valid = available(prefix)
    if target not in valid:
        raise UnknownSolverError(f"unknown external solver {name!r}; valid: "
                                 f"{', '.join(prefix + v for v in valid)}")
    return _module(prefix).make(target, params)


def resolve_external(spec: str) -> list[ExternalSolver]:
    """A name, or a glob such as 'diffusers:*' (without parameters), into external solvers."""
    name, _ = parse_spec(spec)
    if any(c in name for c in "*?") and "[" not in spec:
        prefix = next(p for p in PREFIXES if name.startswith(p))
        matched = fnmatch.filter(available(prefix), name[len(prefix):])
        if not matched:
            raise UnknownSolverError(f"no external solver matches {spec!r}")
        return [make_external(prefix + m) for m in matched]
    return [make_external(spec)]


__all__ = ["PREFIXES", "TWINS", "ExternalSolver", "PeerMissingError", "Run", "available", "installed_globs",
           "is_external", "make_external", "resolve_external"]
