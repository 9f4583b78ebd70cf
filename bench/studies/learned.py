"""Learned scores: a small time-conditioned MLP trained by denoising score matching on exact
samples of an analytic problem, and its score error measured against the exact score.

DSM (Vincent 2011; Song et al. 2021 eq. 7; Ho et al. 2020 eq. 14): with x_t = alpha x_0 + sigma eps,
    L(theta) = E_t E_{x_0, eps} || eps_theta(x_t, t) - eps ||^2,
i.e. sigma_t^2-weighted score matching, since eps = -sigma grad log p_t(x_t | x_0). Its minimizer is
the exact eps_hat = -sigma grad log p_t, so on mixtures the *score error*
    E_t sigma_t^2 E_{x ~ p_t} || s_theta - grad log p_t ||^2 = E_t E || eps_theta - eps_hat ||^2
is measurable exactly (the statistical error of the seed chapter's error split).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from analytic.problems import Problem, get_problem
from solvers.model import Model


class CheckpointError(ValueError):
    """A checkpoint or training option that cannot be used; the message is one line for the user."""


@dataclass
class TrainConfig:
    problem: str = "mix-2d"
    schedule: str | None = None
    parameterization: str = "eps"  # "eps" or "score"
    width: int = 128
    depth: int = 3
    train_steps: int = 3000
    samples: int = 20000  # size of the fixed training set of exact x_0 samples
    batch: int = 512
    lr: float = 2e-3
    seed: int = 0
    eval_every: int = 250

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Trained:
    net: ScoreMLP
    config: TrainConfig
    curve: list[dict] = field(default_factory=list)  # {"step", "loss", "score_error", "seconds"}


class ScoreMLP(nn.Module):
    """MLP(x, features(log-SNR)) -> eps (or score). Time enters through sinusoidal features of
    lambda = log(alpha^2 / sigma^2), which is well scaled for every schedule."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, n_freq: int = 8):
        super().__init__()
        self.dim, self.n_freq = dim, n_freq
        layers: list[nn.Module] = [nn.Linear(dim + 2 * n_freq, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, dim))
        self.body = nn.Sequential(*layers)
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 16.0)

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        angles = lam.reshape(-1, 1) * self.freqs
        feats = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).expand(len(x), -1)
        return self.body(torch.cat([x, feats], dim=-1))


def _eps_from_net(net: ScoreMLP, x: Tensor, lam: Tensor, sigma: Tensor, param: str) -> Tensor:
    """The network's eps prediction; a score-parameterized net outputs s and eps = -sigma s."""
    out = net(x, lam)
    return out if param == "eps" else -sigma.reshape(-1, 1) * out


def _check(config: TrainConfig) -> None:
    if config.parameterization not in ("eps", "score"):
        raise CheckpointError(f"--param must be eps or score, got {config.parameterization!r}")
    for name in ("width", "depth", "train_steps", "samples", "batch"):
        if getattr(config, name) <= 0:
            raise CheckpointError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")


def score_error(problem: Problem, eps_fn: Callable[[Tensor, Tensor], Tensor], n_times: int = 32,
                n: int = 256, seed: int = 12345) -> float:
    """E_t E_{x ~ p_t} ||eps_fn(x, t) - eps_hat(x, t)||^2 = E_t sigma_t^2 E ||s - grad log p_t||^2,
    t on a midpoint grid uniform in [t_min, t_max] (the DSM training law of t), fixed x draws."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(n_times):
        t = problem.t_min + (i + 0.5) / n_times * (problem.t_max - problem.t_min)
        x = problem.sample_marginal(t, n, g)
        with torch.no_grad():
            diff = eps_fn(x, torch.tensor(t, dtype=torch.float64)).double() - problem.eps(x, t)
        total += float(diff.pow(2).sum(-1).mean())
    return total / n_times


def _net_eps(trained: Trained, problem: Problem) -> Callable[[Tensor, Tensor], Tensor]:
    sched, param, net = problem.schedule, trained.config.parameterization, trained.net

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        t64 = t.to(torch.float64).reshape(-1)
        lam, sigma = sched.log_snr(t64).float(), sched.sigma(t64).float()
        with torch.no_grad():
            return _eps_from_net(net, x.float(), lam, sigma, param).to(x.dtype)

    return eps_fn


def train(config: TrainConfig, progress: Callable[[dict], None] | None = None) -> Trained:
    """Denoising score matching on a fixed set of `samples` exact draws of the problem's data."""
    _check(config)
    problem = get_problem(config.problem, config.schedule)
    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    data = problem.target.sample(config.samples, g).float()
    net = ScoreMLP(problem.dim, config.width, config.depth)
    trained = Trained(net, config)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched_lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.train_steps)
    start, running = time.perf_counter(), math.nan

    def evaluate(step: int) -> None:
        net.eval()
        err = score_error(problem, _net_eps(trained, problem))
        point = {"step": step, "loss": running, "score_error": err, "seconds": time.perf_counter() - start}
        net.train()
        trained.curve.append(point)
        if progress is not None:
            progress(point)

    evaluate(0)
    for step in range(1, config.train_steps + 1):
        idx = torch.randint(0, config.samples, (config.batch,), generator=g)
        t = problem.t_min + (problem.t_max - problem.t_min) * torch.rand(config.batch, generator=g,
                                                                          dtype=torch.float64)
        alpha, sigma = problem.schedule.alpha(t), problem.schedule.sigma(t)
        eps = torch.randn(config.batch, problem.dim, generator=g)
        x_t = alpha.float().unsqueeze(-1) * data[idx] + sigma.float().unsqueeze(-1) * eps
        pred = _eps_from_net(net, x_t, problem.schedule.log_snr(t).float(), sigma.float(),
                             config.parameterization)
        loss = (pred - eps).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched_lr.step()
        value = loss.item()
        running = value if math.isnan(running) else 0.98 * running + 0.02 * value
        if step % config.eval_every == 0 or step == config.train_steps:
            evaluate(step)
    net.eval()
    return trained


def save_checkpoint(trained: Trained, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "dsb-score-mlp-1", "config": trained.config.to_dict(), "curve": trained.curve,
                "state_dict": trained.net.state_dict()}, path)
    return path


def load_checkpoint(path: str | Path) -> Trained:
    path = Path(path)
    try:
        data = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("format") != "dsb-score-mlp-1":
        raise CheckpointError(f"{path} is not a `bench learned train` checkpoint")
    config = TrainConfig(**data["config"])
    problem = get_problem(config.problem, config.schedule)
    net = ScoreMLP(problem.dim, config.width, config.depth)
    net.load_state_dict(data["state_dict"])
    net.eval()
    return Trained(net, config, list(data["curve"]))


def learned_model(trained: Trained, problem: Problem | None = None) -> Model:
    """The trained network as an eps-parameterized Model on its problem's schedule."""
    problem = problem or get_problem(trained.config.problem, trained.config.schedule)
    return Model(_net_eps(trained, problem), "eps", problem.schedule)
