"""`kdist-props leaks`: what targets that leak process groups cost, per
replacement rule. For each thread ceiling of the pools' replacement rule
(cluster/pool.py) it runs the properties on the reference and on the leaky
mutants, and prints one row per (ceiling, target): wall time, ratio to the
reference's time under the same ceiling, pool replacements, and the most
threads a rank held.

A benchmark of `tox -e bench`, never a test: wall times on a shared machine
are noisy, so they are printed, not asserted. Exits 1 when the reference
failed a property (a broken suite, not a slow one).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from kdist_props.cluster.pool import CEILING_VARIABLE, NO_CEILING, THREAD_CEILING

REFERENCE = "reference"
LEAKERS = ("mutant:leaky-process-groups", "mutant:mesh-per-variable")


@dataclass
class Timing:
    ceiling: str
    target: str
    wall_s: float
    exit_code: int
    max_threads: int
    replacements: int


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kdist-props leaks", description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="+", default=["tests/properties"], help="test paths (default tests/properties)")
    parser.add_argument("--world-sizes", default="1,2,4")
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--ceilings", default=str(THREAD_CEILING),
                        help=f"comma-separated thread ceilings to sweep, {NO_CEILING!r} for no replacement "
                             f"(default: the shipped {THREAD_CEILING}; tox -e bench sweeps 64,128,256,512,none)")
    parser.add_argument("--targets", default=",".join(LEAKERS), help="leaky targets timed against the reference")
    parser.add_argument("--reports", default="reports/leaks", help="folder for the reports and logs")
    return parser.parse_args(argv)


def timed_run(args, target, ceiling):
    """One pytest run of `target` under thread ceiling `ceiling`, as a Timing."""
    name = f"{target.replace('mutant:', '')}-ceiling-{ceiling}"
    report = os.path.join(args.reports, name + ".json")
    log_path = os.path.join(args.reports, name + ".log")
    os.makedirs(args.reports, exist_ok=True)
    if os.path.exists(report):
        os.remove(report)  # an earlier run's report must not stand in for this one's
    command = [sys.executable, "-m", "pytest", *args.tests, "-q", "-p", "no:cacheprovider",
               f"--kdist-target={target}", f"--kdist-world-sizes={args.world_sizes}",
               f"--kdist-profile={args.profile}", "--kdist-mutant-scope=all", f"--kdist-report={report}"]
    print(f"running ({CEILING_VARIABLE}={ceiling}):", " ".join(command), f"(output in {log_path})", flush=True)
    began = time.monotonic()
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, CEILING_VARIABLE: ceiling}).returncode
    wall = time.monotonic() - began
    if code not in (0, 1) or not os.path.exists(report):
        with open(log_path) as log:
            sys.stdout.write(log.read()[-5000:])
        raise SystemExit(f"pytest on {target} exited with {code}; see {log_path}")
    # The report header has both harness facts: the most threads a rank held,
    # and the pools replaced because of what their ranks held (every world size).
    with open(report) as f:
        header = json.load(f)["header"]
    replacements = sum(record["pool_replacements"] for record in header["leaks"].values())
    print(f"  {wall:.1f} s, {replacements} pool replacements, at most {header['max_threads']} threads a rank; "
          f"{header['cost']}", flush=True)
    return Timing(ceiling, target, wall, code, header["max_threads"], replacements)


def ratios(timings):
    """(timing, its wall time / the reference's under the same ceiling) of every timing."""
    reference_s = {t.ceiling: t.wall_s for t in timings if t.target == REFERENCE}
    return [(t, t.wall_s / reference_s[t.ceiling]) for t in timings]


def print_table(timings):
    """One row per (ceiling, target): its time against the reference's under the same ceiling."""
    print(f"\n{'ceiling':>8} {'target':<32} {'wall s':>8} {'ratio':>6} {'replacements':>13} {'max threads':>12}")
    for t, ratio in ratios(timings):
        print(f"{t.ceiling:>8} {t.target:<32} {t.wall_s:>8.1f} {ratio:>6.2f} {t.replacements:>13} {t.max_threads:>12}")


def best_ceiling(timings):
    """The ceiling whose worst leaker's ratio to the reference is the lowest."""
    worst = {}
    for t, ratio in ratios(timings):
        if t.target != REFERENCE:
            worst[t.ceiling] = max(worst.get(t.ceiling, 0.0), ratio)
    return min(worst.items(), key=lambda item: item[1]) if worst else None


def main(argv=None):
    args = parse_args(argv)
    ceilings = [c.strip().lower() for c in args.ceilings.split(",") if c.strip()]
    targets = [REFERENCE, *(t for t in args.targets.split(",") if t)]
    timings = []
    for ceiling in ceilings:  # the reference first under each: the two are measured close in time
        timings += [timed_run(args, target, ceiling) for target in targets]
    print_table(timings)
    print(f"(worlds {args.world_sizes}, {args.profile} profile, {' '.join(args.tests)}; "
          f"ratio: wall time / the reference's under the same ceiling)")
    best = best_ceiling(timings)
    if best:
        print(f"leaky-target: best ceiling={best[0]} worst ratio={best[1]:.2f} "
              f"max_threads={max(t.max_threads for t in timings if t.ceiling == best[0])}")
    if any(t.exit_code != 0 for t in timings if t.target == REFERENCE):
        print("kdist-props leaks: the reference failed a property (see its log)", file=sys.stderr)
        return 1
    return 0
