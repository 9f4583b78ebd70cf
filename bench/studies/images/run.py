"""`bench images run`: every solver at every NFE budget on a learned image model, from the same
initial noise, scored by path-rms against a high-NFE reference (and FID when bench.studies.images.fid exists).

Reference (documented choice), from bench/measure/reference.py as in every study: deterministic
solvers share one ODE reference, DPM-Solver++(3M) at `reference_steps` (default 500) log-SNR steps
from the same x_T; a stochastic solver is compared on the same Brownian paths with its limit's
integrator (`integrator_for`: exp-sde for every reverse-SDE solver, else the solver itself) at
`reference_steps`. Each reference's noise floor is path-rms(reference, same method at half the
steps), an upper estimate of its own error (`self_checked`).

Precision: `dtype` bfloat16 evaluates the network under autocast (sampling.with_dtype), the solvers'
arithmetic stays float32; `fid_dtype` does the same for the Inception. FID rows carry their sample
count, a `note` with the reference and the regime (n < 10000: small-sample, biased up, comparable at
equal n only), and as `noise_floor` the FID of as many real images outside the reference (the other
split of Fashion-MNIST when the reference uses a whole split).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from bench.measure.grids import model_grid
from bench.measure.reference import integrator_for, path_rms, self_checked
from bench.measure.theory import theory
from bench.studies.images.data import DataError, load_dataset, to_uint8
from bench.studies.images.models import load_model
from bench.studies.images.sampling import (
    NETWORK_DTYPES,
    BatchedSample,
    initial_noise,
    sample_batches,
    with_dtype,
)
from bench.sweep.engine import Cell, Study, run_study
from bench.sweep.store import load_rows
from solvers import Solver, make_solver, resolve
from solvers.model import Model

REFERENCE_SOLVER = "dpmpp-3m"
FID_10K = 10_000  # samples and reference images of the usual FID regime
OTHER_SPLIT = {"fashion-mnist-test": "fashion-mnist", "fashion-mnist": "fashion-mnist-test"}


class ImageRunError(ValueError):
    """Bad images-run input (one-line message)."""


@dataclass
class ImageRunConfig:
    model: str
    solvers: list[str] = field(default_factory=lambda: ["ddim", "heun", "dpmpp-2m", "dpmpp-3m"])
    nfe: list[int] = field(default_factory=lambda: [5, 10, 20, 50])
    samples: int = 64
    seed: int = 0
    batch: int = 64
    grid: str = "logsnr"
    reference_steps: int = 500
    denoise_final: bool = False
    device: str = "cpu"
    fid_dataset: str | None = None  # FID against this dataset's images (load_dataset's names)
    fid_extractor: str = "inception"
    fid_reference: int = 2000
    fid_data_root: str | None = None  # the dataset's files (default: load_dataset's)
    fid_cache_dir: str | None = None  # Inception weights and reference statistics (default: fid.cache_dir())
    dtype: str = "float32"  # the network's (NETWORK_DTYPES); solver arithmetic stays float32
    fid_dtype: str = "float32"  # the Inception's (fid.DTYPES)
    fid_batch: int = 50  # Inception batch

    def to_dict(self) -> dict:
        return asdict(self)


FID_SETTINGS = {"fid_dataset": None, "fid_extractor": "inception", "fid_reference": 2000,
                "fid_dtype": "float32"}  # with the value a directory written before the setting had


class FIDHook:
    """FID of generated images against cached statistics of a dataset, via bench.studies.images.fid."""

    def __init__(self, cfg: ImageRunConfig):
        fid = importlib.import_module("bench.studies.images.fid")
        self.fid, self.cfg, self._floors = fid, cfg, {}
        cache = Path(cfg.fid_cache_dir) if cfg.fid_cache_dir else None
        root = self.root = Path(cfg.fid_data_root) if cfg.fid_data_root else None
        try:
            self.extractor = fid.make_extractor(cfg.fid_extractor, cache, cfg.device, cfg.fid_dtype)
            self.stats = fid.dataset_stats(cfg.fid_dataset, self.extractor, cfg.fid_reference, root, cache,
                                           cfg.fid_batch)
        except (fid.FIDError, DataError) as exc:
            raise ImageRunError(str(exc)) from None

    def __call__(self, x: torch.Tensor) -> float:
        return float(self.fid.fid(to_uint8(x), self.stats, self.extractor, self.cfg.fid_batch))

    def _real(self, n: int) -> tuple[torch.Tensor, str] | None:
        """n real images outside the reference: after it in its split, else the other split's first n."""
        name, ref = self.cfg.fid_dataset, self.cfg.fid_reference
        real = load_dataset(name, self.root, subset=ref + n)[ref:]
        if len(real) == n:
            return real, f"{name} images {ref}..{ref + n - 1}"
        if name in OTHER_SPLIT:
            try:
                real = load_dataset(OTHER_SPLIT[name], self.root, subset=n)
            except DataError:
                return None
            if len(real) == n:
                return real, f"the first {n} {OTHER_SPLIT[name]} images"
        return None

    def floor(self, n: int) -> tuple[float, str]:
        """(FID, source) of n real images outside the reference against the same statistics: what an
        exact sampler scores at this sample size (FID's small-sample bias); NaN when there are too few."""
        if n not in self._floors:
            real = self._real(n)
            none = f"none (fewer than {n} real images outside the reference)"
            self._floors[n] = (self(real[0]), real[1]) if real else (math.nan, none)
        return self._floors[n]

    def note(self, n: int) -> str:
        """What an FID row measures: sample count, reference, feature extractor, regime, floor."""
        ref, tag = self.cfg.fid_reference, self.fid.extractor_tag(self.extractor)
        regime = ("10k regime" if min(n, ref) >= FID_10K else
                  f"small-sample regime (< {FID_10K}: biased up, compare at equal n only)")
        return (f"{n} samples vs {ref} {self.cfg.fid_dataset} images ({tag}); {regime}; "
                f"floor: {self.floor(n)[1]}")


