"""Which proven order a measured error is compared with.

A weak error (an error in law: `w2-exact`, the weak metrics, the sample metrics) converges at the
solver's weak order, a pathwise error (`path-rms`, `path-median`) at its strong order; for ODE
solvers both are the method's order. The declared values are theorems (solvers/base.py): the
asymptotic order `low` is the implementation's cap where it has one, else the declared order. A
proven `OrderException` that applies (a warm-up cap whose constant is tiny, a Gaussian-only
cancellation) raises `high`: at practical step counts the error A h^low + B h^high with A tiny may
show any slope in [low, high].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from solvers.base import Solver

STRONG_METRICS: frozenset[str] = frozenset({"path-rms", "path-median"})
NO_ORDER_METRICS: frozenset[str] = frozenset({"fid", "mode-flips"})


@dataclass(frozen=True)
class Theory:
    low: float  # the asymptotic order proven for this implementation
    high: float  # the highest order the theory allows at finite N
    kind: str  # "ode" (weak = strong), "weak" or "strong"
    note: str


def conditions(gaussian: bool, grid: str, schedule: str) -> frozenset[str]:
    """The facts an OrderException's `when` is matched against."""
    facts = {f"grid={grid.split('[')[0]}", f"schedule={schedule}"}
    return frozenset(facts | ({"gaussian"} if gaussian else set()))


def theory(solver: Solver, metric: str, facts: frozenset[str] = frozenset()) -> Theory:
    """The order interval a `metric` measured on `solver` is compared with (NaN: none)."""
    if metric in NO_ORDER_METRICS:
        return Theory(math.nan, math.nan, "", "no order for this metric")
    if solver.stochastic and metric in STRONG_METRICS:
        strong = math.nan if solver.strong_order is None else float(solver.strong_order)
        return Theory(strong, strong, "strong", "")
    nominal = float(solver.order)
    low = nominal if solver.order_cap is None else min(nominal, float(solver.order_cap))
    high, notes = low, [solver.order_note] if solver.order_cap is not None else []
    for exc in solver.order_exceptions:
        if set(exc.when) <= facts:
            high = max(high, float(exc.high))
            notes.append(exc.note)
    return Theory(low, high, "weak" if solver.stochastic else "ode", " ".join(n for n in notes if n))
