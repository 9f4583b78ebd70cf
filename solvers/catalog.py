"""Imports every solver module so that its @register decorators run."""

from solvers import first_order  # noqa: F401
