"""Built-in problems and JSON problem files, including every refusal."""

from __future__ import annotations

import json

import pytest
import torch

from analytic import BUILTIN, ProblemError, get_problem


def test_builtins_have_names_descriptions_and_expected_dims():
    dims = {"gauss-1d": 1, "gauss-aniso-3d": 3, "gauss-unit-3d": 3, "ring-8": 2, "mix-2d": 2,
            "mix-unit-2d": 2, "mix-16d": 16}
    for name, dim in dims.items():
        problem = get_problem(name)
        assert problem.dim == dim and problem.description
    assert get_problem("gauss-aniso-3d").is_gaussian and not get_problem("ring-8").is_gaussian
    assert set(BUILTIN) == set(dims)


def test_unit_range_problems_are_their_originals_scaled():
    """gauss-unit-3d and mix-unit-2d (the conformance study's targets) are gauss-aniso-3d / 5 and
    mix-2d / 3: the same shape inside the image range [-1, 1] that library defaults assume."""
    for unit, original, scale in (("gauss-unit-3d", "gauss-aniso-3d", 5.0), ("mix-unit-2d", "mix-2d", 3.0)):
        a, b = get_problem(unit).target, get_problem(original).target
        assert torch.allclose(a.means * scale, b.means) and torch.allclose(a.covs * scale**2, b.covs)
        assert torch.equal(a.weights, b.weights)


def write(tmp_path, spec, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return str(path)


GOOD = {"weights": [0.25, 0.75], "means": [[0, 0], [1, 1]],
        "covs": [[[1, 0.2], [0.2, 1]], [[0.5, 0], [0, 0.5]]], "schedule": "ve", "t_min": 1e-3,
        "t_max": 1.0}


def test_valid_file_and_vars_form(tmp_path):
    problem = get_problem(write(tmp_path, GOOD))
    assert problem.dim == 2 and problem.schedule.name == "ve" and problem.t_min == 1e-3
    spec = dict(GOOD, vars=[[1, 2], [3, 4]])
    del spec["covs"]
    assert get_problem(write(tmp_path, spec, "v.json")).target.covs[1, 1, 1] == 4


@pytest.mark.parametrize("change,message", [
    ({"weights": [0.3, 0.6]}, "sum to 1"),
    ({"weights": [1.2, -0.2]}, "positive"),
    ({"means": [[0, 0]]}, "means must be"),
    ({"covs": [[[1, 0.5], [0.4, 1]], [[0.5, 0], [0, 0.5]]]}, "not symmetric"),
    ({"covs": [[[1, 2], [2, 1]], [[0.5, 0], [0, 0.5]]]}, "not positive definite"),
    ({"covs": [[[1, 0], [0, 1]]]}, "covs must have shape"),
    ({"schedule": "warp"}, "unknown schedule"),
    ({"t_min": 2.0}, "t_min < t_max"),
    ({"extra": 1}, "unknown keys"),
    ({"means": "abc"}, "means"),
])
def test_malformed_files_are_refused_with_one_line(tmp_path, change, message):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(ProblemError, match=message) as info:
        get_problem(path)
    assert "\n" not in str(info.value)


def test_unreadable_and_invalid_json(tmp_path):
    with pytest.raises(ProblemError, match="not valid JSON"):
        get_problem(write(tmp_path, "{nope"))
    with pytest.raises(ProblemError, match="cannot read"):
        get_problem(str(tmp_path / "missing.json"))
    with pytest.raises(ProblemError, match="unknown problem"):
        get_problem("no-such-problem")


def test_schedule_override():
    assert get_problem("mix-2d", "edm").schedule.name == "edm"
    assert get_problem("mix-2d", "edm").t_max == 80.0
