"""The capability report: one status per (target, clause, world size), and an
environment section for bugs of torch itself.

The pytest plugin records every test's outcome here; `build` folds them into
cells and adds a "not-run" cell for every expected clause that no test
covered, so a clause can never vanish from the report without a trace.
Environment probes (tests marked `environment`) run on the pools with torch
alone and are kept apart from every target's cells.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

# What harness/outcomes.py decides a test's outcome is; "unsupported" and
# "incompatible" are the target's verdicts (targets.base), read from their type.
OUTCOMES = ("passed", "failed", "skipped", "unsupported", "incompatible", "xfailed", "xpassed")
STATUSES = ("pass", "fail", "unexpected-pass", "known-failure", "incompatible", "unsupported", "not-run")
# Statuses a reader must look at; listed one per line by `summary_lines`.
ATTENTION = ("fail", "unexpected-pass", "incompatible", "not-run")
NOT_RUN_REASON = "no test ran for this clause"
# A reason can hold a whole traceback; the Markdown keeps only its head.
MD_REASON_LINES = 20

# The parameter that gives an environment probe its world size (its fixture).
ENVIRONMENT_PARAM = "kdist_environment"
# Environment probes: what a probe's pytest outcome says about the torch bug it pins.
ENVIRONMENT_STATUS = {"xfailed": "present", "passed": "absent", "skipped": "skipped", "failed": "error"}


@dataclass(frozen=True)
class Failure:
    """One distinct failure of one test: its reason line and Hypothesis' shrunk
    example. `examples_to_failure` is known only for a test that failed one way
    (Hypothesis counts examples up to its first failure, not per failure)."""

    test: str
    reason: str
    example: str | None = None
    examples_to_failure: int | None = None


@dataclass
class _Record:
    nodeid: str
    outcome: str
    examples: int
    reason: str | None
    failures: list[Failure] = field(default_factory=list)
    examples_to_failure: int | None = None


class ReportBuilder:
    """Collects test outcomes during a session and builds the report."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, str, int], list[_Record]] = {}
        self._environment: list[dict] = []

    def record(self, *, target: str, clause: str, world_size: int, nodeid: str, outcome: str, examples: int,
               reason: str | None = None, failures: list[tuple[str, str | None]] = (),
               examples_to_failure: int | None = None) -> None:
        """One test's outcome. `reason`: the skip, incompatibility or baseline
        reason; `failures`: (reason line, shrunk example) of every distinct
        failure (failed and xfailed tests); `examples_to_failure`: examples the
        test ran up to its first failure."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        if outcome == "failed" and not failures:
            failures = [(reason or "(no reason given)", None)]
        to_failure = examples_to_failure if len(failures) == 1 else None
        kept = [Failure(nodeid, why, example, to_failure) for why, example in failures]
        if outcome == "failed" and reason is None:
            reason = kept[0].reason
        record = _Record(nodeid, outcome, examples, reason, kept, examples_to_failure)
        self._cells.setdefault((target, clause, world_size), []).append(record)

    def record_environment(self, *, probe: str, world_size: int, test: str, outcome: str,
                           reason: str | None = None, workaround: str | None = None) -> None:
        """An environment probe's outcome: xfailed = the torch bug is present,
        passed = absent (a fixed torch: the workaround can go), skipped, or
        failed = the probe itself broke."""
        status = ENVIRONMENT_STATUS.get(outcome)
        if status is None:
            raise ValueError(f"environment probe {probe}: unexpected outcome {outcome!r}")
        if status == "absent":
            reason = ("the torch bug no longer shows: remove the suite's workaround"
                      + (f" ({workaround})" if workaround else ""))
        self._environment.append({"id": probe, "world_size": world_size, "status": status, "test": test,
                                  "detail": reason or "", "workaround": workaround})

    @property
    def recorded(self) -> bool:
        """Whether any property or environment probe has reported here."""
        return bool(self._cells or self._environment)

    def examples_per_clause(self) -> dict[str, int]:
        """Examples the ranks ran for each clause, over every target, world size and test."""
        counts: Counter = Counter()
        for (_, clause, _), records in self._cells.items():
            counts[clause] += sum(r.examples for r in records)
        return dict(sorted(counts.items()))

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
                             first_failing_example=None, examples_to_first_failure=None,
                             failures=[], incompatible=[])
            else:
                entry.update(_aggregate(records))
            results.append(entry)
        torch_version = header.get("torch_version")
        environment = [{**probe, "torch_version": torch_version}
                       for probe in sorted(self._environment, key=lambda p: (p["id"], p["world_size"]))]
        return {"header": dict(header), "results": results, "environment": environment}


def _aggregate(records: list[_Record]) -> dict:
    """Fold one cell's test outcomes into a status: the first rule that applies.

      fail             some test failed: the target broke the clause
      unexpected-pass  some strict known failure passed (the baseline is out of date)
      known-failure    some test failed as its baseline entry expects
      incompatible     some test could not drive the target (never a verdict on it)
      pass             some test passed, the others (if any) were skipped as unsupported
      unsupported      every test was skipped (the target lacks a piece)

    An incompatible test outranks a pass: part of the clause was never
    checked, so the cell must not read `pass`. Whatever the status, the cell
    keeps every distinct failure (`failures`: each with its test, reason and
    shrunk example, known failures included) and every incompatibility
    (`incompatible`: test and what was found), so one test's failure hides
    neither another's failure nor a test the suite could not run. `reason` and
    `first_failing_example` are those of the first failure (or of the rule that
    decided the status), for readers of a single line.
    """
    by_outcome: dict[str, list[_Record]] = {}
    for r in records:
        by_outcome.setdefault(r.outcome, []).append(r)
    failures = [f for r in records if r.outcome in ("failed", "xfailed") for f in r.failures]
    incompatible = [{"test": r.nodeid, "reason": r.reason} for r in by_outcome.get("incompatible", ())]
    reason = example = to_failure = None
    if "failed" in by_outcome:
        first = by_outcome["failed"][0]
        status, reason, example = "fail", first.reason, first.failures[0].example
        to_failure = first.examples_to_failure
    elif "xpassed" in by_outcome:
        # `reason` is the baseline entry's reason.
        status = "unexpected-pass"
        reason = f"known failure no longer fails: {by_outcome['xpassed'][0].reason or '?'}"
    elif "xfailed" in by_outcome:
        first = by_outcome["xfailed"][0]
        status, reason = "known-failure", first.reason
        example = first.failures[0].example if first.failures else None
    elif incompatible:
        status, reason = "incompatible", incompatible[0]["reason"]
    elif len(by_outcome.get("skipped", ())) + len(by_outcome.get("unsupported", ())) == len(records):
        first = (by_outcome.get("unsupported") or records)[0]
        status, reason = "unsupported", first.reason
    else:
        status = "pass"
    return {"status": status, "examples": sum(r.examples for r in records),
            "tests": [r.nodeid for r in records], "reason": reason,
            "first_failing_example": example, "examples_to_first_failure": to_failure,
            "failures": [asdict(f) for f in failures], "incompatible": incompatible}


# -- output --------------------------------------------------------------------

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


def _code_block(text: str | None, empty: str = "(no reason given)") -> list[str]:
    return ["```", *(text or empty).rstrip().splitlines()[:MD_REASON_LINES], "```"]


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
    failures = [c for c in results if c["status"] not in ("pass", "unsupported", "incompatible")]
    for c in failures:
        lines += _md_failure(c)
    if not failures:
        lines += ["None.", ""]
    lines += ["## Incompatible (the suite could not drive the target; not a verdict on it)", ""]
    incompatible = [(c, i) for c in results for i in c.get("incompatible", ())]
    lines += [f"- {cell_label(c)}" + (f" (cell: {c['status']})" if c["status"] != "incompatible" else "")
              + f", `{i['test']}`: {first_line(i['reason']) or '(nothing said)'}"
              for c, i in incompatible] or ["None."]
    lines += ["", "## Unsupported", ""]
    unsupported = [c for c in results if c["status"] == "unsupported"]
    lines += [f"- {cell_label(c)}: {first_line(c['reason']) or '(no reason given)'}"
              for c in unsupported] or ["None."]
    lines += ["", "## Environment (bugs of torch itself, not of any target)", ""]
    environment = report.get("environment", [])
    if environment:
        lines += ["| probe | world size | status | torch | detail |", "|---|---|---|---|---|"]
        lines += [f"| `{p['id']}` | w{p['world_size']} | {p['status']} | {p['torch_version']} | "
                  f"{first_line(p['detail']).replace('|', '/')} |" for p in environment]
    else:
        lines.append("No environment probe ran.")
    return "\n".join(lines) + "\n"


def _md_failure(cell: dict) -> list[str]:
    lines = [f"### {cell_label(cell)}: {cell['status']}", ""]
    failures = cell.get("failures", [])
    if cell["status"] != "fail" or not failures:
        lines += [*_code_block(cell["reason"]), ""]
    if failures:
        heading = "distinct failure" if len(failures) == 1 else "distinct failures"
        seen = " (as the baseline expects)" if cell["status"] == "known-failure" else ""
        lines += [f"{len(failures)} {heading}{seen}:", ""]
    for n, f in enumerate(failures, start=1):
        after = f" (first failure after {f['examples_to_failure']} examples)" if f["examples_to_failure"] else ""
        lines += [f"**{n}.** `{f['test']}`{after}", "", *_code_block(f["reason"]), ""]
        if f["example"]:
            lines += ["Shrunk example:", "", "```", f["example"].rstrip(), "```", ""]
    for i in cell.get("incompatible", ()):
        lines += [f"Also incompatible: `{i['test']}`: {first_line(i['reason'])}", ""]
    return lines


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
            if c["status"] == "fail":
                # One line per further distinct failure: a second bug must not hide behind the first.
                lines += [f"    also: {first_line(f['reason'])} ({f['test']})" for f in c["failures"][1:]]
    lines += _environment_lines(report.get("environment", []))
    return lines


def _environment_lines(environment: list[dict]) -> list[str]:
    lines = []
    for probe in sorted({p["id"] for p in environment}):
        runs = [p for p in environment if p["id"] == probe]
        by_status = {s: [p for p in runs if p["status"] == s] for s in ("present", "absent", "error")}
        sizes = {s: ", ".join(f"w{p['world_size']}" for p in ps) for s, ps in by_status.items()}
        version = runs[0]["torch_version"]
        if by_status["present"]:
            lines.append(f"environment: torch bug {probe} present at {sizes['present']} (torch {version}); "
                         "a target's failures that meet it name it")
        if by_status["absent"]:
            lines.append(f"  ENVIRONMENT CHANGED: torch bug {probe} ABSENT at {sizes['absent']} "
                         f"(torch {version}): {first_line(by_status['absent'][0]['detail'])}")
        for p in by_status["error"]:
            lines.append(f"  ENVIRONMENT PROBE ERROR {probe} w{p['world_size']}: {first_line(p['detail'])}")
    return lines
