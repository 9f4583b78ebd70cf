"""The results directory: durable, resumable storage of finished cells and the tidy tables.

Each finished cell is appended to `cells.jsonl` as one line (all its metric rows), flushed and
fsynced before the next cell starts, so a killed sweep (even SIGKILL) loses no finished cell; a
torn last line is ignored on reload. `finalize` writes `results.csv`, `results.parquet` and
`orders.csv` from that log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bench.measure.orders import orders_table

RESULT_COLUMNS = [
    "problem", "schedule", "model", "solver", "solver_name", "params", "family", "stochastic",
    "theory_order", "theory_order_max", "theory_kind", "grid", "steps", "nfe", "seed", "metric", "value",
    "stderr", "noise_floor", "n_samples", "dtype", "status", "reason", "sample_time", "metric_time",
    "tolerance", "stderr_plain", "path_median", "path_q90", "mode_flips", "nfe_budget",
]
KIND_COLUMNS = {  # columns only some kinds of study write, after RESULT_COLUMNS
    "decompose": ["component"],  # discretization (model "exact") | score | both (the tested model)
    "guided": ["guidance", "label", "scale", "class_freq", "ref_class_freq"],
    "images": ["images_per_s", "network_share", "note"],
    "image-split": ["component"],  # discretization|both|exact|score|exact-gauss (studies/images/split.py)
    "conformance": ["axis", "declared_nfe", "scale", "baseline"],  # studies/conformance.py
}
CELL_LOG = "cells.jsonl"


class RunDirError(ValueError):
    """A results directory that cannot be used for this run (one-line message)."""


class ResultStore:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out_dir / CELL_LOG

    def done(self) -> dict[str, list[dict]]:
        """Finished cells by key; a torn (partially written) last line is dropped."""
        cells: dict[str, list[dict]] = {}
        if not self.log_path.exists():
            return cells
        with self.log_path.open() as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "key" in entry:
                    cells[entry["key"]] = entry["rows"]
        return cells

    def repair(self) -> None:
        """Drop a torn trailing line so that new appends start on a fresh line."""
        if not self.log_path.exists():
            return
        data = self.log_path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with self.log_path.open("r+b") as fh:
                fh.truncate(cut)

    def append(self, key: str, rows: list[dict]) -> None:
        line = json.dumps({"key": key, "rows": rows}, allow_nan=True) + "\n"
        with self.log_path.open("a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def frame(self) -> pd.DataFrame:
        rows = [row for cell in self.done().values() for row in cell]
        extra = list(dict.fromkeys(k for row in rows for k in row if k not in RESULT_COLUMNS))
        frame = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *extra])
        return frame.sort_values(["problem", "solver", "grid", "steps", "seed", "metric"], kind="stable")

    def finalize(self, order_rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
        """Write results.csv / results.parquet and orders.csv (fitted on `order_rows(frame)`, default all
        rows) from the cell log."""
        frame = self.frame().reset_index(drop=True)
        frame.to_csv(self.out_dir / "results.csv", index=False)
        frame.to_parquet(self.out_dir / "results.parquet", index=False)
        orders = orders_table(frame if order_rows is None else order_rows(frame))
        orders.to_csv(self.out_dir / "orders.csv", index=False)
        return frame


def load_rows(out_dir: Path) -> pd.DataFrame:
    """The rows of a results directory, from its cell log (results.csv is written from it)."""
    return ResultStore(out_dir).frame().reset_index(drop=True)


def load_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"{path} is not valid JSON; use another --out directory") from None


def write_manifest(out_dir: Path, manifest: dict) -> None:
    path = Path(out_dir) / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
