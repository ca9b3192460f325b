"""Comparing two reports: change groups, exit codes and the compare command."""

import copy
import json

import pytest

from kdist_props.reporting.compare import compare, compare_main, format_comparison

pytestmark = pytest.mark.selftest


def _report(statuses, *, target="keras", version="3.15.1"):
    """A report from {(clause, world_size): status} or {(target, clause, ws): status}."""
    results = []
    for key, status in statuses.items():
        tgt, clause, world_size = key if len(key) == 3 else (target, *key)
        results.append({"target": tgt, "clause": clause, "world_size": world_size,
                        "status": status, "examples": 10, "tests": [],
                        "reason": None if status == "pass" else f"{status} because\nmore",
                        "first_failing_example": None})
    return {"header": {"target": target, "keras_version": version}, "results": results}


def _one_change(old_status, new_status):
    c = compare(_report({("ops.matmul", 2): old_status}), _report({("ops.matmul", 2): new_status}))
    groups = {name: getattr(c, name) for name in
              ("regressions", "fixes", "newly_unsupported", "newly_supported", "newly_incompatible",
               "no_longer_incompatible", "other_changes")}
    (name,) = [n for n, changes in groups.items() if changes]
    return name, c.exit_code


@pytest.mark.parametrize("old, new, group", [
    ("pass", "fail", "regressions"),
    ("pass", "unexpected-pass", "regressions"),
    ("pass", "not-run", "regressions"),
    ("known-failure", "fail", "regressions"),
    ("fail", "pass", "fixes"),
    ("known-failure", "pass", "fixes"),
    ("known-failure", "unexpected-pass", "fixes"),
    ("pass", "unsupported", "newly_unsupported"),
    ("fail", "unsupported", "newly_unsupported"),
    ("unsupported", "pass", "newly_supported"),
    ("unsupported", "known-failure", "newly_supported"),
    ("unsupported", "not-run", "other_changes"),
    ("fail", "known-failure", "other_changes"),
    # incompatible is never a verdict on the target: printed, never a regression or a fix
    ("pass", "incompatible", "newly_incompatible"),
    ("fail", "incompatible", "newly_incompatible"),
    ("unsupported", "incompatible", "newly_incompatible"),
    ("incompatible", "pass", "no_longer_incompatible"),
    ("incompatible", "fail", "no_longer_incompatible"),
    ("incompatible", "not-run", "no_longer_incompatible"),
])
def test_change_groups(old, new, group):
    assert _one_change(old, new) == (group, 1 if group == "regressions" else 0)


def test_no_change_no_exit_code():
    report = _report({("ops.matmul", 2): "pass", ("variable.read", 2): "unsupported"})
    c = compare(report, copy.deepcopy(report))
    assert not (c.regressions or c.fixes or c.newly_unsupported or c.newly_supported
                or c.other_changes)
    assert c.exit_code == 0


def test_single_targets_compare_by_clause_even_with_different_names():
    c = compare(_report({("ops.matmul", 2): "pass"}, target="reference"),
                _report({("ops.matmul", 2): "fail"}, target="keras"))
    assert [ch.key for ch in c.regressions] == [("ops.matmul", 2)]


def test_multi_target_reports_key_by_target():
    old = _report({("keras", "ops.matmul", 2): "pass", ("reference", "ops.matmul", 2): "pass"})
    new = _report({("keras", "ops.matmul", 2): "pass", ("reference", "ops.matmul", 2): "fail"})
    c = compare(old, new)
    assert [ch.key for ch in c.regressions] == [("reference", "ops.matmul", 2)]
    assert "reference ops.matmul w2: pass -> fail" in format_comparison(c, "a", "b")


def test_added_and_removed_are_other_changes():
    c = compare(_report({("ops.matmul", 2): "pass"}), _report({("variable.read", 4): "pass"}))
    assert [ch.describe() for ch in c.other_changes] == [
        "ops.matmul w2: removed (was pass)", "variable.read w4: added (pass)"]
    assert c.exit_code == 0


def test_format_comparison():
    old = _report({("ops.matmul", 2): "pass", ("variable.read", 2): "unsupported"}, version="3.13.2")
    new = _report({("ops.matmul", 2): "fail", ("variable.read", 2): "pass"}, version="3.15.1")
    text = format_comparison(compare(old, new), "old.json", "new.json")
    assert text.splitlines()[0] == "keras 3.13.2 -> keras 3.15.1"
    assert "old.json" in text and "new.json" in text
    for heading in ("Regressions (1):", "Fixes (0):", "Newly unsupported (0):",
                    "Newly supported (1):", "Other changes (0):"):
        assert heading in text
    assert "  ops.matmul w2: pass -> fail (fail because)" in text
    assert "  variable.read w2: unsupported -> pass" in text


def _write(path, report):
    path.write_text(json.dumps(report))
    return str(path)


def test_compare_main_exit_codes_on_injected_regression(tmp_path, capsys):
    report = _report({("ops.matmul", 1): "pass", ("ops.matmul", 2): "pass",
                      ("variable.read", 2): "known-failure"})
    old = _write(tmp_path / "old.json", report)
    assert compare_main([old, _write(tmp_path / "same.json", report)]) == 0

    broken = copy.deepcopy(report)
    cell = next(c for c in broken["results"] if c["status"] == "pass")
    cell.update(status="fail", reason="AssertionError: injected")
    assert compare_main([old, _write(tmp_path / "new.json", broken)]) == 1
    out = capsys.readouterr().out
    assert "ops.matmul w1: pass -> fail (AssertionError: injected)" in out


def test_compare_main_bad_usage(tmp_path, capsys):
    assert compare_main([]) == 2
    assert compare_main([str(tmp_path / "missing.json"), str(tmp_path / "other.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert compare_main([str(bad), str(bad)]) == 2
    assert "cannot read report" in capsys.readouterr().err


def _failing(tests):
    report = _report({("train.equivalence", 2): "fail"})
    report["results"][0]["failures"] = [{"test": t, "reason": f"AssertionError: {t}", "example": None,
                                         "examples_to_failure": None} for t in tests]
    return report


def test_a_new_failing_test_in_a_failing_cell_is_a_regression():
    c = compare(_failing(["t::loss[w2]"]), _failing(["t::loss[w2]", "t::grad[w2]"]))
    assert [ch.describe() for ch in c.regressions] == [
        "train.equivalence w2: fail, new failing test(s): t::grad[w2] (AssertionError: t::grad[w2])"]
    assert c.exit_code == 1


def test_a_test_that_stops_failing_in_a_failing_cell_is_printed_only():
    c = compare(_failing(["t::loss[w2]", "t::grad[w2]"]), _failing(["t::grad[w2]"]))
    assert not c.regressions and c.exit_code == 0
    assert [ch.describe() for ch in c.other_changes] == [
        "train.equivalence w2: fail, no longer failing: t::loss[w2]"]


def test_reports_without_failure_lists_compare_by_status():
    c = compare(_report({("train.equivalence", 2): "fail"}), _failing(["t::loss[w2]"]))
    assert not (c.regressions or c.other_changes)


def test_newly_incompatible_is_printed():
    c = compare(_report({("ops.matmul", 2): "pass"}), _report({("ops.matmul", 2): "incompatible"}))
    text = format_comparison(c, "a", "b")
    assert "Newly incompatible (the suite cannot drive the target; not a verdict) (1):" in text
    assert "  ops.matmul w2: pass -> incompatible (incompatible because)" in text
    assert c.exit_code == 0
