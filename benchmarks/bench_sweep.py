"""Peak memory of the default sweep's first cell (bench.sweep.engine; skipped until it exists)."""

from __future__ import annotations


class PeakmemSweep:
    timeout = 300.0

    def setup(self) -> None:
        try:
            from bench.studies.analytic import default_config, plan_cells, run_cell
        except ImportError as exc:
            raise NotImplementedError(f"bench.sweep.engine is not available: {exc}") from None
        self.run_cell = run_cell
        self.config = default_config()
        self.cell = plan_cells(self.config)[0]

    def peakmem_default_cell(self) -> None:
        self.run_cell(self.config, self.cell)
