"""Executors (bench/sweep/executor.py): in-process, local processes and a Dask cluster (local:2) run the
same chains into the same rows; a chain runs in one worker process, in order; on_result is called once
per cell, in the coordinating process, as each cell finishes; bad --cluster / --jobs values are refused
with one line."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from bench.sweep.executor import (
    DaskCluster,
    ExecutorError,
    InProcess,
    LocalProcesses,
    balance,
    make_executor,
    parse_cluster,
)

needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="dask.distributed not installed (the cluster extra)")


@dataclass(frozen=True)
class ToyCell:
    key: str
    chain: str
    x: float
    sleep: float = 0.0
    fail: bool = False
    note: str = field(default="opaque", init=False)  # not a constructor argument: must survive as is


METRICS = ["a", "b"]
_SEQ = itertools.count()  # per process: the order in which this process ran its cells
_SEEN: set[str] = set()  # per process: the chains whose "reference" this process has computed


def toy_work(cell: ToyCell, scale: float = 1.0) -> list[dict]:
    """Deterministic rows of a cell, plus where and when it ran (pid, per-process sequence, cache hit)."""
    start = time.time()
    if cell.fail:
        raise RuntimeError(f"boom in {cell.key}")
    hit = cell.chain in _SEEN
    _SEEN.add(cell.chain)
    time.sleep(cell.sleep)
    where = {"pid": os.getpid(), "seq": next(_SEQ), "hit": hit, "start": start, "end": time.time()}
    return [{"key": cell.key, "metric": m, "value": toy_value(cell, k, scale), **where}
            for k, m in enumerate(METRICS, start=1)]


def toy_value(cell: ToyCell, k: int, scale: float) -> float:
    return scale * math.sin(cell.x) ** k


def toy_cost(chain: list[ToyCell]) -> float:
    return sum(c.x + 10 * c.sleep for c in chain)


def toy_chains(slow: float = 0.0) -> list[list[ToyCell]]:
    """Six chains of 1..4 cells (fresh chain names per call, so per-process caches start cold); with
    `slow`, the heaviest chain has one slow cell so the other worker's cells finish well before it."""
    run = uuid.uuid4().hex[:8]
    chains = [[ToyCell(f"{run}/c{c}/{i}", f"{run}/c{c}", x=c + i / 10) for i in range(1 + c % 4)]
              for c in range(6)]
    if slow:
        chains[0] = [ToyCell(f"{run}/slow/0", f"{run}/slow", x=100.0, sleep=slow)]
    return chains


def run_and_check(executor, chains: list[list[ToyCell]], scale: float = 2.0,
                  streamed: bool = True) -> list[dict]:
    """Run `chains` on `executor` and check the executor contract; returns the deterministic rows.
    `streamed`: also check that the first result reached on_result before the last cell ended (needs
    a slow cell for parallel executors)."""
    calls = []

    def on_result(cell, rows):
        calls.append((cell, rows, os.getpid(), time.time()))

    executor.run(chains, functools.partial(toy_work, scale=scale), on_result, cost=toy_cost)
    cells = [cell for chain in chains for cell in chain]
    assert sorted(c.key for c, *_ in calls) == sorted(c.key for c in cells)  # once per cell
    assert {id(c) for c, *_ in calls} == {id(c) for c in cells}  # the coordinator's own objects
    assert all(pid == os.getpid() for _, _, pid, _ in calls)  # in the coordinating process
    assert all(row["key"] == cell.key for cell, rows, *_ in calls for row in rows)
    by_key = {cell.key: rows[0] for cell, rows, *_ in calls}
    for chain in chains:  # one process per chain, in order; the chain's "reference" computed once
        where = [by_key[c.key] for c in chain]
        assert len({w["pid"] for w in where}) == 1, chain[0].chain
        assert [w["seq"] for w in where] == sorted(w["seq"] for w in where)
        assert [w["hit"] for w in where] == [False] + [True] * (len(chain) - 1)
    # streamed: each cell reaches on_result as soon as it is done, not when the whole run is
    assert all(t >= rows[0]["end"] for _, rows, _, t in calls)
    last_end = max(rows[0]["end"] for _, rows, *_ in calls)
    assert not streamed or min(t for *_, t in calls) < last_end
    return sorted(({k: row[k] for k in ("key", "metric", "value")} for _, rows, *_ in calls for row in rows),
                  key=lambda r: (r["key"], r["metric"]))


def expected_rows(chains: list[list[ToyCell]], scale: float = 2.0) -> list[dict]:
    rows = [{"key": cell.key, "metric": m, "value": toy_value(cell, k, scale)}
            for chain in chains for cell in chain for k, m in enumerate(METRICS, start=1)]
    return sorted(rows, key=lambda r: (r["key"], r["metric"]))


def test_in_process_runs_every_chain_in_order_here():
    chains = toy_chains()
    assert run_and_check(InProcess(), chains) == expected_rows(chains)


