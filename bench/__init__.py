"""The harness: joins problems, models, grids and solvers; measures, stores and reports."""
