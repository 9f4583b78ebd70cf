"""Imports every solver module so that its @register decorators run."""

from solvers import (
    adaptive,  # noqa: F401
    exponential,  # noqa: F401
    first_order,  # noqa: F401
    multistep,  # noqa: F401
    multistep_ab,  # noqa: F401
    ode_singlestep,  # noqa: F401
    stochastic,  # noqa: F401
    stochastic_kdiff,  # noqa: F401
)