def fid_hook(cfg: ImageRunConfig) -> FIDHook | None:
    if cfg.fid_dataset is None:
        return None
    if importlib.util.find_spec("bench.studies.images.fid") is None:
        raise ImageRunError("--fid-dataset needs bench/studies/images/fid.py, which is not installed")
    return FIDHook(cfg)


def _validate(cfg: ImageRunConfig) -> list[Solver]:
    if cfg.samples < 1 or cfg.batch < 1 or cfg.fid_batch < 1 or cfg.reference_steps < 2:
        raise ImageRunError("--samples, --batch, --fid-batch need >= 1 and --reference-steps >= 2")
    if cfg.dtype not in NETWORK_DTYPES:
        raise ImageRunError(f"unknown --dtype {cfg.dtype!r}; valid: {', '.join(NETWORK_DTYPES)}")
    if not cfg.nfe or min(cfg.nfe) < 1:
        raise ImageRunError("--nfe takes positive integers")
    solvers = resolve(cfg.solvers)
    adaptive = [s.label for s in solvers if "adaptive" in s.tags]
    if adaptive:
        raise ImageRunError(f"adaptive solvers have no fixed NFE budget: {', '.join(adaptive)}")
    return solvers


_CONTEXT: dict[str, tuple] = {}  # per process: the loaded model, x_T, references and FID hook of a study


def _context(cfg: ImageRunConfig) -> tuple[Model, torch.Tensor, dict, FIDHook | None]:
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _CONTEXT:
        if cfg.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # every batch has one of two shapes
        model = with_dtype(load_model(cfg.model, cfg.device), cfg.dtype)
        _CONTEXT[key] = (model, initial_noise(model, cfg.samples, cfg.seed), {}, fid_hook(cfg))
    return _CONTEXT[key]


def _times(cfg: ImageRunConfig, schedule, steps: int) -> torch.Tensor:
    model, x_T, _, _ = _context(cfg)
    return model_grid(cfg.grid, model, steps, schedule.t_min, schedule.t_max, x_T)


