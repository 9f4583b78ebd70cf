"""Explicit Runge-Kutta methods on the probability-flow ODE dx/dt = f x - g^2/2 score (Song et al. 2021
eq. 13; `Prediction.drift`) in the schedule's own time t, each given by its Butcher tableau
(Butcher 1964; HNW I Sec. II.1). A new method is a tableau and a registered subclass of `_ExplicitRK`
with its order and where the order is proven; one generic step runs them all. `ButcherTableau.order`
checks the tableau against the order conditions (HNW I Thm II.2.13), so a declared order can be
compared with the algebra as well as with measured slopes.

Stage i of a step t -> t + h evaluates k_i = drift(x + h sum_j a_ij k_j, t + c_i h); the step returns
x + h sum_i b_i k_i: one model call per stage (`nfe_per_step` = number of stages).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from torch import Tensor

from solvers import citations as cite
from solvers.base import OrderException, Solver, State
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register

ORDER_CONDITIONS = ("order conditions HNW I Thm II.2.13 (Butcher 1964: sum_i b_i Phi_i(tau) = 1/gamma(tau) "
                    "for every rooted tree tau of order <= p)")


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method as diffrax writes it: `a` holds the rows of stages 2..s (row i has
    i entries, the coefficients of k_1..k_i), `b` the s weights, `c` the nodes of stages 2..s (c_1 = 0).
    The nodes must equal the row sums of `a` (the usual assumption, HNW I Sec. II.1)."""

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.a) != s - 1 or len(self.c) != s - 1:
            raise ValueError(f"a {s}-stage tableau needs {s - 1} rows in a and {s - 1} nodes in c")
        for i, (row, node) in enumerate(zip(self.a, self.c, strict=True), start=1):
            if len(row) != i:
                raise ValueError(f"row {i + 1} of a needs {i} entries, got {len(row)}")
            if abs(sum(row) - node) > 1e-12:
                raise ValueError(f"node c_{i + 1} = {node} is not the row sum {sum(row)} of a")
        if abs(sum(self.b) - 1) > 1e-12:
            raise ValueError(f"weights b sum to {sum(self.b)}, not 1 (the method would be inconsistent)")

    @property
    def stages(self) -> int:
        return len(self.b)

    @cached_property
    def order(self) -> int:
        """The largest p <= 6 for which the order conditions of every rooted tree of order <= p hold
        (to 1e-12): the classical order of the method (HNW I Thm II.2.13)."""
        s = self.stages
        rows = [[0.0] * s] + [list(row) + [0.0] * (s - len(row)) for row in self.a]

        def weights(tree: tuple) -> list[float]:  # Phi_i(tree): product over subtrees of (A Phi(sub))_i
            out = [1.0] * s
            for sub in tree:
                inner = weights(sub)
                out = [o * sum(rows[i][j] * inner[j] for j in range(s)) for i, o in enumerate(out)]
            return out

        def density(tree: tuple) -> int:  # gamma(tree) = |tree| prod gamma(sub)
            return _size(tree) * math.prod(density(sub) for sub in tree)

        order = 0
        for p in range(1, 7):
            for tree in _trees(p):
                phi = sum(bi * w for bi, w in zip(self.b, weights(tree), strict=True))
                if abs(phi - 1 / density(tree)) > 1e-12:
                    return order
            order = p
        return order


def _size(tree: tuple) -> int:
    return 1 + sum(_size(sub) for sub in tree)


def _trees(n: int) -> list[tuple]:
    """The rooted trees with n vertices, each a sorted tuple of its root's subtrees."""
    if n == 1:
        return [()]
    out = set()
    for parts in _partitions(n - 1):
        for combo in itertools.product(*(_trees(k) for k in parts)):
            out.add(tuple(sorted(combo)))
    return sorted(out)


def _partitions(n: int, largest: int | None = None) -> list[tuple[int, ...]]:
    largest = n if largest is None else largest
    if n == 0:
        return [()]
    return [(k, *rest) for k in range(min(n, largest), 0, -1) for rest in _partitions(n - k, k)]


# The tableaus (HNW I Tables II.1.1-1.2 and II.5.2; Ralston 1962).
EULER = ButcherTableau(a=(),
                       b=(1.0,),
                       c=())
