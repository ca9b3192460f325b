"""Baselines: loading known-failure files, matching tests, reporting stale entries."""

from pathlib import Path

import pytest

from kdist_props.reporting.baselines import KnownFailure, load_baseline

SHIPPED = Path(__file__).resolve().parents[2] / "baselines"

pytestmark = pytest.mark.selftest

NODE = "tests/properties/test_ops.py::test_matmul"


def _load(tmp_path, text, target="keras", version="3.15.1"):
    (tmp_path / f"{target}-{version}.toml").write_text(text)
    return load_baseline(tmp_path, target, version)


def test_missing_file_gives_empty_baseline(tmp_path):
    baseline = load_baseline(tmp_path, "keras", "3.15.1")
    assert baseline.path is None and baseline.entries == []
    assert baseline.match(NODE, "ops.matmul", 2) is None
    assert baseline.unmatched() == []


def test_load_entries(tmp_path):
    baseline = _load(tmp_path, '''
[[known_failure]]
clause = "variable.read"
world_size = 2
reason = """reads give the local shard
second line"""

[[known_failure]]
test = "tests/properties/test_ops.py::test_matmul"
reason = "mixed tensors"
''')
    assert baseline.path == tmp_path / "keras-3.15.1.toml"
    assert baseline.entries == [
        KnownFailure(reason="reads give the local shard\nsecond line", clause="variable.read",
                     world_size=2),
        KnownFailure(reason="mixed tensors", test=NODE),
    ]


def test_match_by_test_nodeid_prefix(tmp_path):
    baseline = _load(tmp_path, f'[[known_failure]]\ntest = "{NODE}"\nreason = "r"\n')
    entry = baseline.entries[0]
    assert baseline.match(NODE, None, None) is entry
    assert baseline.match(NODE + "[2-float32]", "ops.matmul", 2) is entry
    assert baseline.match(NODE + "_batched", "ops.matmul", 2) is None
    assert baseline.match("tests/properties/test_ops.py::test_mat", None, None) is None


def test_param_selects_tests_by_a_pytest_parameter_and_strict_defaults_to_true(tmp_path):
    baseline = _load(tmp_path, '''
[[known_failure]]
clause = "train.equivalence"
param = "DataParallel"
strict = false
reason = "r"
''')
    entry = baseline.entries[0]
    assert not entry.strict, f"expected strict = false to load as False, got {entry}"
    assert baseline.match("t.py::test_loss[w2-fit-DataParallel]", "train.equivalence", 2) is entry
    assert baseline.match("t.py::test_loss[w2-fit-ModelParallel]", "train.equivalence", 2) is None
    assert baseline.match("t.py::test_loss", "train.equivalence", 2) is None  # no parameters at all
    assert KnownFailure(reason="r").strict, "entries are strict unless they say otherwise"


def test_match_by_clause_and_world_size(tmp_path):
    baseline = _load(tmp_path, '''
[[known_failure]]
clause = "variable.read"
world_size = 2
reason = "only at 2"

[[known_failure]]
clause = "ops.matmul"
reason = "every size"
''')
    at_two, everywhere = baseline.entries
    assert baseline.match(NODE, "variable.read", 2) is at_two
    assert baseline.match(NODE, "variable.read", 4) is None
    assert baseline.match(NODE, "variable.read", None) is None
    assert baseline.match(NODE, "ops.matmul", 1) is everywhere
    assert baseline.match(NODE, "ops.matmul", 8) is everywhere
    assert baseline.match(NODE, None, 2) is None


def test_unmatched_lists_entries_never_used(tmp_path):
    baseline = _load(tmp_path, '''
[[known_failure]]
clause = "variable.read"
reason = "used"

[[known_failure]]
clause = "variable.raed"
reason = "misspelled, so never used"
''')
    assert baseline.unmatched() == baseline.entries
    baseline.match(NODE, "variable.read", 2)
    baseline.match(NODE, "ops.matmul", 2)
    assert [e.clause for e in baseline.unmatched()] == ["variable.raed"]


@pytest.mark.parametrize("text, problem", [
    ("[[known_failure]\n", "not valid TOML"),
    ('[[known_failures]]\nclause = "a"\nreason = "r"\n', "unknown top-level key"),
    ('known_failure = "x"\n', "array of tables"),
    ('[[known_failure]]\nclause = "a"\n', "reason"),
    ('[[known_failure]]\nclause = "a"\nreason = "  "\n', "reason"),
    ('[[known_failure]]\nreason = "r"\n', "exactly one of"),
    ('[[known_failure]]\nclause = "a"\ntest = "t"\nreason = "r"\n', "exactly one of"),
    ('[[known_failure]]\nclause = 3\nreason = "r"\n', "'clause' must be"),
    ('[[known_failure]]\nclause = "a"\nworld_size = 0\nreason = "r"\n', "world_size"),
    ('[[known_failure]]\nclause = "a"\nworld_size = true\nreason = "r"\n', "world_size"),
    ('[[known_failure]]\nclause = "a"\nreason = "r"\nworldsize = 2\n', "unknown key"),
    ('[[known_failure]]\nclause = "a"\nreason = "r"\nmatch = ""\n', "'match' must be"),
    ('[[known_failure]]\nclause = "a"\nreason = "r"\nmatch = "category ("\n', "not a valid regular expression"),
    ('[[known_failure]]\nclause = "a"\nreason = "r"\nparam = ""\n', "'param' must be"),
    ('[[known_failure]]\nclause = "a"\nreason = "r"\nstrict = "no"\n', "'strict' must be true or false"),
])
def test_malformed_file_names_file_and_problem(tmp_path, text, problem):
    with pytest.raises(ValueError, match=problem) as info:
        _load(tmp_path, text)
    assert "keras-3.15.1.toml" in str(info.value)


def test_match_pins_the_known_reason(tmp_path):
    baseline = _load(tmp_path, '''
[[known_failure]]
clause = "layout.variable"
match = "category must be a Warning subclass"
reason = "warnings.warn gets an int category"

[[known_failure]]
clause = "variable.read"
reason = "any reason"
''')
    pinned, loose = baseline.entries
    assert pinned.match == "category must be a Warning subclass" and loose.match is None
    assert pinned.explains("TypeError: category must be a Warning subclass, not int (rank(s) [0] of 2 raised)")
    assert not pinned.explains("AssertionError: layout axes: expected (None,), got ('batch',)")
    assert loose.explains("anything at all")


# Versions whose public API cannot build a distribution on torch: every clause
# is unsupported there, so their baselines list no failure.
NOTHING_RUNS = ("3.13.2", "3.14.1")


@pytest.mark.parametrize("version", ["3.13.2", "3.14.1", "3.15.1"])
def test_shipped_baselines_load(version):
    baseline = load_baseline(SHIPPED, "keras", version)
    assert baseline.path is not None
    assert bool(baseline.entries) == (version not in NOTHING_RUNS), baseline.entries
