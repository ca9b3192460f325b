"""Compare two capability reports (e.g. two Keras versions) status by status.

A regression makes `kdist-props compare` exit 1, so an upgrade that breaks a
clause fails CI even when the new report on its own looks plausible. A cell
that stays `fail` but fails in a test that did not fail before is a
regression too: a new bug must not hide behind an old one.

`incompatible` (the suite could not drive the target) is never a verdict on
the target: a cell that becomes incompatible, or stops being so, is printed
in its own group and never counts as a regression or a fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from kdist_props.reporting.report import first_line, load


@dataclass(frozen=True)
class Change:
    key: tuple            # (clause, world_size) or (target, clause, world_size)
    old_status: str | None  # None: the cell is only in the new report ("added")
    new_status: str | None  # None: the cell is only in the old report ("removed")
    reason: str | None      # the new cell's reason (the old one's when removed)
    note: str | None = None   # what changed when the status did not

    def describe(self) -> str:
        *target, clause, world_size = self.key
        name = " ".join([*target, f"{clause} w{world_size}"])
        if self.note:
            text = f"{name}: {self.new_status}, {self.note}"
        elif self.old_status is None:
            text = f"{name}: added ({self.new_status})"
        elif self.new_status is None:
            text = f"{name}: removed (was {self.old_status})"
        else:
            text = f"{name}: {self.old_status} -> {self.new_status}"
        reason = first_line(self.reason)
        return f"{text} ({reason})" if reason else text


@dataclass
class Comparison:
    old_header: dict
    new_header: dict
    regressions: list[Change] = field(default_factory=list)
    fixes: list[Change] = field(default_factory=list)
    newly_unsupported: list[Change] = field(default_factory=list)
    newly_supported: list[Change] = field(default_factory=list)
    newly_incompatible: list[Change] = field(default_factory=list)
    no_longer_incompatible: list[Change] = field(default_factory=list)
    other_changes: list[Change] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def _targets(report: dict) -> set[str]:
    return {c["target"] for c in report["results"]}


def _cells(report: dict, with_target: bool) -> dict[tuple, dict]:
    def key(c):
        return (c["target"], c["clause"], c["world_size"]) if with_target else (c["clause"], c["world_size"])
    return {key(c): c for c in report["results"]}


def _group(old: str, new: str) -> str:
    """Which list a status change old -> new (old != new) belongs to."""
    if new == "incompatible":
        return "newly_incompatible"
    if old == "incompatible":
        return "no_longer_incompatible"
    if (old == "pass" and new in ("fail", "unexpected-pass", "not-run")) or \
            (old == "known-failure" and new == "fail"):
        return "regressions"
    if old in ("fail", "known-failure") and new in ("pass", "unexpected-pass"):
        return "fixes"
    if new == "unsupported":
        return "newly_unsupported"
    if old == "unsupported" and new != "not-run":
        return "newly_supported"
    return "other_changes"


def compare(old: dict, new: dict) -> Comparison:
    # Single-target reports are compared clause by clause even when the target
    # names differ (keras vs reference, or two Keras checkouts).
    with_target = not (len(_targets(old)) <= 1 and len(_targets(new)) <= 1)
    old_cells, new_cells = _cells(old, with_target), _cells(new, with_target)
    result = Comparison(old.get("header", {}), new.get("header", {}))
    for key in sorted(old_cells.keys() | new_cells.keys()):
        before, after = old_cells.get(key), new_cells.get(key)
        if before is None:
            result.other_changes.append(Change(key, None, after["status"], after["reason"]))
        elif after is None:
            result.other_changes.append(Change(key, before["status"], None, before["reason"]))
        elif before["status"] != after["status"]:
            change = Change(key, before["status"], after["status"], after["reason"])
            getattr(result, _group(before["status"], after["status"])).append(change)
        elif after["status"] == "fail":
            _compare_failures(result, key, before, after)
    return result


def _failing_tests(cell: dict) -> dict[str, dict]:
    """The first failure of each test of a cell, by test id (reports written
    before cells kept every failure have only `reason`: no per-test view)."""
    failing = {}
    for failure in cell.get("failures", ()):
        failing.setdefault(failure["test"], failure)
    return failing


def _compare_failures(result: Comparison, key: tuple, before: dict, after: dict) -> None:
    """A cell that fails in both reports: new failing tests are a regression,
    tests that stopped failing (while others still fail) are only printed."""
    old, new = _failing_tests(before), _failing_tests(after)
    if not old or not new:
        return
    added = [test for test in new if test not in old]
    gone = [test for test in old if test not in new]
    if added:
        result.regressions.append(Change(key, "fail", "fail", new[added[0]]["reason"],
                                         note=f"new failing test(s): {', '.join(added)}"))
    if gone:
        result.other_changes.append(Change(key, "fail", "fail", None,
                                           note=f"no longer failing: {', '.join(gone)}"))


def _describe_header(header: dict) -> str:
    target, version = header.get("target", "?"), header.get("keras_version", "?")
    return f"keras {version}" if target == "keras" else f"{target} (keras {version})"


GROUPS = (("regressions", "Regressions"), ("fixes", "Fixes"),
          ("newly_unsupported", "Newly unsupported"), ("newly_supported", "Newly supported"),
          ("newly_incompatible", "Newly incompatible (the suite cannot drive the target; not a verdict)"),
          ("no_longer_incompatible", "No longer incompatible"),
          ("other_changes", "Other changes"))


def format_comparison(c: Comparison, old_label: str, new_label: str) -> str:
    lines = [f"{_describe_header(c.old_header)} -> {_describe_header(c.new_header)}",
             f"  old: {old_label}", f"  new: {new_label}"]
    for attr, heading in GROUPS:
        changes = getattr(c, attr)
        lines += ["", f"{heading} ({len(changes)}):"]
        lines += [f"  {ch.describe()}" for ch in changes] or ["  none"]
    return "\n".join(lines) + "\n"


def compare_main(argv: list[str]) -> int:
    """`kdist-props compare OLD.json NEW.json`: 1 on any regression, 2 on bad usage."""
    if len(argv) != 2:
        print("usage: kdist-props compare OLD.json NEW.json", file=sys.stderr)
        return 2
    try:
        old, new = load(argv[0]), load(argv[1])
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"kdist-props compare: cannot read report: {exc}", file=sys.stderr)
        return 2
    comparison = compare(old, new)
    print(format_comparison(comparison, argv[0], argv[1]), end="")
    return comparison.exit_code
