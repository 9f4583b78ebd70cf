"""One registry of solvers by CLI name; tags (`all`, `ode`, `sde`, `multistep`, ...) select groups.

Parameters use one bracket syntax everywhere: `ddim-eta[eta=0.5]`, `unipc-2[variant=bh1]`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from solvers.base import Solver

_REGISTRY: dict[str, tuple[type[Solver], dict[str, Any]]] = {}
SELECTORS = ("all", "ode", "sde", "singlestep", "multistep", "adaptive")


class UnknownSolverError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def register(name: str, **fixed: Any) -> Callable[[type[Solver]], type[Solver]]:
    """Class decorator: register `cls` under `name`, with some parameters fixed (e.g. order=2)."""

    def wrap(cls: type[Solver]) -> type[Solver]:
        if name in _REGISTRY:
            raise ValueError(f"solver name {name!r} registered twice")
        _REGISTRY[name] = (cls, fixed)
        return cls

    return wrap


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'name[k=v,k2=v2]' -> ('name', {'k': v, 'k2': v2}) with ints, floats and bools parsed."""
    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    if not spec.endswith("]") or spec.count("[") != 1:
        raise ValueError(f"malformed parameters in {spec!r}; use name[key=value,...]")
    name, body = spec[:-1].split("[", 1)
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "=" not in part:
            raise ValueError(f"parameter {part!r} in {spec!r} needs the form key=value")
        key, value = part.split("=", 1)
        params[key.strip()] = _value(value)
    return name.strip(), params


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def make_solver(spec: str) -> Solver:
    """Build one solver from 'name' or 'name[k=v,...]' (or an external 'diffusers:'/'kdiff:' name)."""
    from solvers.external import is_external, make_external

    if is_external(spec):
        return make_external(spec)
    _load_all()
    name, params = parse_spec(spec)
    if name not in _REGISTRY:
        raise UnknownSolverError(f"unknown solver {name!r}; valid: {', '.join(sorted(_REGISTRY))} "
                                 f"or a selector ({', '.join(SELECTORS)})")
    cls, fixed = _REGISTRY[name]
    allowed = {f.name for f in dataclasses.fields(cls) if f.init} - set(fixed)
    bad = set(params) - allowed
    if bad:
        hint = ", ".join(sorted(allowed)) or "none"
        raise UnknownSolverError(f"solver {name!r} has no parameter {', '.join(sorted(bad))}; "
                                 f"its parameters: {hint}")
    try:
        solver = cls(**fixed, **params)
    except (TypeError, ValueError) as exc:
        raise UnknownSolverError(f"bad parameters for {name!r}: {exc}") from None
    object.__setattr__(solver, "name", name)
    object.__setattr__(solver, "_fixed", fixed)
    return solver


def resolve(specs: str | Iterable[str]) -> list[Solver]:
    """Expand names, selectors and glob patterns (comma-separated or a list) into solvers,
    keeping first-seen order and dropping duplicates."""
    _load_all()
    if isinstance(specs, str):
        specs = [specs]
    specs = [part for spec in specs for part in _split_top_level(spec)]
    out: dict[str, Solver] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        if spec.startswith(("diffusers:", "kdiff:")):
            from solvers.external import resolve_external

            chosen = resolve_external(spec)
        elif spec in SELECTORS:
            chosen = [make_solver(n) for n in sorted(_REGISTRY)]
            if spec != "all":
                chosen = [s for s in chosen if spec in s.all_tags]
        elif any(c in spec for c in "*?") and "[" not in spec:
            matched = fnmatch.filter(sorted(_REGISTRY), spec)
            if not matched:
                raise UnknownSolverError(f"no solver matches {spec!r}")
            chosen = [make_solver(n) for n in matched]
        else:
            chosen = [make_solver(spec)]
        for solver in chosen:
            out.setdefault(solver.label, solver)
    if not out:
        raise UnknownSolverError("no solver selected")
    return list(out.values())


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: 'a,b[x=1,y=2]' -> ['a', 'b[x=1,y=2]']."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _load_all() -> None:
    """Import every solver module so their @register decorators run."""
    import solvers.catalog  # noqa: F401
