"""k-diffusion samplers as external solvers.

k-diffusion works in VE scale: x / alpha with sigma~ = sigma / alpha, and a denoiser
model(x, sigma~) -> x0. The harness grid is mapped to sigma~ and, as k-diffusion's own
`get_sigmas_*` do, a final 0 is appended, so the output is a data sample (t_end = 0).
Stochastic samplers get their `noise_sampler` from us: by default normalised increments of one
Brownian path in sigma~ (what k-diffusion's BrownianTreeNoiseSampler gives its SDE samplers, and
equal in law to its randn default for the ancestral ones), seeded by the cell's noise seed;
`[noise=iid]` draws independent normals per call instead, as its default_noise_sampler does.
Its package import pulls torchvision, clip and wandb; `sampling.py` needs only
`utils.append_dims`, so it is executed from its file inside a stub package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import sys
import time
import types
from typing import Any

import torch
from torch import Tensor

from solvers.external.base import (
    NOISE_KINDS,
    CountingModel,
    ExternalSolver,
    NoiseHook,
    hook_and_seed,
    missing,
    result,
    set_meta,
    twin_meta,
)
from solvers.model import Model
from solvers.noise import BrownianTreeNoise, IidNoise, NoiseSource
from solvers.registry import UnknownSolverError
from solvers.sampler import Progress, SampleResult

ORDERS = {"sample_euler": 1, "sample_euler_ancestral": 1, "sample_heun": 2, "sample_dpm_2": 2,
          "sample_dpm_2_ancestral": 2, "sample_lms": 4, "sample_dpmpp_2s_ancestral": 2, "sample_dpmpp_sde": 2,
          "sample_dpmpp_2m": 2, "sample_dpmpp_2m_sde": 2, "sample_dpmpp_3m_sde": 2, "sample_lcm": 1}
"""Theoretical orders (weak for the stochastic ones) of samplers without a twin among our solvers; where
there is a twin `make` takes its order, strong order, cap, note, source and exceptions (base.twin_meta)."""
TWO_CALLS = {"sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
             "sample_dpmpp_sde"}


def load_sampling() -> types.ModuleType:
    """k_diffusion.sampling without the package's heavy imports (PeerMissingError if absent)."""
    if "_kdiff_stub.sampling" in sys.modules:
        return sys.modules["_kdiff_stub.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise missing("k-diffusion (with torchsde and torchdiffeq)")
    pkg = types.ModuleType("_kdiff_stub")
    pkg.__path__ = []  # a package, so relative imports resolve inside it
    utils = types.ModuleType("_kdiff_stub.utils")

    def append_dims(x: Tensor, target_dims: int) -> Tensor:
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["_kdiff_stub"], sys.modules["_kdiff_stub.utils"] = pkg, utils
    path = spec.submodule_search_locations[0] + "/sampling.py"
    mod_spec = importlib.util.spec_from_file_location("_kdiff_stub.sampling", path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules["_kdiff_stub.sampling"] = module
    try:
        mod_spec.loader.exec_module(module)
    except ImportError:
        del sys.modules["_kdiff_stub.sampling"]
        raise missing("k-diffusion's dependencies torchsde and torchdiffeq") from None
    return module


def available() -> list[str]:
    """sample_* functions taking (model, x, sigmas, ...): dpm_fast/dpm_adaptive take sigma ranges."""
    mod = load_sampling()
    out = []
    for name in sorted(dir(mod)):
        fn = getattr(mod, name)
        if name.startswith("sample_") and callable(fn) and list(
                inspect.signature(fn).parameters)[:3] == ["model", "x", "sigmas"]:
            out.append(name)
    return out


class KDenoiser:
    """model(x~, sigma~) -> x0 in VE scale, on one of our Models (counts calls)."""

    def __init__(self, model: Model):
        self.counted = CountingModel(model)

    def __call__(self, x_scaled: Tensor, sigma_tilde: Tensor, **_: Any) -> Tensor:
        sched = self.counted.model.schedule
        t = float(sched.t_of_sigma_tilde(torch.as_tensor(sigma_tilde, dtype=torch.float64).reshape(-1)[0]))
        alpha = float(sched.alpha(t))
        return self.counted(alpha * x_scaled, t).x0.to(x_scaled.dtype)


class KdiffSolver(ExternalSolver):
    prefix = "kdiff:"

    @property
    def noise_kind(self) -> str | None:  # type: ignore[override]
        """The config's kind when the sampler injects noise through a `noise_sampler` (sample_heun
        with s_churn draws its own with randn_like: None)."""
        fn = getattr(load_sampling(), self.target)
        if not self.stochastic or "noise_sampler" not in inspect.signature(fn).parameters:
            return None
        return str(self.config.get("noise", "brownian"))

    def nfe(self, steps: int) -> int:
        """`steps` steps on the harness grid plus the final step to sigma = 0 that the run appends (one
        call: every sampler's last step to 0 is a denoise or an Euler step)."""
        return steps * self.nfe_per_step + 1

    def run(self, model: Model, times: Tensor, x: Tensor, noise: NoiseSource | None = None, *,
            denoise_final: bool = False, progress: Progress | None = None) -> SampleResult:
        start = time.perf_counter()
        fn = getattr(load_sampling(), self.target)
        sched = model.schedule
        grid = torch.as_tensor(times, dtype=torch.float64)
        # the sigmas in the run's dtype, float32 for half precision (k-diffusion's get_sigmas_* make float32)
        wide = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        sigmas = torch.cat([sched.sigma_tilde(grid), torch.zeros(1, dtype=torch.float64)]).to(wide)
        kw = {k: v for k, v in self.config.items() if k != "noise"}
        if self.noise_kind is not None:
            hook, _ = hook_and_seed(noise, lambda seed: self._noise(seed, float(sigmas.max())))
            kw["noise_sampler"] = lambda s, s_next: hook(float(s), float(s_next), x).to(x.dtype)
        denoiser = KDenoiser(model)
        out = fn(denoiser, x / float(sched.alpha(grid[0])), sigmas, disable=True, **kw)
        return result(out, denoiser.counted, len(grid) - 1, start, 0.0)

    def _noise(self, seed: int, sigma_max: float) -> NoiseHook:
        if self.noise_kind == "iid":
            return IidNoise(seed).normal
        return BrownianTreeNoise(seed, 0.0, sigma_max * (1 + 1e-6)).normal


def make(target: str, params: dict[str, Any]) -> KdiffSolver:
    fn = getattr(load_sampling(), target)
    allowed = set(inspect.signature(fn).parameters) - {"model", "x", "sigmas", "extra_args", "callback",
                                                        "disable", "noise_sampler"}
    bad = set(params) - allowed - {"noise"}
    if bad:
        raise UnknownSolverError(f"kdiff:{target} has no parameter {', '.join(sorted(bad))}; "
                                 f"its parameters: {', '.join(sorted(allowed | {'noise'}))}")
    if params.get("noise", "brownian") not in NOISE_KINDS:
        raise UnknownSolverError(f"kdiff:{target}: noise must be one of {', '.join(NOISE_KINDS)}, "
                                 f"got {params['noise']}")
    stochastic = ("ancestral" in target or "sde" in target or target == "sample_lcm"
                  or float(params.get("s_churn", 0)) > 0)
    if params.get("eta") == 0:
        stochastic = False
    solver = KdiffSolver(target=target, config=dict(params))
    object.__setattr__(solver, "reference", f"k-diffusion {importlib.metadata.version('k-diffusion')}")
    order = ORDERS.get(target)
    if target == "sample_lms":
        order = int(params.get("order", 4))
    renames = {"order": "max_order"} if target == "sample_lms" else None
    if target == "sample_dpmpp_sde" and params.get("noise") == "iid":  # not our dpmpp-sde: no shared path
        meta = {"order_source": "k-diffusion sample_dpmpp_sde with independent draws for its substep and "
                                "full step: not our dpmpp-sde, whose measured weak order 2 needs the sqrt(r) "
                                "correlation of one Brownian path; the declared order is ORDERS', unproven"}
    else:
        meta = twin_meta(f"kdiff:{target}", params, stochastic, renames) or {
            "order_source": f"k-diffusion {target}: order as declared in ORDERS (no twin among our solvers)"}
    order = meta.pop("order", order)
    return set_meta(solver, order, stochastic, 2 if target in TWO_CALLS else 1, {"kdiff"}, **meta)
