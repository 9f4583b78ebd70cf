"""Exact targets fitted to real images (cf. Pierret & Galerne, ICML 2025, who fit a Gaussian to CIFAR-10).

For a data set X (N images, d pixels, in [-1, 1]) three exact targets:
- `-gauss`: N(mean, cov), mean and full covariance with ddof 0 and no ridge (padded pixels keep zero
  variance; every marginal at t >= t_min > 0 has covariance alpha^2 cov + sigma^2 I, non-degenerate);
- `-gmm`: one Gaussian per class (weights = class frequencies, component j = class j, so guidance's
  class labels are the data set's), each fitted like `-gauss`;
- `-empirical[n=N]`: the first N training images as point masses, p_t = mean_i N(alpha x_i, sigma^2 I):
  the exact score of real data (analytic.targets.IsotropicMixture).
Fits are memoized per process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from analytic.datasets import digits, fashion_mnist
from analytic.targets import GaussianMixture, IsotropicMixture


@dataclass(frozen=True)
class ImageData:
    label: str
    shape: tuple[int, int, int]
    default_n: int  # images in `-empirical` without [n=...]
    load: object  # () -> (images float64 [N, C, H, W], labels)


DATA: dict[str, ImageData] = {
    "digits": ImageData("8x8 digits (scikit-learn)", (1, 8, 8), 1797, digits),
    "fmnist": ImageData("Fashion-MNIST 32x32 (train, 60k)", (1, 32, 32), 1000, fashion_mnist),
}
KINDS = {
    "gauss": "Gaussian, mean and full covariance",
    "gmm": "one Gaussian per class (10)",
    "empirical": "first n images as point masses (exact data score)",
}
_NAME = re.compile(r"^(?P<data>[a-z]+)-(?P<kind>[a-z]+)(?:\[n=(?P<n>\d+)\])?$")


class ImageProblemError(ValueError):
    """An image-problem name that does not parse (one-line message)."""


def names() -> list[str]:
    return [f"{data}-{kind}" for data in DATA for kind in KINDS]


def is_image_problem(name: str) -> bool:
    m = _NAME.match(name)
    return bool(m) and m["data"] in DATA and m["kind"] in KINDS


def describe(name: str) -> dict:
    """dim, components, gaussian and a one-line description, without fitting."""
    data, kind, n = parse(name)
    spec = DATA[data]
    components = {"gauss": 1, "gmm": 10, "empirical": n}[kind]
    what = f"{spec.label}: {KINDS[kind]}".replace("first n", f"first n = {n}")
    return {"dim": spec.shape[0] * spec.shape[1] * spec.shape[2], "components": components,
            "gaussian": components == 1, "description": what}


def parse(name: str) -> tuple[str, str, int]:
    m = _NAME.match(name)
    if not m or m["data"] not in DATA or m["kind"] not in KINDS:
        raise ImageProblemError(f"unknown image problem {name!r}; valid: {', '.join(names())} "
                                "(empirical takes [n=N])")
    if m["n"] is not None and m["kind"] != "empirical":
        raise ImageProblemError(f"{name}: only -empirical takes [n=N]")
    n = int(m["n"]) if m["n"] is not None else DATA[m["data"]].default_n
    return m["data"], m["kind"], n


def _fit_gaussian(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (ddof 0) of rows x (float64)."""
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / len(x)


@lru_cache(maxsize=8)
def image_target(name: str) -> tuple[GaussianMixture | IsotropicMixture, tuple[int, int, int]]:
    """The fitted target of an image problem and the (C, H, W) shape of its points."""
    data, kind, n = parse(name)
    spec = DATA[data]
    images, labels = spec.load()
    x = images.reshape(len(images), -1).to(torch.float64)
    if kind == "gauss":
        mean, cov = _fit_gaussian(x)
        return GaussianMixture(torch.ones(1, dtype=torch.float64), mean[None], cov[None]), spec.shape
    if kind == "gmm":
        classes = torch.unique(labels)
        fits = [_fit_gaussian(x[labels == c]) for c in classes]
        weights = torch.stack([(labels == c).sum() for c in classes]).to(torch.float64) / len(labels)
        return GaussianMixture(weights, torch.stack([m for m, _ in fits]),
                               torch.stack([c for _, c in fits])), spec.shape
    if not 1 <= n <= len(x):
        raise ImageProblemError(f"{name}: n must be in 1..{len(x)}")
    return IsotropicMixture(torch.full((n,), 1.0 / n, dtype=torch.float64), x[:n]), spec.shape
