"""Sampling in reduced precision, as a pipeline runs it: the model's input and output and the sampler's
state in the run's dtype (float64, float32, bfloat16 or float16), the exact score itself computed in
float64 from the rounded input (a network in that dtype would add its own rounding inside).

A run in reduced precision is judged against the same run in float64 from the same x_T and noise:
`rounding_rms` is the RMS distance between the two outputs, and the exact W2 of the float64 law plus that
distance bounds the W2 error of the reduced-precision output (triangle inequality: W2(a, c) <= W2(a, b) +
W2(b, c), and W2 of two laws is at most the RMS distance of any coupling of them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from solvers.model import Model

DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32,
                                  "bfloat16": torch.bfloat16, "float16": torch.float16}


class PrecisionError(ValueError):
    """An unknown dtype name; the message is one line."""


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype of a --dtype name."""
    if name not in DTYPES:
        raise PrecisionError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def rounded_model(model: Model, dtype: torch.dtype) -> Model:
    """`model` as a network in `dtype` answers: its input rounded to dtype, its output (computed in
    float64) rounded to dtype. float64 returns the model itself."""
    if dtype == torch.float64:
        return model
    inner = model.fn

    def predict(x: Tensor, t: Tensor) -> Tensor:
        return inner(x.to(dtype).to(torch.float64), t).to(dtype)

    return Model(predict, model.parameterization, model.schedule)


def rounding_rms(x: Tensor, x64: Tensor) -> tuple[float, float]:
    """(RMS distance, its standard error) between a reduced-precision output and the float64 one from
    the same x_T and noise; the standard error is the delta-method one of sqrt(mean of squares)."""
    sq = ((x.to(torch.float64) - x64.to(torch.float64)) ** 2).reshape(len(x), -1).sum(-1)
    mean = float(sq.mean())
    if mean == 0.0:
        return 0.0, 0.0
    se_mean = float(sq.std()) / math.sqrt(len(sq)) if len(sq) > 1 else math.nan
    return math.sqrt(mean), se_mean / (2 * math.sqrt(mean))