HEUN = ButcherTableau(a=((1.0,),),
                      b=(1 / 2, 1 / 2),
                      c=(1.0,))
MIDPOINT = ButcherTableau(a=((1 / 2,),),
                          b=(0.0, 1.0),
                          c=(1 / 2,))
RALSTON = ButcherTableau(a=((2 / 3,),),
                         b=(1 / 4, 3 / 4),
                         c=(2 / 3,))
RK4 = ButcherTableau(a=((1 / 2,), (0.0, 1 / 2), (0.0, 0.0, 1.0)),
                     b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
                     c=(1 / 2, 1 / 2, 1.0))
# Dormand-Prince: the 5th-order solution; the 7th (FSAL) stage only feeds the embedded error estimate
DOPRI5 = ButcherTableau(
    a=((1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656)),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    c=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0))


@dataclass
class _ExplicitRK(Solver):
    """The generic explicit Runge-Kutta step of `tableau` on the PF-ODE in t; subclasses set the
    tableau and the declared order (`nfe_per_step` is the tableau's number of stages)."""

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "tableau" in vars(cls):
            cls.nfe_per_step = cls.tableau.stages

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        tab = self.tableau
        h = t_next - t
        ks = [model(x, t).drift]
        for row, node in zip(tab.a, tab.c, strict=True):
            incr = _combine(row, ks)
            x_stage = x if incr is None else x + h * incr
            ks.append(model(x_stage, t_next if node == 1 else t + node * h).drift)
        return x + h * _combine(tab.b, ks)


def _combine(coefs: tuple[float, ...], ks: list[Tensor]) -> Tensor | None:
    """sum_j coefs_j k_j over the nonzero coefficients (a weight 1 adds k_j itself; None: all zero)."""
    out = None
    for coef, k in zip(coefs, ks, strict=True):
        if coef == 0:
            continue
        term = k if coef == 1 else coef * k
        out = term if out is None else out + term
    return out


_AFFINE_NOTE = (
    "Gaussian target N(m, v) (per eigen-direction) on a schedule with alpha and sigma affine in t (edm: "
    "alpha = 1, sigma = t; rectified-flow: alpha = 1 - t, sigma = t): with x = alpha(t) m + y the step "
    "carries the affine mean exactly (nodes c = row sums of a) and y' = l(t) y, l = q'/(2q), q = alpha^2 v "
    "+ sigma^2 quadratic in t. For y' = l(t) y the h^3 local error of a two-stage order-2 method is "
    "h^3 [(1/6 - sum b c^2/2)(l'' + 2 l l') + (1/6) l (l' + l^2)] y, and every quadratic q gives "
    "l'' + 2 l l' = -4 l (l' + l^2): the midpoint rule (sum b c^2 = 1/4) has coefficient -1/6 + 1/6 = 0, "
    "so its local error is O(h^4) and W2 falls at 3 (Heun and Ralston keep an h^3 term proportional to "
    "(4ac - b^2)(2at + b)/q^3 for q = at^2 + bt + c); order 2 in general.")
MIDPOINT_AFFINE = tuple(OrderException(when=("gaussian", f"schedule={name}"), high=3, note=_AFFINE_NOTE)
                        for name in ("edm", "rectified-flow"))


@register("euler")
@dataclass
class Euler(_ExplicitRK):
    """Explicit Euler on the PF-ODE dx/dt = f x - g^2/2 score in the schedule's time t
    (Song et al. 2021 eq. 13; Karras et al. tutorial eq. 43). Order 1 (local error O(h^2); HNW I
    Thm II.3.6), 1 NFE per step."""

    tableau = EULER
    order = 1
    order_source = f"explicit Euler, local error O(h^2): {cite.ONE_STEP}, p = 1"
    reference = "Song et al. 2021 (score SDE) eq. 13, explicit Euler"


@register("heun")
@dataclass
class Heun(_ExplicitRK):
    """Heun's method (explicit trapezoidal rule) on the PF-ODE dx/dt = f x - g^2/2 score in the
    schedule's own time t (Karras et al. 2022 Alg. 1 when t = sigma, alpha = 1). Order 2 (two-stage
    explicit RK satisfying the order-2 conditions, HNW I Sec. II.1; HNW I Thm II.3.6), 2 NFE per step."""

    tableau = HEUN
    order = 2
    order_source = (f"Heun's method / explicit trapezoidal rule, order conditions HNW I Sec. II.1: "
                    f"{cite.ONE_STEP}, p = 2")
    reference = "Karras et al. 2022 (EDM) Alg. 1; Heun / explicit trapezoidal rule in t"


