"""The capability report: one status per (target, clause, world size).

The pytest plugin records every test's outcome here; `build` folds them into
cells and adds a "not-run" cell for every expected clause that no test
covered, so a clause can never vanish from the report without a trace.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed")
STATUSES = ("pass", "fail", "unexpected-pass", "known-failure", "unsupported", "not-run")
# Statuses a reader must look at; listed one per line by `summary_lines`.
ATTENTION = ("fail", "unexpected-pass", "not-run")
NOT_RUN_REASON = "no test ran for this clause"
# A reason can hold a whole traceback; the Markdown keeps only its head.
MD_REASON_LINES = 20


@dataclass
class _Record:
    nodeid: str
    outcome: str
    examples: int
    reason: str | None
    failing_example: str | None
    examples_to_failure: int | None = None


class ReportBuilder:
    """Collects test outcomes during a session and builds the report."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, str, int], list[_Record]] = {}

    def record(self, *, target: str, clause: str, world_size: int, nodeid: str,
               outcome: str, examples: int, reason: str | None = None,
               failing_example: str | None = None, examples_to_failure: int | None = None) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        record = _Record(nodeid, outcome, examples, reason, failing_example, examples_to_failure)
        self._cells.setdefault((target, clause, world_size), []).append(record)

    def build(self, header: dict, expected: list[tuple[str, int]], targets: list[str]) -> dict:
        # Every expected (clause, size) for every target gets a cell, run or not.
        keys = set(self._cells)
        keys.update((t, c, w) for t in targets for c, w in expected)
        results = []
        for target, clause, world_size in sorted(keys):
            records = self._cells.get((target, clause, world_size))
            entry = {"target": target, "clause": clause, "world_size": world_size}
            if records is None:
                entry.update(status="not-run", examples=0, tests=[], reason=NOT_RUN_REASON,
                             first_failing_example=None, examples_to_first_failure=None)
            else:
                entry.update(_aggregate(records))
            results.append(entry)
        return {"header": dict(header), "results": results}


def _aggregate(records: list[_Record]) -> dict:
    """Fold one cell's test outcomes into a status (rules in order of severity)."""
    by_outcome: dict[str, list[_Record]] = {}
    for r in records:
        by_outcome.setdefault(r.outcome, []).append(r)
    reason = example = to_failure = None
    if "failed" in by_outcome:
        first = by_outcome["failed"][0]
        status, reason, example = "fail", first.reason, first.failing_example
        to_failure = first.examples_to_failure
    elif "xpassed" in by_outcome:
        # A strict known failure that passed: the baseline is out of date.
        # `reason` is the baseline entry's reason.
        status = "unexpected-pass"
        reason = f"known failure no longer fails: {by_outcome['xpassed'][0].reason or '?'}"
    elif "xfailed" in by_outcome:
        first = by_outcome["xfailed"][0]
        status, reason, example = "known-failure", first.reason, first.failing_example
    elif len(by_outcome.get("skipped", ())) == len(records):
        status, reason = "unsupported", records[0].reason
    else:
        status = "pass"
    return {"status": status, "examples": sum(r.examples for r in records),
            "tests": [r.nodeid for r in records], "reason": reason,
            "first_failing_example": example, "examples_to_first_failure": to_failure}


def write(report: dict, json_path, md_path) -> None:
    for path, text in ((json_path, json.dumps(report, indent=2) + "\n"),
                       (md_path, to_markdown(report))):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def load(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cell_label(cell: dict, with_target: bool = True) -> str:
    """`keras ops.matmul w2`: how one cell is named in summaries and comparisons."""
    name = f"{cell['clause']} w{cell['world_size']}"
    return f"{cell['target']} {name}" if with_target else name


def first_line(text: str | None) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def to_markdown(report: dict) -> str:
    lines = ["# kdist-props capability report", ""]
    lines += [f"- **{k}**: {v}" for k, v in report["header"].items()]
    results = report["results"]
    for target in sorted({c["target"] for c in results}):
        cells = {(c["clause"], c["world_size"]): c for c in results if c["target"] == target}
        sizes = sorted({w for _, w in cells})
        lines += ["", f"## Target `{target}`", "",
                  "| clause | " + " | ".join(f"w{w}" for w in sizes) + " |",
                  "|---" * (len(sizes) + 1) + "|"]
        for clause in sorted({c for c, _ in cells}):
            row = [_md_cell(cells.get((clause, w))) for w in sizes]
            lines.append(f"| `{clause}` | " + " | ".join(row) + " |")
    lines += ["", "## Failures", ""]
    failures = [c for c in results if c["status"] not in ("pass", "unsupported")]
    for c in failures:
        lines += [f"### {cell_label(c)}: {c['status']}", "", "```",
                  *(c["reason"] or "(no reason given)").splitlines()[:MD_REASON_LINES], "```"]
        if c["first_failing_example"]:
            lines += ["", "First failing example:", "", "```",
                      c["first_failing_example"].rstrip(), "```"]
        lines.append("")
    if not failures:
        lines += ["None.", ""]
    lines += ["## Unsupported", ""]
    unsupported = [c for c in results if c["status"] == "unsupported"]
    lines += [f"- {cell_label(c)}: {first_line(c['reason']) or '(no reason given)'}"
              for c in unsupported] or ["None."]
    return "\n".join(lines) + "\n"


def _md_cell(cell: dict | None) -> str:
    if cell is None:
        return "—"  # this clause was neither expected nor run at this size
    return f"{cell['status']} ({cell['examples']})"


def summary_lines(report: dict) -> list[str]:
    results = report["results"]
    counts = Counter(c["status"] for c in results)
    totals = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    lines = [f"kdist-props report: {totals or 'no results'}"]
    for c in results:
        if c["status"] in ATTENTION:
            reason = first_line(c["reason"])
            lines.append(f"  {c['status'].upper()} {cell_label(c)}" + (f": {reason}" if reason else ""))
    return lines
