"""Load the peer libraries used as oracles in parity tests, without their heavy imports.

k-diffusion's package import pulls torchvision, clip and wandb; solvers/external/kdiffusion.py
executes its `sampling` module from its file inside a stub package.
"""

from __future__ import annotations

import pytest
import torch


def kdiffusion_sampling():
    """k_diffusion.sampling (loaded by solvers/external/kdiffusion.py), or skip the test when
    k-diffusion is not installed."""
    from solvers.external import PeerMissingError
    from solvers.external.kdiffusion import load_sampling

    try:
        return load_sampling()
    except PeerMissingError:
        pytest.skip("k-diffusion not installed (pip install --no-deps k-diffusion torchsde torchdiffeq)")


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