@register("midpoint")
@dataclass
class Midpoint(_ExplicitRK):
    """The explicit midpoint rule (Runge 1895) on the PF-ODE in the schedule's time t: an Euler half
    step to t + h/2, then the full step with the drift there. Order 2: b = (0, 1), c_2 = 1/2 satisfy
    sum b = 1 and sum b c = 1/2, the order-2 conditions (HNW I Sec. II.1, Thm II.2.13), so HNW I
    Thm II.3.6 gives global order 2. 2 NFE per step.

    Proven exception: on a Gaussian target with alpha, sigma affine in t (edm, rectified-flow) the h^3
    local error vanishes identically (MIDPOINT_AFFINE), so the exact W2 error falls at 3 there."""

    tableau = MIDPOINT
    order = 2
    order_exceptions = MIDPOINT_AFFINE
    order_source = (f"explicit midpoint rule (Runge 1895; HNW I Table II.1.1), {ORDER_CONDITIONS} "
                    f"with p = 2: {cite.ONE_STEP}, p = 2")
    reference = "Runge 1895, explicit midpoint rule (Hairer-Norsett-Wanner I Sec. II.1) on PF-ODE eq. 13"


@register("ralston")
@dataclass
class Ralston(_ExplicitRK):
    """Ralston's two-stage method on the PF-ODE in the schedule's time t: node 2/3, weights (1/4, 3/4),
    the second-order two-stage RK whose local error bound is smallest (Ralston 1962). Order 2: it
    satisfies sum b = 1 and sum b c = 1/2 and not the order-3 conditions (HNW I Sec. II.1,
    Thm II.2.13), so HNW I Thm II.3.6 gives global order 2. 2 NFE per step."""

    tableau = RALSTON
    order = 2
    order_source = (f"Ralston 1962 (Math. Comp. 16: the two-stage RK of minimum error bound), "
                    f"{ORDER_CONDITIONS} with p = 2: {cite.ONE_STEP}, p = 2")
    reference = "Ralston 1962, Runge-Kutta methods with minimum error bounds (Math. Comp. 16), PF-ODE eq. 13"


@register("rk4")
@dataclass
class ClassicalRK4(_ExplicitRK):
    """Classical fourth-order Runge-Kutta on the PF-ODE in the schedule's time t (Kutta 1901;
    Hairer, Norsett & Wanner I, Table 1.2). Order 4 (HNW I Thm II.3.6), 4 NFE per step (two at the
    midpoint time)."""

    tableau = RK4
    order = 4
    order_source = f"Kutta 1901 classical RK4 (HNW I Table II.1.2, order 4 by Sec. II.2): {cite.ONE_STEP}"
    reference = "Kutta 1901, classical RK4 (Hairer-Norsett-Wanner I, Table II.1.2) on PF-ODE eq. 13"


@register("dopri5")
@dataclass
class Dopri5(_ExplicitRK):
    """Dormand-Prince 5 at fixed steps on the PF-ODE in the schedule's time t: the six stages and the
    5th-order weights of RK5(4)7FM (Dormand & Prince 1980; HNW I Table II.5.2). The seventh stage
    (first same as last) serves only the embedded 4th-order error estimate, which fixed steps do not
    use, so it is not evaluated: 6 NFE per step, no stage carried across steps. Order 5 (its weights
    satisfy the order conditions of every tree of order <= 5, HNW I Thm II.2.13; HNW I Thm II.3.6).
    `rk45` is the same pair with step-size control."""

    tableau = DOPRI5
    order = 5
    order_source = (f"Dormand & Prince 1980 (RK5(4)7FM, its 5th-order weights; HNW I Table II.5.2), "
                    f"{ORDER_CONDITIONS} with p = 5: {cite.ONE_STEP}, p = 5")
    reference = "Dormand & Prince 1980 RK5(4)7FM at fixed steps, 5th-order weights (HNW I Table II.5.2)"
