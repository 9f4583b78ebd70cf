"""Where the declared orders are proven: the textbook theorems the solvers' `order_source` strings cite
(see solvers/base.py). Only strings; no solver code depends on them.

Numerical ODE theory is cited from Hairer, Norsett & Wanner, "Solving Ordinary Differential Equations I"
(2nd ed., 1993), abbreviated HNW I; stochastic theory from Kloeden & Platen, "Numerical Solution of
Stochastic Differential Equations" (1992), Milstein, "Numerical Integration of Stochastic Differential
Equations" (1995) and Milstein & Tretyakov, "Stochastic Numerics for Mathematical Physics" (2004).
"""

from __future__ import annotations

ONE_STEP = "HNW I Thm II.3.6 (a one-step method with local error O(h^(p+1)) converges with order p)"
MULTISTEP = ("HNW I Sec. III.4 (a stable multistep method of order p converges with order p when its "
             "starting values are accurate to O(h^p)) and Sec. III.5 (variable step sizes)")
WARM_UP = ("warm-up rule (HNW I Sec. III.4, starting values): a starting step of local error "
           "O(h^(q'+1)), taken a fixed number of times, adds O(h^(q'+1)) to the global error, so the "
           "asymptotic order is min(q, q'_min + 1)")
EXP_ADAMS = ("Hochbruck & Ostermann 2011 (Exponential multistep methods of Adams type, BIT 51): the "
             "k-step exponential Adams method, i.e. exact integration of the k-point Lagrange "
             "interpolant of the nonlinearity, has order k")
WEAK = ("Milstein & Tretyakov 2004 Thm 2.2.1 (one-step weak error O(h^(p+1)) with bounded moments "
        "=> weak order p)")
WEAK_EULER = "Kloeden & Platen 1992 Thm 14.1.5 (Euler-Maruyama: weak order 1)"
STRONG = ("Milstein 1995 Thm 1.1 (local mean error O(h^p1), local mean-square error O(h^p2), "
          "p1 >= p2 + 1/2 => mean-square order p2 - 1/2)")
STRONG_ADDITIVE = ("Kloeden & Platen 1992 Sec. 10.3 (with additive noise Euler-Maruyama is the "
                   "Milstein scheme: strong order 1, Thm 10.3.5)")
CLARK_CAMERON = ("Clark & Cameron 1980 (The maximum rate of convergence of discrete approximations "
                 "for SDEs): no scheme using only the Brownian values on its grid exceeds strong order 1")
STRONG_ONE = (f"strong order 1: {STRONG}, with p1 = 2, p2 = 3/2 for additive noise; <= 1 by "
              f"{CLARK_CAMERON}")
STRONG_NOTE = ("Strong order 1: the reverse SDE's noise g(t) dW is additive and the step's noise is "
               "g sqrt(h) (1 + O(h)) times the normalised increment of the noise source's Brownian path "
               "over the step, the rest is a consistent drift step: local mean error O(h^2), local "
               "mean-square error O(h^(3/2)).")
ANCESTRAL = ("an ODE step sigma -> sigma_down followed by noise that maps p_sigma_down exactly onto "
             "p_sigma_next (solvers/stochastic_kdiff.py module note): the global weak error is the sum "
             "of the ODE steps' local errors carried by exact kernels (the telescoping proof of "
             "Milstein & Tretyakov 2004 Thm 2.2.1), so the weak order is the ODE step's")
WARM_UP_TINY = ("the warm-up steps sit at t_max, where the data prediction is E[x0] + O(SNR) (SNR = "
                "alpha^2 / sigma^2: 4.5e-5 on vp-linear, 1.6e-4 on edm), so their local errors, and the "
                "A h^cap term they add, carry a factor ~SNR(t_max): slopes up to the nominal order show "
                "at practical N")
