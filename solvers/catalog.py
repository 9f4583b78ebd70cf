"""Imports every solver module so that its @register decorators run."""

from solvers import first_order  # noqa: F401
from solvers import stochastic  # noqa: F401
from solvers import stochastic_kdiff  # noqa: F401
from solvers import multistep  # noqa: F401
from solvers import multistep_ab  # noqa: F401
from solvers import ode_singlestep  # noqa: F401
from solvers import exponential  # noqa: F401
from solvers import adaptive  # noqa: F401
