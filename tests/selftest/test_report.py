"""The capability report: aggregation, not-run cells, every distinct failure,
incompatible cells, the environment section, JSON and Markdown output."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kdist_props.cluster.errors import RankCrash, RankError
from kdist_props.cluster.messages import RaisedOutcome
from kdist_props.contract.oracles import describe_mismatch
from kdist_props.harness.outcomes import failures
from kdist_props.reporting.report import NOT_RUN_REASON, ReportBuilder, load, summary_lines, to_markdown, write

pytestmark = pytest.mark.selftest

HEADER = {"target": "keras", "keras_version": "3.15.1"}


def _record(builder, outcome, *, clause="ops.matmul", world_size=2, n=0, examples=10,
            reason=None, failing_example=None, target="keras", examples_to_failure=None):
    failures = [(reason, failing_example)] if outcome in ("failed", "xfailed") else []
    builder.record(target=target, clause=clause, world_size=world_size,
                   nodeid=f"tests/properties/test_ops.py::test_{n}", outcome=outcome,
                   examples=examples, reason=None if outcome == "failed" else reason, failures=failures,
                   examples_to_failure=examples_to_failure)


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
    ([("incompatible", "returned a str")], "incompatible"),
    ([("passed", None), ("incompatible", "returned a str")], "incompatible"),
    ([("skipped", "no mesh"), ("incompatible", "returned a str")], "incompatible"),
    ([("incompatible", "returned a str"), ("failed", "boom")], "fail"),
    ([("incompatible", "returned a str"), ("xfailed", "known")], "known-failure"),
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
                                         "examples_to_first_failure", "failures", "incompatible"}
    assert report["environment"] == []


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


# -- every distinct failure ----------------------------------------------------

def test_fail_keeps_every_failure_with_its_test_and_example():
    builder = ReportBuilder()
    builder.record(target="keras", clause="train.equivalence", world_size=2, nodeid="t::a[w2]", outcome="failed",
                   examples=9, failures=[("AssertionError: loss", "ex loss"), ("AssertionError: weights", "ex w")],
                   examples_to_failure=4)
    builder.record(target="keras", clause="train.equivalence", world_size=2, nodeid="t::b[w2]", outcome="failed",
                   examples=3, failures=[("RankError: grad", "ex grad")], examples_to_failure=3)
    (cell,) = builder.build(HEADER, [], ["keras"])["results"]
    assert cell["status"] == "fail"
    assert (cell["reason"], cell["first_failing_example"]) == ("AssertionError: loss", "ex loss")
    assert cell["failures"] == [
        # Hypothesis counts examples to a test's first failure, not per failure.
        {"test": "t::a[w2]", "reason": "AssertionError: loss", "example": "ex loss", "examples_to_failure": None},
        {"test": "t::a[w2]", "reason": "AssertionError: weights", "example": "ex w", "examples_to_failure": None},
        {"test": "t::b[w2]", "reason": "RankError: grad", "example": "ex grad", "examples_to_failure": 3},
    ]
    md = to_markdown({"header": HEADER, "results": [cell]})
    assert "3 distinct failures:" in md
    for text in ("AssertionError: weights", "ex w", "ex grad", "`t::b[w2]` (first failure after 3 examples)"):
        assert text in md
    lines = summary_lines({"header": HEADER, "results": [cell]})
    assert lines[1:] == ["  FAIL keras train.equivalence w2: AssertionError: loss",
                         "    also: AssertionError: weights (t::a[w2])", "    also: RankError: grad (t::b[w2])"]


def test_known_failure_keeps_the_failures_seen():
    builder = ReportBuilder()
    builder.record(target="keras", clause="variable.read", world_size=2, nodeid="t::a[w2]", outcome="xfailed",
                   examples=5, reason="known failure: reads give the shard",
                   failures=[("AssertionError: read gave the shard", "ex")])
    (cell,) = builder.build(HEADER, [], ["keras"])["results"]
    assert (cell["status"], cell["reason"]) == ("known-failure", "known failure: reads give the shard")
    assert [f["reason"] for f in cell["failures"]] == ["AssertionError: read gave the shard"]


# -- incompatible --------------------------------------------------------------

def _incompatible_report():
    builder = ReportBuilder()
    builder.record(target="keras", clause="layout.placements", world_size=2, nodeid="t::p[w2]",
                   outcome="incompatible", examples=1, reason="_to_backend_layout returned a str, not a layout")
    builder.record(target="keras", clause="mesh.identity", world_size=2, nodeid="t::m[w2]", outcome="failed",
                   examples=4, failures=[("AssertionError: stale mesh", "ex")])
    builder.record(target="keras", clause="mesh.identity", world_size=2, nodeid="t::n[w2]",
                   outcome="incompatible", examples=1, reason="backend_mesh is a dict")
    return builder.build(HEADER, [], ["keras"])


def test_incompatible_cells_and_their_reasons():
    cells = {c["clause"]: c for c in _incompatible_report()["results"]}
    placements, mesh = cells["layout.placements"], cells["mesh.identity"]
    assert (placements["status"], placements["reason"]) == ("incompatible",
                                                            "_to_backend_layout returned a str, not a layout")
    assert placements["incompatible"] == [{"test": "t::p[w2]", "reason": placements["reason"]}]
    assert placements["failures"] == []
    # A failure wins the cell; the other test's incompatibility is kept beside it.
    assert mesh["status"] == "fail"
    assert mesh["incompatible"] == [{"test": "t::n[w2]", "reason": "backend_mesh is a dict"}]


def test_incompatible_in_markdown_and_summary():
    report = _incompatible_report()
    md = to_markdown(report)
    assert "| `layout.placements` | incompatible (1) |" in md
    section = md.split("## Incompatible")[1].split("## Unsupported")[0]
    assert "- keras layout.placements w2, `t::p[w2]`: _to_backend_layout returned a str, not a layout" in section
    assert "- keras mesh.identity w2 (cell: fail), `t::n[w2]`: backend_mesh is a dict" in section
    assert "keras layout.placements w2" not in md.split("## Failures")[1].split("## Incompatible")[0]
    lines = summary_lines(report)
    assert lines[0] == "kdist-props report: 1 fail, 1 incompatible"
    assert "  INCOMPATIBLE keras layout.placements w2: _to_backend_layout returned a str, not a layout" in lines


# -- the environment section ---------------------------------------------------

def _environment_report(status_by_size):
    outcomes = {"present": "xfailed", "absent": "passed", "skipped": "skipped", "error": "failed"}
    builder = ReportBuilder()
    for world_size, status in status_by_size.items():
        builder.record_environment(probe="torch-permuted-mesh-gather", world_size=world_size,
                                   test=f"t::env[w{world_size}]", outcome=outcomes[status],
                                   reason=None if status == "absent" else f"{status} detail",
                                   workaround="meshes in rank order")
    return builder.build({**HEADER, "torch_version": "2.13.0"}, [], ["keras"])


def test_environment_probes_are_apart_from_cells():
    report = _environment_report({1: "skipped", 2: "present", 4: "present"})
    assert report["results"] == []  # no target cell, of any target
    assert [(p["world_size"], p["status"], p["torch_version"]) for p in report["environment"]] == [
        (1, "skipped", "2.13.0"), (2, "present", "2.13.0"), (4, "present", "2.13.0")]
    assert report["environment"][1]["detail"] == "present detail"
    assert summary_lines(report)[1:] == [
        "environment: torch bug torch-permuted-mesh-gather present at w2, w4 (torch 2.13.0); "
        "a target's failures that meet it name it"]
    assert "| `torch-permuted-mesh-gather` | w2 | present | 2.13.0 | present detail |" in to_markdown(report)


def test_a_fixed_torch_is_loud():
    report = _environment_report({2: "absent", 4: "error"})
    absent, error = report["environment"]
    assert absent["detail"] == "the torch bug no longer shows: remove the suite's workaround (meshes in rank order)"
    assert summary_lines(report)[1:] == [
        "  ENVIRONMENT CHANGED: torch bug torch-permuted-mesh-gather ABSENT at w2 (torch 2.13.0): " + absent["detail"],
        "  ENVIRONMENT PROBE ERROR torch-permuted-mesh-gather w4: error detail"]


# -- failures, from the exceptions a test raised (never from its text) --------

def test_a_rank_error_reason_starts_with_the_ranks_exception():
    outcome = RaisedOutcome("ValueError", "bad\nsecond line", "Traceback (most recent call last):\nValueError: bad\n")
    error = RankError("rank(s) [0] of 2 raised", {0: outcome.traceback}, outcomes={0: outcome})
    error.add_note("Falsifying example: test_x(\n    data=data(...),\n)")
    error.add_note("Draw 1 (mesh): MeshSpec(shape=(2,), axis_names=('a',), ranks=(0, 1))")
    error.add_note("You can reproduce this example by temporarily adding @reproduce_failure('6', b'AA')")
    assert failures(error) == [(
        "ValueError: bad (rank(s) [0] of 2 raised)",
        "Falsifying example: test_x(\n    data=data(...),\n)\n"
        "Draw 1 (mesh): MeshSpec(shape=(2,), axis_names=('a',), ranks=(0, 1))")]


def test_a_crash_reason_says_how_the_rank_ended():
    error = RankCrash("rank(s) [1] of 2 died during the example", {1: "log"}, exit_codes={1: -9})
    assert failures(error)[0][0] == "rank 1 killed by SIGKILL (exit code -9) (rank(s) [1] of 2 died during the example)"


def test_an_exception_group_gives_one_failure_per_member():
    first, second = AssertionError("expected x < 5, got 11\nassert 11 < 5"), ValueError("three is bad: 3")
    first.add_note("Draw 1 (x): 11")
    second.add_note("Draw 1 (x): 3")
    assert failures(ExceptionGroup("Hypothesis found 2 distinct failures", [first, second])) == [
        ("AssertionError: expected x < 5, got 11", "Draw 1 (x): 11"), ("ValueError: three is bad: 3", "Draw 1 (x): 3")]


# -- end to end: a pytest session writes the report ------------------------------

SESSION_TESTS = '''
import pytest
from hypothesis import given, strategies as st

from kdist_props.targets.base import Incompatible


@pytest.mark.clause("layout.variable")
@given(data=st.data())
def test_two_bugs(kdist, data):
    x = data.draw(st.integers(0, 100), label="x")
    if x > 10:
        assert x < 5, f"expected x < 5, got {x}"
    if x == 3:
        raise ValueError(f"three is bad: {x}")

@pytest.mark.clause("layout.variable")
def test_cannot_drive(kdist):
    raise Incompatible("_to_backend_layout returned a str")


@pytest.mark.clause("ops.scope")
def test_only_incompatible(kdist):
    raise Incompatible("backend_layout is a dict")


@pytest.mark.clause("variable.read")
def test_known_reason(kdist):
    raise AssertionError("read gave the local shard")


@pytest.mark.clause("variable.assign")
def test_new_reason(kdist):
    raise AssertionError("assign lost the layout")
'''

BASELINE = '''
[[known_failure]]
test = "test_session.py::test_known_reason"
match = "local shard"
reason = "reads give the local shard"

[[known_failure]]
test = "test_session.py::test_new_reason"
match = "local shard"
reason = "reads give the local shard"
'''


def test_session_report_keeps_failures_incompatible_and_baseline_match(tmp_path):
    import keras

    (tmp_path / "test_session.py").write_text(SESSION_TESTS)
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / f"keras-{keras.__version__}.toml").write_text(BASELINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDIST_", "CI"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_session.py", "--kdist-target=keras",
         "--kdist-world-sizes=1", "--kdist-profile=ci", "--kdist-baselines=baselines", "--kdist-report=r.json"],
        cwd=tmp_path, env={**env, "KERAS_BACKEND": "torch"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    cells = {c["clause"]: c for c in load(tmp_path / "r.json")["results"] if c["status"] != "not-run"}
    variable = cells["layout.variable"]
    assert variable["status"] == "fail"
    assert sorted(f["reason"] for f in variable["failures"]) == [
        "AssertionError: expected x < 5, got 11", "ValueError: three is bad: 3"]
    assert {f["example"].splitlines()[-1] for f in variable["failures"]} == {"Draw 1 (x): 11", "Draw 1 (x): 3"}
    assert variable["incompatible"] == [{"test": "test_session.py::test_cannot_drive[w1]",
                                         "reason": "_to_backend_layout returned a str"}]
    assert (cells["ops.scope"]["status"], cells["ops.scope"]["reason"]) == ("incompatible",
                                                                            "backend_layout is a dict")
    assert cells["variable.read"]["status"] == "known-failure"
    # Baselined, but failing for another reason than its `match`: a failure, with that reason.
    assert (cells["variable.assign"]["status"], cells["variable.assign"]["reason"]) == (
        "fail", "AssertionError: assign lost the layout")
    assert "FAILED test_session.py::test_new_reason[w1]" in result.stdout


def test_a_failure_on_a_permuted_mesh_names_the_torch_bug_probe():
    from kdist_props.contract.specs import DistributionSpec, MeshSpec
    from kdist_props.harness import torch_bugs

    permuted = DistributionSpec("DataParallel", MeshSpec((2, 1), ("batch", "model"), (1, 0)))
    in_order = DistributionSpec("DataParallel", MeshSpec((2,), ("batch",), (0, 1)))
    assert torch_bugs.bugs_met([in_order]) == {}, "a mesh in rank order meets no torch bug"
    bugs = torch_bugs.bugs_met([in_order, (permuted,)])
    assert list(bugs) == [torch_bugs.PERMUTED_MESH_GATHER], f"expected the permuted-mesh probe, got {bugs}"
    reason = torch_bugs.annotated("AssertionError: wrong", bugs)
    assert reason.startswith("AssertionError: wrong") and "environment probe torch-permuted-mesh-gather" in reason \
        and "(1, 0)" in reason, f"expected the reason first, then the probe id and the ranks; got {reason!r}"
    assert torch_bugs.annotated("AssertionError: wrong", {}) == "AssertionError: wrong"


def test_mutants_prints_the_reference_failures_from_pytests_log(tmp_path):
    from kdist_props.harness.mutation import reference_failure_text

    log = tmp_path / "mutants.log"
    log.write_text("collected\n=== FAILURES ===\n"
                   "_____ test_x[mutant:foo-w2] _____\nfoo's failure\n"
                   "_____ test_y[reference-w2-fit] _____\nrank 1 killed by SIGABRT\nlog tail:\nterminate called\n")
    text = reference_failure_text(log)
    assert "terminate called" in text and "foo's failure" not in text, \
        f"expected the reference's section (with the rank's log tail) and no mutant's; got {text!r}"


def test_a_mismatch_of_a_matrix_is_one_reason_line():
    message = describe_mismatch("d0/kernel", torch.tensor([[0.5], [1.0]]), torch.tensor([[0.5], [0.0]]), "example")
    assert "\n" not in message and "[[0.5], [0. ]]" in message, \
        f"expected the whole mismatch on one line (a reason is the message's first line); got {message!r}"
