"""Grid files: JSON with `"times"` (strictly decreasing, in the schedule's own time, first = t_max,
last = t_min) and metadata (`schedule` required; solver, nfe, problem, objective, value, ...).
Read by `--grid file:PATH` in every command that samples, written by `bench grid optimize`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "diffusion-solver-bench grid"
FILE_PREFIX = "file:"
REL_TOL = 1e-9


class GridError(ValueError):
    """A grid spec, parameter or grid file that cannot give the requested times."""


def write_grid_file(path: str | Path, times: Tensor, schedule: str, **meta: Any) -> Path:
    """Write `times` and metadata (JSON numbers at full float64 precision)."""
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.ndim != 1 or len(times) < 2 or not bool((times[1:] < times[:-1]).all()):
        raise GridError("a grid file needs at least two strictly decreasing times")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "schedule": schedule, "steps": len(times) - 1, **meta, "times": times.tolist()}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def read_grid_file(path: str | Path, schedule: str | None = None) -> dict[str, Any]:
    """The grid file's document, validated (and its schedule checked against `schedule`)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(f"grid file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise GridError(f"grid file {path}: not readable JSON ({exc})") from None
    times = doc.get("times") if isinstance(doc, dict) else None
    if not isinstance(times, list) or len(times) < 2 or not all(isinstance(t, int | float) for t in times):
        raise GridError(f"grid file {path}: needs a list \"times\" of at least two numbers")
    decreasing = all(b < a for a, b in zip(times, times[1:], strict=False))
    if not all(math.isfinite(t) for t in times) or not decreasing:
        raise GridError(f"grid file {path}: \"times\" must be finite and strictly decreasing")
    if schedule is not None and doc.get("schedule") not in (None, schedule):
        raise GridError(f"grid file {path} is for schedule {doc['schedule']!r}, not {schedule!r}")
    return doc


def file_times(path: str | Path, schedule: str, steps: int, t_min: float, t_max: float) -> Tensor:
    """The file's times, checked against the cell: same step count and end points."""
    doc = read_grid_file(path, schedule)
    times = torch.tensor(doc["times"], dtype=torch.float64)
    if len(times) - 1 != steps:
        raise GridError(f"grid file {path} has {len(times) - 1} steps; this run needs {steps}")
    for what, got, want in (("first", float(times[0]), t_max), ("last", float(times[-1]), t_min)):
        if abs(got - want) > REL_TOL * max(abs(want), 1e-12):
            raise GridError(f"grid file {path}: {what} time {got!r} is not the problem's {want!r}")
    times[0], times[-1] = t_max, t_min
    return times