def test_local_processes_same_rows_chains_pinned_and_streamed():
    chains = toy_chains(slow=1.5)
    rows = run_and_check(LocalProcesses(2), chains)
    assert rows == expected_rows(chains)


def test_local_processes_use_at_most_one_process_per_chain():
    chains = toy_chains()[3:4]  # one chain of 4 cells: one pool, not 4
    assert run_and_check(LocalProcesses(4), chains, streamed=False) == expected_rows(chains)


@needs_dask
def test_dask_local_cluster_same_rows_chains_pinned_and_streamed():
    chains = toy_chains(slow=1.5)
    start = time.perf_counter()
    rows = run_and_check(DaskCluster("local:2"), chains)
    assert rows == expected_rows(chains)
    assert time.perf_counter() - start < 30  # cluster start-up and shut-down ~5 s here, the slow cell 1.5 s


@pytest.mark.parametrize("make", [InProcess, lambda: LocalProcesses(2)], ids=["in-process", "local"])
def test_a_failing_work_function_ends_the_run(make):
    chains = toy_chains()
    chains[1][0] = ToyCell(chains[1][0].key, chains[1][0].chain, x=0.0, fail=True)
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        make().run(chains, toy_work, lambda cell, rows: seen.append(cell.key), cost=toy_cost)
    assert chains[1][0].key not in seen


def test_no_chains_is_a_no_op():
    for executor in (InProcess(), LocalProcesses(2), DaskCluster("local:1")):
        executor.run([], toy_work, lambda cell, rows: pytest.fail("called"))


def test_balance_is_greedy_heaviest_first():
    chains = [[1] * n for n in (1, 5, 2, 4, 3)]
    plan = balance(chains, [1.0, 1.0], len)
    assert plan == [[[1] * 5, [1] * 2, [1] * 1], [[1] * 4, [1] * 3]]
    plan = balance(chains, [1.0, 3.0], len)  # per unit of capacity (a worker's threads)
    assert [sum(map(len, p)) for p in plan] == [5, 10]


def test_make_executor_defaults_and_overrides(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    default = make_executor()
    assert isinstance(default, LocalProcesses) and default.jobs == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert isinstance(make_executor(None), InProcess)
    assert isinstance(make_executor(1), InProcess)
    assert isinstance(make_executor(3), LocalProcesses) and make_executor(3).jobs == 3
    for address in ("local:2", "tcp://10.0.0.5:8786", "tcp://scheduler.example.org:8786", "tcp://[::1]:8786"):
        executor = make_executor(4, address)  # the cluster wins over --jobs; nothing is contacted yet
        assert isinstance(executor, DaskCluster) and executor.address == address
    assert make_executor(cluster="local:3").local_workers == 3
    assert parse_cluster("tcp://127.0.0.1:8786") is None


@pytest.mark.parametrize("address", ["", "local", "local:", "local:0", "local:-1", "local:two", "local:2 ",
                                     "tcp://host", "tcp://:8786", "tcp://host:0", "tcp://host:99999",
                                     "http://host:8786", "host:8786", "tcp://a b:1", "tls://host:8786"])
def test_malformed_cluster_is_refused_in_one_line(address):
    with pytest.raises(ExecutorError) as info:
        make_executor(2, address)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert "tcp://HOST:PORT" in message and "local:N" in message and repr(address) in message


@pytest.mark.parametrize("jobs", [0, -2])
def test_non_positive_jobs_are_refused(jobs):
    with pytest.raises(ExecutorError, match="--jobs must be positive"):
        make_executor(jobs)


@needs_dask
def test_unreachable_scheduler_is_one_line():
    executor = DaskCluster("tcp://127.0.0.1:9", timeout=2)  # discard port: nothing listens
    with pytest.raises(ExecutorError) as info:
        executor.run(toy_chains(), toy_work, lambda cell, rows: None)
    assert "\n" not in str(info.value) and "tcp://127.0.0.1:9" in str(info.value)


def test_engine_sweep_is_the_same_locally_and_on_dask(tmp_path: Path):
    """The real engine: the same small sweep in-process, on 2 local processes and on a local:2 Dask
    cluster writes the same results.csv (timings aside) and the same cell log keys."""
    from bench.studies.analytic import SweepConfig, run_sweep

    def config():
        return SweepConfig(problems=["gauss-1d"], solvers=["ddim,ddpm"], steps=[4, 8], seeds=[0, 1],
                           samples=50)

    runs = {"inproc": dict(jobs=1), "local": dict(jobs=2), "dask": dict(cluster="local:2")}
    frames = {}
    for name, how in runs.items():
        out = run_sweep(config(), tmp_path / name, **how)
        frame = pd.read_csv(out / "results.csv").drop(columns=["sample_time", "metric_time"])
        frames[name] = frame.sort_values(["solver", "steps", "seed", "metric"]).reset_index(drop=True)
    assert len(frames["inproc"]) > 0 and (frames["inproc"]["status"] == "ok").all()
    pd.testing.assert_frame_equal(frames["local"], frames["inproc"])
    pd.testing.assert_frame_equal(frames["dask"], frames["inproc"])
