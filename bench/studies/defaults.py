"""The default study's settings, importable without torch (the CLI shows them in --help)."""

DEFAULT_PROBLEMS = ["gauss-aniso-3d", "mix-2d", "ring-8"]
# NFE budgets: 10, 20 and 50 exactly for every solver whose NFE per step divides them (equal-NFE
# comparisons, bench/report/equal_nfe.py), the others at the most steps that fit; 5-200 resolves orders.
DEFAULT_NFE = [5, 10, 20, 50, 100, 200]
# and 256 steps, the finest level of the former 4-256 step ladder, for solvers whose NFE 200 run has at
# most 128 steps (several NFE per step: at NFE 200 rk4 has 50): their order fits need the level
DEFAULT_EXTEND_STEPS = [256]
DEFAULT_TOLERANCES = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4]  # adaptive solvers
DEFAULT_SAMPLES = 500  # per cell; exact W2 (POT emd2) costs ~0.05 s at n = 500, ~1.2 s at 2000
DEFAULT_SEEDS = [0, 1, 2]
DEFAULT_GRID = "logsnr"
# The deterministic fixed-step solvers of the exact-vs-learned link on images (ranking comparisons,
# GPU FID): every family once or twice, 12 solvers, each runs at NFE 5, 10 and 20.
LINK_SOLVERS = ["ddim", "euler", "heun", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s", "dpmpp-2m", "dpmpp-3m",
                "deis-3", "ipndm", "unipc-2", "unipc-3"]
LINK_NFE = [5, 10, 20]

GRID_SOLVERS = ["ddim", "heun", "dpmpp-2m", "unipc-2", "dpm-solver-3"]
"""The solvers of the grid studies (`bench grid study`, `bench grid transfer`): one per family and order."""
