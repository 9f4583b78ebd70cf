"""One registry of solvers by CLI name; tags (`all`, `ode`, `sde`, `multistep`, ...) select groups.

Parameters use one bracket syntax everywhere: `ddim-eta[eta=0.5]`, `unipc-2[variant=bh1]`.

Where solvers come from:
- `@register(name)` on a Solver subclass in any module of the `solvers` package (the package imports
  all of its modules, so a new module registers itself without being listed anywhere);
- prefixes: `register_prefix("diffusers:", make, resolve)` hands every name starting with the prefix to
  `make(spec)` (one solver) and `resolve(spec)` (a name or glob, several); solvers.external registers
  `diffusers:` and `kdiff:` this way;
- package entry points of group ENTRY_POINT_GROUP, loaded on first use (`load_entry_points`): each
  names a module (imported, so its @register decorators run) or a Solver subclass (registered under
  its `name` class attribute, else the entry point's name);
- files: `path/to/file.py:ClassName[k=v]` imports the file, registers the Solver subclass under its
  `name` class attribute (else `<file stem>.<ClassName>`) and builds it. A registration lives in
  the process that made it (and in workers forked from it).

This module imports nothing of the package but solvers.base.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from solvers.base import Solver

ENTRY_POINT_GROUP = "diffusion_solver_bench.solvers"
SELECTORS = ("all", "ode", "sde", "singlestep", "multistep", "adaptive")

_REGISTRY: dict[str, tuple[type[Solver], dict[str, Any]]] = {}
_PREFIXES: dict[str, Prefix] = {}
_LOADED_ENTRY_POINTS: set[tuple[str, str]] = set()
_entry_points_scanned = False
_FILE_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<cls>[A-Za-z_]\w*)$")


class UnknownSolverError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Prefix:
    """How names under one prefix are built: `make(spec)` one solver, `resolve(spec)` a name or glob."""

    make: Callable[[str], Solver]
    resolve: Callable[[str], list[Solver]]


def register(name: str, **fixed: Any) -> Callable[[type[Solver]], type[Solver]]:
    """Class decorator: register `cls` under `name`, with some parameters fixed (e.g. order=2)."""

    def wrap(cls: type[Solver]) -> type[Solver]:
        if name in _REGISTRY:
            raise ValueError(f"solver name {name!r} registered twice")
        _REGISTRY[name] = (cls, fixed)
        return cls

    return wrap


def register_class(cls: type, default_name: str) -> str:
    """Register a Solver subclass from outside the package (entry point, file) under its `name` class
    attribute, else `default_name`; return the name. Registering the same class again is a no-op."""
    if not (isinstance(cls, type) and issubclass(cls, Solver)):
        raise UnknownSolverError(f"{cls!r} is not a subclass of solvers.Solver")
    name = cls.name or default_name
    if name in _REGISTRY:
        if _REGISTRY[name][0] is not cls:
            raise UnknownSolverError(f"solver name {name!r} is already registered by "
                                     f"{_REGISTRY[name][0].__module__}.{_REGISTRY[name][0].__qualname__}")
        return name
    if name in SELECTORS or _prefix_of(name) is not None or any(c in name for c in "*?[],"):
        raise UnknownSolverError(f"{cls.__qualname__}: {name!r} cannot be a solver name")
    _REGISTRY[name] = (cls, {})
    return name


def register_prefix(prefix: str, make: Callable[[str], Solver],
                    resolve: Callable[[str], list[Solver]] | None = None) -> None:
    """Hand every spec starting with `prefix` (e.g. 'diffusers:') to `make(spec)`, and in `resolve` to
    `resolve(spec)` (default: [make(spec)]), which may expand globs such as 'diffusers:*'."""
    entry = Prefix(make, resolve or (lambda spec: [make(spec)]))
    if prefix in _PREFIXES and _PREFIXES[prefix] != entry:
        raise ValueError(f"solver prefix {prefix!r} registered twice")
    _PREFIXES[prefix] = entry


def prefixes() -> tuple[str, ...]:
    """The registered prefixes ('diffusers:', 'kdiff:', ...)."""
    return tuple(_PREFIXES)


def _prefix_of(spec: str) -> str | None:
    spec = spec.strip()
    return next((p for p in _PREFIXES if spec.startswith(p)), None)


def load_entry_points() -> list[str]:
    """Load the entry points of group ENTRY_POINT_GROUP not loaded yet; return the names they added.
    A module entry point is imported (its @register decorators run); a Solver subclass is registered
    under its `name` attribute, else the entry point's name. One that fails to load is skipped with a
    warning, so a broken plugin cannot take the registry down."""
    global _entry_points_scanned
    _entry_points_scanned = True
    before = set(_REGISTRY)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key in _LOADED_ENTRY_POINTS:
            continue
        _LOADED_ENTRY_POINTS.add(key)
        try:
            obj = ep.load()
            if not isinstance(obj, ModuleType):
                register_class(obj, ep.name)
        except Exception as exc:  # noqa: BLE001 -- any failure of third-party code
            warnings.warn(f"solver entry point {ep.name} = {ep.value} skipped: {type(exc).__name__}: {exc}",
                          stacklevel=2)
    return sorted(set(_REGISTRY) - before)


def _plugins() -> None:
    if not _entry_points_scanned:
        load_entry_points()


def _load_file(path: str, cls_name: str) -> str:
    """Import `path`, register its Solver subclass `cls_name` and return the registered name."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UnknownSolverError(f"solver file {path!r} not found")
    file = file.resolve()
    module_name = f"_solver_file_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise UnknownSolverError(f"cannot import solver file {path!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the file runs
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 -- any failure of the user's file
            del sys.modules[module_name]
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UnknownSolverError(f"cannot import solver file {path!r}: "
                                     f"{type(exc).__name__}: {first}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise UnknownSolverError(f"solver file {path!r} defines no class {cls_name!r} "
                                 "(use path.py:ClassName)")
    if not (isinstance(cls, type) and issubclass(cls, Solver)):
        raise UnknownSolverError(f"{path}:{cls_name} is not a subclass of solvers.Solver")
    return register_class(cls, f"{file.stem}.{cls_name}")


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
    """Every registered name (entry points included); prefixed and file solvers are built on demand."""
    _plugins()
    return sorted(_REGISTRY)


def make_solver(spec: str) -> Solver:
    """Build one solver from 'name' or 'name[k=v,...]', a registered prefix ('diffusers:'/'kdiff:'
    names) or 'path/to/file.py:ClassName[k=v,...]'."""
    prefix = _prefix_of(spec)
    if prefix is not None:
        return _PREFIXES[prefix].make(spec)
    _plugins()
    name, params = parse_spec(spec)
    file_spec = _FILE_SPEC.match(name)
    if file_spec:
        name = _load_file(file_spec["path"], file_spec["cls"])
    if name not in _REGISTRY:
        others = "".join(f"{p}..., " for p in _PREFIXES)
        raise UnknownSolverError(f"unknown solver {name!r}; valid: {', '.join(sorted(_REGISTRY))}, "
                                 f"{others}path/to/file.py:ClassName or a selector ({', '.join(SELECTORS)})")
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
    _plugins()
    if isinstance(specs, str):
        specs = [specs]
    specs = [part for spec in specs for part in _split_top_level(spec)]
    out: dict[str, Solver] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        prefix = _prefix_of(spec)
        if prefix is not None:
            chosen = _PREFIXES[prefix].resolve(spec)
        elif _FILE_SPEC.match(parse_spec(spec)[0]):
            chosen = [make_solver(spec)]
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
