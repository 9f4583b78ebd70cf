"""Numerical solvers for diffusion sampling. Solvers know the model protocol and a schedule,
nothing of the problems they are run on.

Importing the package imports every module in it, subpackages included, so a solver module registers
its solvers (`@register`) by being here: no list of modules to edit. Third-party solvers come from
entry points and files (solvers/registry.py).
"""

import importlib
import pkgutil

from solvers.base import Solver, State
from solvers.loop import sample
from solvers.model import Model, Prediction
from solvers.noise import BrownianTreeNoise, IidNoise, NoiseSource, ZeroNoise
from solvers.registry import make_solver, names, parse_spec, register, resolve
from solvers.sampler import Sampler, SampleResult

for _module in pkgutil.walk_packages(__path__, __name__ + "."):
    importlib.import_module(_module.name)
del _module

__all__ = [
    "BrownianTreeNoise", "IidNoise", "Model", "NoiseSource", "Prediction", "SampleResult", "Sampler",
    "Solver", "State", "ZeroNoise", "make_solver", "names", "parse_spec", "register", "resolve", "sample",
]
