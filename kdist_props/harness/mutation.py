"""Mutation analysis: run the properties on the reference and on every mutant
in one pytest session, then print which clause caught each mutant.

The reference must pass every clause; each mutant must fail at least one of
the clauses it declares it breaks (targets/mutants.py). Only a `fail` cell
catches a mutant: `incompatible` (the suite could not drive it) and
`unsupported` say nothing about its bug. The last line is
`mutation score: <caught>/<total>`.
"""

import argparse
import os
import re
import subprocess
import sys

from kdist_props.reporting import report
from kdist_props.targets.mutants import MUTANTS
from kdist_props.targets.registry import MUTANT_PREFIX


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kdist-props mutants", description=__doc__.splitlines()[0])
    parser.add_argument("--tests", default="tests/properties", help="property tests to run (default tests/properties)")
    # Every mutant shows at 1 or 2 ranks; `tox -e dist` covers the reference at 4.
    parser.add_argument("--world-sizes", default="1,2")
    parser.add_argument("--profile", default="ci", help="Hypothesis profile (default ci)")
    parser.add_argument("--report", default="reports/mutants.json")
    parser.add_argument("--mutants", default=",".join(MUTANTS), help="comma-separated mutant names (default all)")
    return parser.parse_args(argv)


def run_pytest(args, targets):
    log_path = os.path.splitext(args.report)[0] + ".log"
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    command = [sys.executable, "-m", "pytest", args.tests, "-q", "-p", "no:cacheprovider", "--durations=30",
               f"--kdist-target={','.join(targets)}", f"--kdist-world-sizes={args.world_sizes}",
               f"--kdist-profile={args.profile}", f"--kdist-report={args.report}",
               # A mutant is caught by its first failing test of a clause it
               # breaks; its other tests would only shrink more failures.
               "--kdist-mutant-scope=first-catch"]
    print("running:", " ".join(command), f"(output in {log_path})", flush=True)
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code not in (0, 1):  # 1: tests failed, as mutants must; anything else is a broken run
        with open(log_path) as log:
            sys.stdout.write(log.read()[-5000:])
        raise SystemExit(f"pytest exited with {code}; see {log_path}")


def reference_failure_text(log_path, limit=20000):
    """The reference's failure sections of pytest's log (tracebacks, rank log
    tails, stack dumps), for people: the verdict came from the report."""
    with open(log_path) as log:
        text = log.read()
    # pytest heads each failure with a line of underscores around the test's name.
    sections = re.split(r"(?m)^(?=_{3,} \S.* _{3,}$)", text)
    kept = [s for s in sections if re.match(r"_{3,} \S*\[reference-", s)]
    return "".join(kept)[-limit:]


def counterexample(text):
    """The labelled draws of Hypothesis' shrunk example (or its steps), on one line."""
    if not text:
        return "-"
    blocks = []
    for line in text.splitlines()[1:]:  # the first line is the test's call
        if line.startswith(("Draw ", "state.")) or not blocks:
            blocks.append(line.strip())
        else:
            blocks[-1] += " " + line.strip()
    blocks = [re.sub(r"\s+", " ", re.sub(r"\s*# or any other generated value", "", b)) for b in blocks]
    return "; ".join(b for b in blocks if b.startswith(("Draw ", "state.")))[:400] or "-"


def score(results, mutant_names):
    rows, caught = [], 0
    for name in mutant_names:
        mutant = MUTANTS[name]
        failed = [c for c in results if c["target"] == MUTANT_PREFIX + name and c["status"] == "fail"]
        catching = [c for c in failed if c["clause"] in mutant.breaks]
        caught += bool(catching)
        first = catching[0] if catching else None
        # Every distinct failure is a counterexample; the first one is printed.
        failures = (first.get("failures") or [{"example": first["first_failing_example"]}]) if first else []
        rows.append((
            name,
            ", ".join(f"{c['clause']} w{c['world_size']}" + _more(c) for c in catching) or "NOT CAUGHT",
            str(first["examples_to_first_failure"]) if first and first["examples_to_first_failure"] else "-",
            counterexample(failures[0]["example"]) if failures else "-",
        ))
    return rows, caught


def _more(cell):
    """` (3 distinct failures)` when a cell failed in more than one way."""
    count = len(cell.get("failures", ()))
    return f" ({count} distinct failures)" if count > 1 else ""


def main(argv=None):
    args = parse_args(argv)
    names = [n for n in args.mutants.split(",") if n]
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise SystemExit(f"unknown mutant(s) {unknown}; known: {', '.join(MUTANTS)}")
    run_pytest(args, ["reference", *(MUTANT_PREFIX + n for n in names)])
    results = report.load(args.report)["results"]
    reference_bad = [c for c in results if c["target"] == "reference" and c["status"] not in
                     ("pass", "known-failure", "unsupported", "not-run")]
    tier_a_not_run = [c for c in results if c["target"] == "reference" and c["status"] == "not-run"]
    print(f"reference: {len(reference_bad)} failing clause cells"
          + "".join(f"\n  FAIL {c['clause']} w{c['world_size']}: {report.first_line(c['reason'] or '')}"
                    for c in reference_bad)
          + (f"; {len(tier_a_not_run)} cells with no property yet" if tier_a_not_run else ""))
    if reference_bad:  # CI keeps only this printout: show what the ranks said
        sys.stdout.write(reference_failure_text(os.path.splitext(args.report)[0] + ".log"))
    rows, caught = score(results, names)
    header = ("mutant", "caught by", "examples to 1st failure", "shrunk counterexample")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    print(f"mutation score: {caught}/{len(names)}")
    return 0 if caught == len(names) and not reference_bad else 1
