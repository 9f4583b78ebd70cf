"""The one sweep engine. A study (bench/studies/) is a list of cells; a cell is deterministic given its
seed and returns long-form rows (bench/sweep/store.py). Cells that share a `chain` run in one worker,
in order, so what they share (a reference solution, a trained model) is computed once per worker.
The coordinator alone appends each finished cell to the durable log as it arrives, so a killed run
loses nothing finished and rerunning the same study into the same directory resumes it without
duplicating a row. Every kind of study writes the same files: results.csv / .parquet, orders.csv,
manifest.json (with the study's `kind` and config) and cells.jsonl.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.sweep.executor import make_executor
from bench.sweep.manifest import build_manifest
from bench.sweep.store import RESULT_COLUMNS, ResultStore, RunDirError, load_manifest, write_manifest


@dataclass(frozen=True)
class Cell:
    """One unit of work: `key` is unique and durable (the resume key), `chain` groups cells that run
    in one worker in order, `params` is whatever the study needs to run it."""

    key: str
    chain: str
    params: Any = None


class Study(ABC):
    """A kind of study the engine runs. Subclasses are picklable (workers receive the study itself)."""

    kind: ClassVar[str] = ""

    def config(self) -> dict:
        """The study's settings, JSON-able; a directory only resumes a study with the same ones. Default:
        the study's dataclass `settings` as a dict."""
        return dataclasses.asdict(self.settings)

    @abstractmethod
    def cells(self) -> list[Cell]:
        """Every cell, after validating the inputs (raise a one-line ValueError subclass on bad input)."""

    @abstractmethod
    def run_cell(self, cell: Cell) -> list[dict]:
        """The rows of one cell; solver failures become rows with status diverged/skipped."""

    def cost(self, chain: list[Cell]) -> float:
        """Relative cost of a chain, to balance workers (heaviest first)."""
        return float(len(chain))

    def incompatibility(self, old_config: dict) -> str | None:
        """Why a directory holding a run with `old_config` cannot be resumed by this study (None: it can)."""
        if old_config == json.loads(json.dumps(self.config())):
            return None
        return "holds a different run's config; use another --out or the same options"

    def stale(self, rows: list[dict]) -> bool:
        """Whether a finished cell's rows must be computed again (e.g. a metric added since)."""
        return False

    def order_rows(self, frame):
        """The rows of results.csv that orders.csv fits (all of them unless a study says otherwise)."""
        return frame

    def manifest_extra(self) -> dict:
        """Study-specific facts for manifest.json (how references were computed, devices, ...)."""
        return {}

    def error_rows(self, cell: Cell, reason: str) -> list[dict]:
        """The row recorded for a cell whose run raised (a bug must not kill the run)."""
        return [{**{c: math.nan for c in RESULT_COLUMNS}, "status": "error", "reason": reason,
                 "metric": "error", "solver": cell.chain}]


Progress = Callable[[int, int, Cell, float, list[dict]], None]  # done, total, cell, elapsed s, its rows


def safe_run(study: Study, cell: Cell) -> tuple[Cell, list[dict]]:
    try:
        return cell, study.run_cell(cell)
    except Exception as exc:  # a bug in one cell must not kill the run; record it
        traceback.print_exc()
        return cell, study.error_rows(cell, f"error: {type(exc).__name__}: {exc}".splitlines()[0])


def cell_rows(study: Study, cell: Cell) -> list[dict]:
    """What an executor runs for a cell (module level, so that it pickles): its rows, never raising."""
    return safe_run(study, cell)[1]


def run_study(study: Study, out_dir: Path, command: str = "", jobs: int | None = 1,
              progress: Progress | None = None, cluster: str | None = None) -> Path:
    """Run (or resume) `study` into out_dir; returns out_dir. `jobs`: worker processes on this machine
    (1: in this process; None: one per CPU); `cluster`: run on Dask instead, tcp://HOST:PORT of a
    running scheduler or local:N (bench/sweep/executor.py)."""
    executor = make_executor(jobs, cluster)  # a malformed --cluster fails before out_dir is touched
    cells = study.cells()
    out_dir = Path(out_dir)
    config = json.loads(json.dumps(study.config()))
    existing = load_manifest(out_dir)
    if existing is not None:
        kind = existing.get("kind", "sweep")
        why = (f"holds a {kind} run, not a {study.kind} one" if kind != study.kind
               else study.incompatibility(existing.get("config")))
        if why:
            raise RunDirError(f"{out_dir} {why}")
    store = ResultStore(out_dir)
    store.repair()
    done = store.done()
    manifest = {**(existing or {}), "kind": study.kind, **build_manifest(config, command, existing),
                **study.manifest_extra()}
    write_manifest(out_dir, manifest)
    todo = [c for c in cells if c.key not in done or study.stale(done[c.key])]
    total, finished, start = len(cells), len(cells) - len(todo), time.perf_counter()

    def record(cell: Cell, rows: list[dict]) -> None:
        nonlocal finished
        store.append(cell.key, rows)
        finished += 1
        if progress is not None:
            progress(finished, total, cell, time.perf_counter() - start, rows)

    chains: dict[str, list[Cell]] = {}
    for cell in todo:
        chains.setdefault(cell.chain, []).append(cell)
    executor.run(list(chains.values()), functools.partial(cell_rows, study), record, cost=study.cost)
    store.finalize(study.order_rows)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["cells"] = total
    write_manifest(out_dir, manifest)
    return out_dir
