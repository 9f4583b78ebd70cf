"""External solvers: diffusers schedulers and k-diffusion samplers driven inside the harness.

Names are `diffusers:<SchedulerClass>[k=v,...]` and `kdiff:<sample_fn>[k=v,...]`. An external
sampler drives a whole trajectory, so it is a Sampler without `step`: `ExternalSolver.run` samples
from x_T and returns a SampleResult with the counted model calls and the time the library ended at.
The peers are optional (the `peers` extra); without them these names are refused (the adapters
import them only when a name is built). Importing this package registers both prefixes with
solvers.registry, so `make_solver`/`resolve` hand these names here.
"""

from __future__ import annotations

import fnmatch

from solvers.external import diffusers, kdiffusion
from solvers.external.base import TWINS, ExternalSolver, PeerMissingError
from solvers.registry import UnknownSolverError, parse_spec, register_prefix

ADAPTERS = {"diffusers:": diffusers, "kdiff:": kdiffusion}  # prefix -> adapter module (peer imported lazily)
PREFIXES = tuple(ADAPTERS)


def is_external(spec: str) -> bool:
    return spec.strip().startswith(PREFIXES)


def available(prefix: str) -> list[str]:
    """Names the installed peer offers under `prefix` (raises PeerMissingError without it)."""
    return ADAPTERS[prefix].available()


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
    return ADAPTERS[prefix].make(target, params)


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


for _prefix in PREFIXES:
    register_prefix(_prefix, make_external, resolve_external)

__all__ = ["ADAPTERS", "PREFIXES", "TWINS", "ExternalSolver", "PeerMissingError", "available",
           "installed_globs", "is_external", "make_external", "resolve_external"]
