"""The README's solver table matches the registry; CI runs the README's test command."""

from __future__ import annotations

from pathlib import Path

from bench.report.solver_table import END, START, table

ROOT = Path(__file__).resolve().parent.parent


def _rows(text: str) -> dict[str, list[str]]:
    body = text.split(START, 1)[1].split(END, 1)[0]
    rows = [ln.strip("|").split("|") for ln in body.strip().splitlines()[2:]]
    return {r[0].strip(): [c.strip() for c in r] for r in rows}


def test_solver_table_is_generated_from_the_classes():
    readme, fresh = _rows((ROOT / "README.md").read_text()), _rows(f"{START}\n{table()}\n{END}")
    assert readme.keys() == fresh.keys(), "regenerate: python -m bench.report.solver_table --write README.md"
    declared = (1, 2, 3, 4, 5, 8)  # family, order, strong, cap, NFE/step, source
    for name, row in fresh.items():
        assert [readme[name][i] for i in declared] == [row[i] for i in declared], name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    command = next(ln.strip() for ln in lines if "python -m pytest" in ln and "pip install" in ln)
    assert command in (ROOT / ".ci" / "run").read_text()
