"""Numerical solvers for diffusion sampling. Solvers know the model protocol and a schedule,
nothing of the problems they are run on."""

from solvers.base import Solver, State
from solvers.loop import SampleResult, sample
from solvers.model import Model, Prediction
from solvers.noise import BrownianTreeNoise, IidNoise, NoiseSource, ZeroNoise
from solvers.registry import make_solver, names, parse_spec, register, resolve

__all__ = [
    "BrownianTreeNoise", "IidNoise", "Model", "NoiseSource", "Prediction", "SampleResult", "Solver",
    "State", "ZeroNoise", "make_solver", "names", "parse_spec", "register", "resolve", "sample",
]
