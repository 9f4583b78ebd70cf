"""Where a sweep's cells run: in this process, on local worker processes, or on a Dask cluster.

The engine hands an executor its chains (lists of cells that share what is costly to compute, e.g. a
reference solution, and so run in one worker process, in order), a picklable `work(cell) -> rows`
and an `on_result(cell, rows)` callback. Every executor calls `on_result` in the calling
(coordinating) process, once per cell, as soon as that cell has finished, so the one coordinator
writes every result to the durable store and a killed sweep loses nothing finished. Cells are opaque
here: picklable objects with a `.key`; `on_result` gets the very objects it was handed.

- `InProcess`: runs the chains one after the other in this process (--jobs 1).
- `LocalProcesses(jobs)`: one single-worker process pool per job; chains are assigned greedily,
  heaviest first, to the least loaded pool, and a pool runs what it was given in order.
- `DaskCluster(address)`: a dask.distributed scheduler at tcp://HOST:PORT, or `local:N` for a
  LocalCluster of N single-threaded worker processes started here and closed at the end. Each cell
  is its own task, so each finished cell comes back (and is stored) at once; a chain stays in one
  worker process and in order because every cell of the chain is pinned to the worker chosen for the
  chain (greedy balance, as for local processes, per worker thread) and depends on the previous cell
  of its chain (a worker may interleave its chains' cells; heavier chains have priority). The pin is
  loose: if that worker dies, Dask reruns the chain's remaining cells elsewhere (results stay
  correct, cells are deterministic; only the cache reuse is lost). Workers
  must be able to import the project (and whatever `work` refers to), and workers that join after
  the run started get none of its cells.

Every worker runs torch with one intra-op thread: sweeps parallelise over cells, and OpenMP
spin-waits make small tensor ops many times slower on a busy machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

Cell = Any  # opaque: picklable, with a `.key`
Work = Callable[[Any], list[dict]]
OnResult = Callable[[Any, list[dict]], None]
Cost = Callable[[list[Any]], float]

CLUSTER_FORMS = "tcp://HOST:PORT (a running Dask scheduler) or local:N (N >= 1 local Dask workers)"
CONNECT_TIMEOUT = 60.0  # seconds to reach a scheduler and see its first worker(s)


class ExecutorError(ValueError):
    """Bad executor settings or an unreachable cluster; the message is one line for the user."""


def single_thread() -> None:
    """Worker start-up: one intra-op torch thread (parallelise over cells, not inside small ops)."""
    import torch  # here, so that the CLI can import this module (ExecutorError) without torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def chain_count(chain: list[Any]) -> float:
    """The default cost of a chain: its number of cells."""
    return float(len(chain))


def balance(chains: Sequence[list[Any]], capacity: Sequence[float], cost: Cost) -> list[list[list[Any]]]:
    """Assign chains to workers greedily: heaviest chain first, each to the worker with the least
    load per unit of capacity (ties: the first such worker). Returns each worker's chains in the order
    it should run them (heaviest first)."""
    load = [0.0] * len(capacity)
    plan: list[list[list[Any]]] = [[] for _ in capacity]
    for chain in sorted(chains, key=cost, reverse=True):  # stable: equal costs keep the given order
        k = min(range(len(capacity)), key=lambda i: load[i] / capacity[i])
        load[k] += cost(chain)
        plan[k].append(chain)
    return plan


class Executor(ABC):
    """Runs every cell of `chains` with `work` and calls `on_result(cell, rows)` in this process for
    each finished cell as it finishes; a chain's cells run in one worker process, in order. `work` must
    be picklable (a module-level function or a functools.partial of one); an exception it raises ends
    the run (unfinished cells are cancelled) and propagates. `cost` ranks chains for balancing."""

    @abstractmethod
    def run(self, chains: Sequence[list[Any]], work: Work, on_result: OnResult,
            cost: Cost = chain_count) -> None:
        ...


class InProcess(Executor):
    """Every chain in this process, one after the other (sets this process to one torch thread, as a
    worker would, unless `single_thread=False`)."""

    def __init__(self, single_thread: bool = True):
        self.single_thread = single_thread

    def run(self, chains: Sequence[list[Any]], work: Work, on_result: OnResult,
            cost: Cost = chain_count) -> None:
        if self.single_thread:
            single_thread()
        for chain in chains:
            for cell in chain:
                on_result(cell, work(cell))

    def __repr__(self) -> str:
        return "InProcess()"


class LocalProcesses(Executor):
    """`jobs` single-worker process pools on this machine, chains balanced greedily by `cost`."""

    def __init__(self, jobs: int):
        if jobs < 1:
            raise ExecutorError(f"--jobs must be positive, got {jobs}")
        self.jobs = jobs

    def run(self, chains: Sequence[list[Any]], work: Work, on_result: OnResult,
            cost: Cost = chain_count) -> None:
        chains = [c for c in chains if c]
        if not chains:
            return
        plan = balance(chains, [1.0] * min(self.jobs, len(chains)), cost)
        pools = [ProcessPoolExecutor(max_workers=1, initializer=single_thread) for _ in plan]
        cells: dict[Future, Any] = {}
        try:
            for pool, assigned in zip(pools, plan, strict=True):
                for chain in assigned:
                    for cell in chain:
                        cells[pool.submit(work, cell)] = cell
            for future in as_completed(cells):
                on_result(cells.pop(future), future.result())
        finally:
            for pool in pools:
                pool.shutdown(cancel_futures=True)

    def __repr__(self) -> str:
        return f"LocalProcesses({self.jobs})"


def parse_cluster(address: str) -> int | None:
    """The number of local workers of `local:N`, None for tcp://HOST:PORT; ExecutorError otherwise."""
    local = re.fullmatch(r"local:(\d+)", address)
    if local:
        n = int(local.group(1))
        if n >= 1:
            return n
    else:
        tcp = re.fullmatch(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", address)
        if tcp and 1 <= int(tcp.group(2)) <= 65535:
            return None
    raise ExecutorError(f"--cluster must be {CLUSTER_FORMS}; got {address!r}")


def _dask_cell(work: Work, cell: Any, *after: Any) -> list[dict]:
    """A cell's task on a Dask worker; `after` is the previous cell of its chain (only an ordering
    dependency: it ran in this same worker)."""
    single_thread()
    return work(cell)


class DaskCluster(Executor):
    """Cells as tasks on a dask.distributed cluster (see the module docstring for how a chain stays
    in one worker process, in order). `address`: tcp://HOST:PORT of a running scheduler, or local:N."""

    def __init__(self, address: str, timeout: float = CONNECT_TIMEOUT):
        self.local_workers = parse_cluster(address)
        self.address = address
        self.timeout = timeout

    def _client(self, stack: contextlib.ExitStack) -> Any:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ExecutorError("--cluster needs dask.distributed: pip install "
                                "'diffusion-solver-bench[cluster]'") from None
        n = self.local_workers
        try:
            if n is not None:
                cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                           dashboard_address=None))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(self.address, timeout=self.timeout))
            client.wait_for_workers(n or 1, timeout=self.timeout)
        except (OSError, TimeoutError) as exc:
            what = "the local workers did not start" if n is not None else "no scheduler or no worker"
            raise ExecutorError(f"--cluster {self.address}: {what} within {self.timeout:g} s "
                                f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
        return client

    def run(self, chains: Sequence[list[Any]], work: Work, on_result: OnResult,
            cost: Cost = chain_count) -> None:
        chains = [c for c in chains if c]
        if not chains:
            return
        from distributed import as_completed as dask_completed

        with contextlib.ExitStack() as stack:
            client = self._client(stack)
            nthreads = client.nthreads()  # every worker's address -> its threads
            workers = sorted(nthreads)
            plan = balance(chains, [float(nthreads[w] or 1) for w in workers], cost)
            order = {id(chain): i for i, chain in enumerate(sorted(chains, key=cost, reverse=True))}
            cells: dict[Any, Any] = {}
            try:
                for worker, assigned in zip(workers, plan, strict=True):
                    for chain in assigned:
                        previous: tuple = ()
                        for cell in chain:  # pinned to the chain's worker, after the previous cell
                            future = client.submit(functools.partial(_dask_cell, work, cell), *previous,
                                                   workers=[worker], allow_other_workers=True, pure=False,
                                                   priority=-order[id(chain)])
                            cells[future] = cell
                            previous = (future,)
                for future, rows in dask_completed(list(cells), with_results=True):
                    on_result(cells.pop(future), rows)
            finally:
                if cells:
                    client.cancel(list(cells))

    def __repr__(self) -> str:
        return f"DaskCluster({self.address!r})"


def make_executor(jobs: int | None = None, cluster: str | None = None) -> Executor:
    """The executor for --jobs / --cluster: a cluster address wins over jobs; jobs defaults to every
    CPU of this machine (os.cpu_count()), and jobs == 1 runs in this process."""
    if cluster is not None:
        return DaskCluster(cluster)
    if jobs is None:
        jobs = os.cpu_count() or 1
    if jobs < 1:
        raise ExecutorError(f"--jobs must be positive, got {jobs}")
    return InProcess() if jobs == 1 else LocalProcesses(jobs)
