"""Sample grids for problems fitted to images (analytic/image_problems.py): one row per solver, the
same 8 prior draws x_T in every row, at the smallest and largest NFE budget of a results directory,
under a row of exact samples of the target. Results directories hold rows, not samples: these 8 per
solver are drawn again (deterministic: seed 0 of the exact prior's stream PRIOR_STREAM)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from torch import Tensor  # noqa: E402

from analytic import get_problem  # noqa: E402
from analytic.image_problems import is_image_problem  # noqa: E402
from bench.measure import metrics  # noqa: E402
from bench.measure.grids import problem_grid  # noqa: E402
from bench.measure.models import analytic_model  # noqa: E402
from bench.report.results import budget_of  # noqa: E402
from bench.report.style import write_png  # noqa: E402
from bench.studies.decompose import PRIOR_STREAM  # noqa: E402
from bench.studies.images.data import to_uint8  # noqa: E402
from solvers import make_solver  # noqa: E402

PER_ROW = 8
MAX_SOLVERS = 8


def _tile(images: Tensor, columns: int = PER_ROW, pad: int = 1) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one [rows (H + pad), columns (W + pad), C] uint8 array, white gutters."""
    x = to_uint8(images.detach().cpu().float())
    n, c, h, w = x.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = \
            x[i].permute(1, 2, 0).numpy()
    return out


def _solvers(rows: pd.DataFrame) -> list[str]:
    """Deterministic fixed-step solvers of the rows, best first at the largest budget (at most 8)."""
    ok = rows[(rows["status"] == "ok") & rows["family"].isin(["multistep", "ode-singlestep"])]
    if ok.empty:
        return []
    top = ok[ok["nfe"] == ok["nfe"].max()] if "nfe" in ok else ok
    order = top.groupby("solver")["value"].mean().sort_values().index.tolist()
    rest = [s for s in dict.fromkeys(ok["solver"]) if s not in order]
    return (order + rest)[:MAX_SOLVERS]


def sample_grids(rows: pd.DataFrame, figdir: Path) -> list[Path]:
    """Write samples-<problem>-nfe<budget>.png for each image-shaped problem of `rows`."""
    paths = []
    for name in sorted(set(rows["problem"])):
        if not is_image_problem(name.split("[")[0]):
            continue
        part = rows[rows["problem"] == name]
        schedule = str(part["schedule"].iloc[0]) if "schedule" in part else None
        try:
            problem = get_problem(name, schedule)
        except ValueError:
            continue  # data missing on this machine: no grid
        solvers = _solvers(part)
        budgets = budget_of(part).dropna()
        if not solvers or budgets.empty:
            continue
        model = analytic_model(problem)
        x_T = metrics.exact_samples(problem, PER_ROW, 0, t=problem.t_max, stream=PRIOR_STREAM)
        exact = metrics.exact_samples(problem, PER_ROW, 0)
        for budget in sorted({int(budgets.min()), int(budgets.max())}):
            images, labels = [exact], ["exact p(t_min)"]
            for label in solvers:
                solver = make_solver(label)
                steps = solver.steps_for_nfe(budget)
                if steps is None:
                    continue
                times = problem_grid(str(part["grid"].iloc[0]), problem, steps)
                images.append(solver.run(model, times, x_T.clone()).x)
                labels.append(f"{label} ({solver.nfe(steps)})")
            slug = name.replace("[", "-").replace("]", "").replace("=", "").replace(",", "-")
            out = figdir / f"samples-{slug}-nfe{budget}.png"
            paths.append(_draw(images, labels, problem.image_shape, out,
                               f"{name}, NFE budget {budget}: solvers from the same x_T per column; "
                               "top row: independent exact samples"))
    return paths


def _draw(images: list[Tensor], labels: list[str], shape: tuple[int, int, int], out: Path,
          title: str) -> Path:
    """One picture: the rows of images stacked, each labelled on the left."""
    rows = [_tile(x.reshape(len(x), *shape)) for x in images]
    h = rows[0].shape[0] - 1  # rows share their 1-pixel gutter
    grid = np.concatenate([r[:-1] for r in rows] + [rows[-1][-1:]], axis=0)
    scale = 0.9 / shape[-1]  # inches per pixel: one image is ~0.9 inch wide
    fig, ax = plt.subplots(figsize=(grid.shape[1] * scale + 1.6, grid.shape[0] * scale + 0.4),
                           layout="constrained")
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([h * i + h / 2 for i in range(len(rows))], labels, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    return write_png(fig, out)
