"""Load the peer libraries used as oracles in parity tests, without their heavy imports.

k-diffusion's package import pulls torchvision, clip and wandb; its `sampling` module needs only
`utils.append_dims`, so it is executed from its file inside a stub package.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch


def kdiffusion_sampling():
    """k_diffusion.sampling, or skip the test when k-diffusion is not installed."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion not installed (pip install --no-deps k-diffusion torchsde torchdiffeq)")
    if "_kdiff_stub.sampling" in sys.modules:
        return sys.modules["_kdiff_stub.sampling"]
    pkg = types.ModuleType("_kdiff_stub")
    pkg.__path__ = []  # a package, so relative imports resolve inside it
    utils = types.ModuleType("_kdiff_stub.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["_kdiff_stub"], sys.modules["_kdiff_stub.utils"] = pkg, utils
    path = spec.submodule_search_locations[0] + "/sampling.py"
    mod_spec = importlib.util.spec_from_file_location("_kdiff_stub.sampling", path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules["_kdiff_stub.sampling"] = module
    mod_spec.loader.exec_module(module)
    return module


def diffusers():
    return pytest.importorskip("diffusers")


class KDenoiser:
    """k-diffusion's model convention: model(x, sigma) -> denoised x0 in the scaled variable
    x / alpha, for a VE-scaled sigma = sigma(t) / alpha(t). Built on one of our Models."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def __call__(self, x_scaled: torch.Tensor, sigma_tilde: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sched = self.model.schedule
        s = float(sigma_tilde.reshape(-1)[0])
        t = float(sched.t_of_sigma_tilde(s))
        alpha = float(sched.alpha(t))
        return self.model(alpha * x_scaled, t).x0