def _reference(cfg: ImageRunConfig, solver: Solver) -> tuple[torch.Tensor, float]:
    """The high-NFE reference of `solver`'s runs from the study's x_T, computed once per integrator and
    process, with its noise floor (path-rms against the same integrator at half the steps)."""
    model, x_T, refs, _ = _context(cfg)
    integrator = integrator_for(solver, REFERENCE_SOLVER)
    if integrator.label not in refs:

        def run(k: int) -> torch.Tensor:
            return sample_batches(model, integrator, _times(cfg, model.schedule, k), x_T, cfg.seed, cfg.batch,
                                  cfg.denoise_final).x

        fine, _, error, _ = self_checked(run, cfg.reference_steps // 2)
        refs[integrator.label] = (fine, error)
    return refs[integrator.label]


@dataclass
class ImageStudy(Study):
    """`bench images run`: every solver at every NFE budget on a learned image model from the same
    initial noise; a chain is one solver (the model, x_T and references are loaded once per process).
    A directory keeps its model and FID settings: a rerun with --fid-dataset adds FID to the cells
    sampled without it."""

    settings: ImageRunConfig
    kind = "images"

    def config(self) -> dict:
        return self.settings.to_dict()

    @property
    def problem(self) -> str:
        return f"image:{Path(str(self.settings.model).rstrip('/')).name}"

    def cells(self) -> list[Cell]:
        cfg = self.settings
        solvers = _validate(cfg)
        _context(cfg)  # load the model (and FID statistics) now: bad input fails before any cell
        return [Cell(f"{s.label}|{cfg.grid}|nfe={b}|seed={cfg.seed}|n={cfg.samples}", s.label, (s.label, b))
                for s in solvers for b in cfg.nfe]

    def incompatibility(self, old_config: dict) -> str | None:
        old = old_config or {}
        if old.get("model") != self.settings.model:
            return f"holds results of model {old.get('model')}; use another --out"
        if old.get("dtype", "float32") != self.settings.dtype:
            return f"holds results of dtype {old.get('dtype', 'float32')}; use another --out"
        old_fid, new_fid = self._fid(old), self._fid(self.settings.to_dict())
        if old_fid is not None and new_fid is not None and old_fid != new_fid:
            return f"holds fid rows of {old_fid}; use another --out for other FID settings"
        return None

    @staticmethod
    def _fid(config: dict) -> dict | None:
        if config.get("fid_dataset") is None:
            return None
        return {k: config.get(k, default) for k, default in FID_SETTINGS.items()}

    def stale(self, rows: list[dict]) -> bool:
        return self.settings.fid_dataset is not None and _lacks_fid(rows)

    def manifest_extra(self) -> dict:
        fid = self._fid(self.settings.to_dict())
        return {**({"fid": fid} if fid else {}), "reference": _reference_notes(self.settings),
                "device": self.settings.device, "dtype": self.settings.dtype, "torch": torch.__version__}

    def run_cell(self, cell: Cell) -> list[dict]:
        cfg = self.settings
        label, budget = cell.params
        model, x_T, _, fid = _context(cfg)
        solver = make_solver(label)
        base = {**_base_row(cfg, self.problem, model.schedule.name, solver), "nfe_budget": budget}
        steps = solver.steps_for_nfe(budget)
        if steps is None:
            return [{**base, "metric": "path-rms", "value": math.nan, "steps": 0, "nfe": 0,
                     "status": "skipped", "reason": f"needs NFE >= {solver.nfe(solver.min_steps)}"}]
        res = sample_batches(model, solver, _times(cfg, model.schedule, steps), x_T, cfg.seed, cfg.batch,
                             cfg.denoise_final)
        return _score(res, base, steps, _reference(cfg, solver), fid, _reference_notes(cfg))


def run_images(cfg: ImageRunConfig, out: Path, command: str = "", progress=None) -> pd.DataFrame:
    """Run every (solver, NFE) cell not yet in `out` with the one engine; return the rows."""
    run_study(ImageStudy(cfg), out, command, jobs=1, progress=progress)
    return load_rows(out)


def _reference_notes(cfg: ImageRunConfig) -> dict[str, str]:
    n = cfg.reference_steps
    return {"ode": f"{REFERENCE_SOLVER} at {n} {cfg.grid} steps",
            "sde": f"the limit's integrator at {n} steps, same Brownian paths"}


def _lacks_fid(rows: list[dict]) -> bool:
    """A finished cell sampled without FID (an earlier run without --fid-dataset): sample it again."""
    return rows[0].get("status") == "ok" and not any(r.get("metric") == "fid" for r in rows)


def _path_theory(solver: Solver) -> dict:
    """The strong order that path-rms rows are compared with (bench/measure/theory.py)."""
    th = theory(solver, "path-rms")
    return {"theory_order": th.low, "theory_order_max": th.high, "theory_kind": th.kind}


def _base_row(cfg: ImageRunConfig, problem: str, schedule: str, solver: Solver) -> dict:
    return {"problem": problem, "schedule": schedule, "model": str(cfg.model), "solver": solver.label,
            "solver_name": solver.name, "params": str(solver.params), "family": solver.family,
            "stochastic": solver.stochastic, **_path_theory(solver), "grid": cfg.grid, "seed": cfg.seed,
            "n_samples": cfg.samples, "dtype": cfg.dtype, "tolerance": math.nan, "noise_floor": math.nan,
            "metric_time": math.nan, "sample_time": math.nan}


def _score(res: BatchedSample, base: dict, steps: int, ref: tuple[torch.Tensor, float],
           fid: FIDHook | None, ref_notes: dict[str, str]) -> list[dict]:
    row = {**base, "steps": steps, "nfe": res.nfe, "sample_time": res.wall_time, "status": "ok", "reason": "",
           "images_per_s": res.images_per_second, "network_share": res.network_share}
    if not torch.isfinite(res.x).all():
        return [{**row, "metric": "path-rms", "value": math.nan, "status": "diverged",
                 "reason": "non-finite samples"}]
    start = time.perf_counter()
    note = ref_notes["sde" if base["stochastic"] else "ode"]
    rows = [{**row, "metric": "path-rms", "value": path_rms(res.x, ref[0]), "noise_floor": ref[1],
             "metric_time": time.perf_counter() - start, "note": f"vs {note}; floor: same at half the steps"}]
    if fid is not None:
        start = time.perf_counter()
        value = fid(res.x)
        rows.append({**row, "metric": "fid", "value": value, "metric_time": time.perf_counter() - start,
                     "noise_floor": fid.floor(len(res.x))[0], "note": fid.note(len(res.x))})
    return rows
