"""The capability report: aggregation, not-run cells, JSON and Markdown output."""

import json

import pytest

from kdist_props.report import NOT_RUN_REASON, ReportBuilder, load, summary_lines, to_markdown, write

pytestmark = pytest.mark.selftest

HEADER = {"target": "keras", "keras_version": "3.15.1"}


def _record(builder, outcome, *, clause="ops.matmul", world_size=2, n=0, examples=10,
            reason=None, failing_example=None, target="keras"):
    builder.record(target=target, clause=clause, world_size=world_size,
                   nodeid=f"tests/properties/test_ops.py::test_{n}", outcome=outcome,
                   examples=examples, reason=reason, failing_example=failing_example)


def _cell(outcomes_and_reasons):
    builder = ReportBuilder()
    for n, (outcome, reason) in enumerate(outcomes_and_reasons):
        _record(builder, outcome, n=n, reason=reason,
                failing_example=f"example {n}" if outcome in ("failed", "xfailed") else None)
    (cell,) = builder.build(HEADER, [], ["keras"])["results"]
    return cell


@pytest.mark.parametrize("outcomes, status", [
    ([("passed", None)], "pass"),
    ([("passed", None), ("skipped", "no mesh")], "pass"),
    ([("skipped", "no mesh"), ("skipped", "no dtensor")], "unsupported"),
    ([("passed", None), ("xfailed", "known")], "known-failure"),
    ([("xfailed", "known"), ("xpassed", "known")], "unexpected-pass"),
    ([("xpassed", "known"), ("failed", "boom")], "fail"),
    ([("skipped", "no mesh"), ("failed", "boom")], "fail"),
])
def test_aggregation_status(outcomes, status):
    assert _cell(outcomes)["status"] == status


def test_fail_keeps_first_failure():
    cell = _cell([("passed", None), ("failed", "first\ntrace"), ("failed", "second")])
    assert cell["reason"] == "first\ntrace"
    assert cell["first_failing_example"] == "example 1"
    assert cell["examples"] == 30
    assert cell["tests"] == [f"tests/properties/test_ops.py::test_{n}" for n in range(3)]


def test_unsupported_keeps_first_skip_reason():
    cell = _cell([("skipped", "keras 3.13 has no torch distribution"), ("skipped", "other")])
    assert cell["reason"] == "keras 3.13 has no torch distribution"


def test_unexpected_pass_names_the_known_failure():
    cell = _cell([("xpassed", "matmul mixes tensors")])
    assert cell["reason"] == "known failure no longer fails: matmul mixes tensors"


def test_known_failure_keeps_reason_and_example():
    cell = _cell([("xfailed", "baseline reason")])
    assert (cell["reason"], cell["first_failing_example"]) == ("baseline reason", "example 0")


def test_unknown_outcome_is_rejected():
    with pytest.raises(ValueError, match="unknown outcome"):
        _record(ReportBuilder(), "error")


def test_every_expected_clause_is_present():
    builder = ReportBuilder()
    _record(builder, "passed", clause="ops.matmul", world_size=2)
    expected = [("ops.matmul", 2), ("ops.matmul", 4), ("variable.read", 2)]
    report = builder.build(HEADER, expected, ["keras", "reference"])
    cells = {(c["target"], c["clause"], c["world_size"]): c for c in report["results"]}
    assert set(cells) == {(t, c, w) for t in ("keras", "reference") for c, w in expected}
    assert cells["keras", "ops.matmul", 2]["status"] == "pass"
    missing = [c for k, c in cells.items() if k != ("keras", "ops.matmul", 2)]
    assert all(c["status"] == "not-run" and c["reason"] == NOT_RUN_REASON for c in missing)
    assert all(c["examples"] == 0 and c["tests"] == [] for c in missing)


def test_results_are_sorted_and_complete():
    builder = ReportBuilder()
    _record(builder, "passed", clause="z.clause", world_size=4)
    _record(builder, "passed", clause="a.clause", world_size=4)
    _record(builder, "passed", clause="a.clause", world_size=1)
    report = builder.build(HEADER, [], ["keras"])
    keys = [(c["clause"], c["world_size"]) for c in report["results"]]
    assert keys == [("a.clause", 1), ("a.clause", 4), ("z.clause", 4)]
    assert set(report["results"][0]) == {"target", "clause", "world_size", "status", "examples",
                                         "tests", "reason", "first_failing_example",
                                         "examples_to_first_failure"}


def _mixed_report():
    builder = ReportBuilder()
    _record(builder, "passed", clause="ops.matmul", world_size=1, examples=120)
    _record(builder, "failed", clause="ops.matmul", world_size=2, examples=7,
            reason="AssertionError: mismatch\n" + "\n".join(f"line {i}" for i in range(40)),
            failing_example="matmul(x=..., y=...)")
    _record(builder, "skipped", clause="variable.read", world_size=2, examples=0,
            reason="keras 3.13.2 lacks torch distribution")
    expected = [("ops.matmul", 1), ("ops.matmul", 2), ("variable.read", 2), ("train.equivalence", 2)]
    return builder.build(HEADER, expected, ["keras"])


def test_markdown_has_every_clause_row_and_sections():
    md = to_markdown(_mixed_report())
    for key, value in HEADER.items():
        assert f"**{key}**: {value}" in md
    assert "| clause | w1 | w2 |" in md
    for clause in ("ops.matmul", "variable.read", "train.equivalence"):
        assert any(line.startswith(f"| `{clause}` |") for line in md.splitlines())
    assert "| `ops.matmul` | pass (120) | fail (7) |" in md
    failures = md.split("## Failures")[1].split("## Unsupported")[0]
    assert "keras ops.matmul w2: fail" in failures
    assert "keras train.equivalence w2: not-run" in failures
    assert "matmul(x=..., y=...)" in failures
    assert "line 18" in failures and "line 19" not in failures  # reason cut to 20 lines
    unsupported = md.split("## Unsupported")[1]
    assert "keras variable.read w2: keras 3.13.2 lacks torch distribution" in unsupported


def test_write_and_load_round_trip(tmp_path):
    report = _mixed_report()
    json_path, md_path = tmp_path / "out" / "r.json", tmp_path / "md" / "r.md"
    write(report, json_path, md_path)
    assert load(json_path) == report
    assert json.loads(json_path.read_text()) == report
    assert md_path.read_text() == to_markdown(report)


def test_summary_lines():
    lines = summary_lines(_mixed_report())
    assert lines[0] == "kdist-props report: 1 pass, 1 fail, 1 unsupported, 1 not-run"
    assert "  FAIL keras ops.matmul w2: AssertionError: mismatch" in lines
    assert f"  NOT-RUN keras train.equivalence w2: {NOT_RUN_REASON}" in lines
    assert len(lines) == 3
