"""Step-count-specific defects in an error curve e(N) measured at every N: isolated outliers and level
shifts, judged after removing the local trend (the curve's own power law in N).

Outlier at N: the line log e = a + b log M through its four nearest neighbours (two on each side where
there are: N-2..N+2 on a dense range, more on one side at the ends) by Theil-Sen (median of pairwise
slopes, then median intercept) gives the trend; N is an outlier when e(N) exceeds `factor` times the
trend at N times the median of the window's detrended ratios (N's own included).
Level shift between consecutive N and N': the three step counts up to N and the three from N' give a
common slope (median of the within-side pairwise slopes); the two sides' median intercepts differ by
more than `factor` (the error jumps, e.g. where a library switches its final-step rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import median

import numpy as np

FACTOR = 3.0
MIN_N = 4  # below this the curve is pre-asymptotic for every multistep method (warm-up steps)


@dataclass(frozen=True)
class Outlier:
    n: int
    value: float
    trend: float  # what the neighbours' trend predicts at n

    @property
    def ratio(self) -> float:
        return self.value / self.trend


@dataclass(frozen=True)
class Shift:
    n: int  # the last step count before the jump
    n_next: int
    ratio: float  # error level before / after (> 1: worse before; < 1: worse after)


def _line(lx: list[float], ly: list[float]) -> tuple[float, float]:
    """Theil-Sen: (intercept, slope)."""
    slopes = [(ly[j] - ly[i]) / (lx[j] - lx[i]) for i, j in combinations(range(len(lx)), 2) if lx[j] != lx[i]]
    slope = median(slopes) if slopes else 0.0
    return median(y - slope * x for x, y in zip(lx, ly, strict=True)), slope


def _curve(ns, errors, floors=None) -> tuple[np.ndarray, np.ndarray]:
    """Step counts and errors that can be judged: finite, positive, above 3x their noise floor."""
    n = np.asarray(ns, dtype=float)
    e = np.asarray(errors, dtype=float)
    f = np.zeros_like(e) if floors is None else np.nan_to_num(np.asarray(floors, dtype=float))
    keep = np.isfinite(e) & (e > 0) & (e > 3 * f)
    order = np.argsort(n[keep])
    return n[keep][order], e[keep][order]


def outliers(ns, errors, floors=None, factor: float = FACTOR, min_n: int = MIN_N) -> list[Outlier]:
    """Step counts whose error exceeds `factor` x the detrended median of their neighbourhood."""
    n, e = _curve(ns, errors, floors)
    lx, ly = np.log(n), np.log(e)
    found = []
    for i in range(len(n)):
        if n[i] < min_n:
            continue
        nearest = [i + sign * k for k in range(1, len(n)) for sign in (-1, 1)]
        neighbours = [j for j in nearest if 0 <= j < len(n)][:4]
        if len(neighbours) < 4:
            continue
        a, b = _line([lx[j] for j in neighbours], [ly[j] for j in neighbours])
        level = median(ly[j] - (a + b * lx[j]) for j in [i, *neighbours])
        trend = math.exp(a + b * lx[i] + level)
        if e[i] > factor * trend:
            found.append(Outlier(int(n[i]), float(e[i]), trend))
    return found


def shifts(ns, errors, floors=None, factor: float = FACTOR, min_n: int = MIN_N) -> list[Shift]:
    """Consecutive step counts (N, N + 1) between which the detrended error level jumps by > factor."""
    n, e = _curve(ns, errors, floors)
    lx, ly = np.log(n), np.log(e)
    found = []
    for i in range(2, len(n) - 3):
        if n[i] < min_n or n[i + 1] != n[i] + 1:
            continue
        left, right = range(i - 2, i + 1), range(i + 1, i + 4)
        if n[left[0]] != n[i] - 2 or n[right[-1]] != n[i] + 3:
            continue
        slopes = [(ly[k] - ly[j]) / (lx[k] - lx[j])
                  for side in (left, right) for j, k in combinations(side, 2)]
        slope = median(slopes)
        a_left = median(ly[j] - slope * lx[j] for j in left)
        a_right = median(ly[j] - slope * lx[j] for j in right)
        ratio = math.exp(a_left - a_right)
        if ratio > factor or ratio < 1 / factor:
            step = abs(ly[i] - ly[i + 1] - slope * (lx[i] - lx[i + 1]))  # the jump across this pair itself
            found.append((step, Shift(int(n[i]), int(n[i + 1]), ratio)))
    # windows that straddle one jump detect it too: keep, per run of consecutive detections, the pair
    # across which the detrended error itself jumps most
    runs: list[list[tuple[float, Shift]]] = []
    for item in found:
        if runs and item[1].n == runs[-1][-1][1].n_next:
            runs[-1].append(item)
        else:
            runs.append([item])
    return [max(run, key=lambda item: item[0])[1] for run in runs]


def ranges(values) -> str:
    """'2-5, 9, 12-14' for sorted integers."""
    values = sorted({int(v) for v in values})
    parts, start = [], None
    for k, v in enumerate(values):
        if start is None:
            start = v
        if k + 1 == len(values) or values[k + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)
