"""One grammar for every command: comma lists, seed ranges and the options every sampling command
shares. Imports click only, so `--help` stays fast (heavy modules load inside the commands)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench.studies.defaults import DEFAULT_GRID


class NameList(click.ParamType):
    """A comma list of names ("a,b,c"); brackets may hold commas (ddim-eta[eta=0.5,x=1])."""

    name = "LIST"

    def convert(self, value: Any, param, ctx) -> list[str]:
        if isinstance(value, list):
            return value
        out, depth, current = [], 0, ""
        for char in str(value):
            depth += (char == "[") - (char == "]")
            if char == "," and depth == 0:
                out.append(current.strip())
                current = ""
            else:
                current += char
        out.append(current.strip())
        names = [n for n in out if n]
        if not names:
            self.fail(f"needs at least one name, got {value!r}", param, ctx)
        return names


class _NumberList(click.ParamType):
    """A comma list of numbers parsed by `number`, described as `what` in messages."""

    number: Callable[[str], float] = float
    what = "numbers"

    def check(self, values: list, value: Any, param, ctx) -> None:
        """Fail on values this list refuses (here: none given)."""
        if not values:
            self.fail("needs at least one number", param, ctx)

    def convert(self, value: Any, param, ctx) -> list:
        if isinstance(value, list):
            return value
        try:
            values = [self.number(v) for v in str(value).replace(" ", "").split(",") if v]
        except ValueError:
            self.fail(f"takes comma-separated {self.what}, got {value!r}", param, ctx)
        self.check(values, value, param, ctx)
        return values


class IntList(_NumberList):
    """A comma list of positive integers ("4,8,16")."""

    name = "N,N,..."
    number = int
    what = "integers"

    def check(self, values: list, value: Any, param, ctx) -> None:
        if not values or min(values) <= 0:
            self.fail(f"takes positive integers, got {value!r}", param, ctx)


class FloatList(_NumberList):
    """A comma list of numbers ("0,0.5,2")."""

    name = "X,X,..."


class SeedList(click.ParamType):
    """Seeds as a list and/or ranges, as EDM's generate.py takes them: "0-63", "0,5,7", "0-2,9"."""

    name = "SEEDS"

    def convert(self, value: Any, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        seeds: list[int] = []
        for part in str(value).replace(" ", "").split(","):
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                self.fail(f"takes seeds like 0-63 or 0,5,7, got {value!r}", param, ctx)
            if first < 0 or last < first:
                self.fail(f"needs non-negative seeds and ranges lo-hi with lo <= hi, got {part!r}", param,
                          ctx)
            seeds.extend(range(first, last + 1))
        if not seeds:
            self.fail("needs at least one seed", param, ctx)
        return list(dict.fromkeys(seeds))


NAMES, INTS, FLOATS, SEEDS = NameList(), IntList(), FloatList(), SeedList()
DTYPE_NAMES = ("float64", "float32", "bfloat16", "float16")  # bench/measure/precision.py DTYPES, torch-free
Decorator = Callable[[Callable], Callable]


def flat(values: tuple[list[str], ...] | list[str] | None) -> list[str] | None:
    """The names of a repeatable list option (--metric a,b --metric c), None when not given."""
    if not values:
        return None
    if isinstance(values[0], str):
        return list(values)
    return [name for group in values for name in group]


def problem_option(default: str | None, single: bool = False) -> Decorator:
    what = "one problem" if single else "comma list of problems (repeatable)"
    shown = f" [default: {default}]" if default else ""
    if not single:
        return click.option("--problem", "problems", type=NAMES, multiple=True, default=[default],
                            show_default=False, help=f"Built-in problem name or JSON problem file; {what} "
                            f"(bench list problems){shown}.")
    return click.option("--problem", "problems", type=NAMES, default=default, show_default=False,
                        help=f"Built-in problem name or JSON problem file; {what} (bench list "
                             f"problems){shown}.")


def stacked(*options: Decorator) -> Decorator:
    """One decorator applying `options` in the order written (as if stacked above the function)."""

    def wrap(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return wrap


def sampling_options(device_help: str = "cpu or cuda[:k].") -> Decorator:
    """--grid, --schedule, --device and --dtype: the same meaning in every command that samples."""
    return stacked(
        click.option("--grid", default=DEFAULT_GRID, show_default=True,
                     help="Time grid, parameters in brackets (bench list grids)."),
        click.option("--schedule", default=None, help="Override the problems' noise schedule "
                     "(bench list schedules)."),
        click.option("--device", default="cpu", show_default=True, help=device_help),
        click.option("--dtype", type=click.Choice(DTYPE_NAMES),
                     default="float64", show_default=True,
                     help="Sampling precision: the model's input and output and the sampler's state "
                          "(exact laws and references stay float64; a non-finite run is a diverged row)."),
    )


def out_option(required: bool = False, help: str = "Output directory; rerun with the same --out to "
               "resume (finished cells are skipped).") -> Decorator:
    return click.option("--out", type=click.Path(path_type=Path), required=required, default=None, help=help)


def jobs_option(fn: Callable) -> Callable:
    return click.option("--jobs", type=click.IntRange(min=1), default=None,
                        help="Worker processes [default: one per CPU].")(fn)


def one(values: list[str], option: str) -> str:
    """The single name a one-problem study takes from a list option."""
    if len(values) != 1:
        raise click.BadParameter(f"{option} takes one name here, got {len(values)}")
    return values[0]


def command_line() -> str:
    return "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def check_device(device: str) -> str:
    """cpu or cuda[:k], and cuda only where a CUDA device exists (imports torch for that check only)."""
    if device != "cpu" and not device.startswith("cuda"):
        raise click.BadParameter(f"--device must be cpu or cuda[:k], got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter(f"--device {device}: no CUDA device here")
    return device
