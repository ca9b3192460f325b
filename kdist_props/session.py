"""One pytest session of kdist-props: settings, pools, attribution of examples
to tests, baselines and the capability report. The plugin module only wires
these into pytest hooks."""

import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import pytest
from hypothesis import reject, settings, statistics

from kdist_props import baselines, contract, profiles, report, repro
from kdist_props.cluster import PoolManager
from kdist_props.cluster.errors import BackendLimitation, RankError, RankHang
from kdist_props.costs import CostLedger, cost_line
from kdist_props.environment import ConfigError, keras_checkout
from kdist_props.targets import registry

MAX_CPU_RANKS_PER_CORE = 4


def parse_world_sizes(text, device, local=True):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--kdist-world-sizes={text!r}: give positive integers separated by commas, e.g. 1,2,4")
    if device == "cpu" and local:  # torchrun ranks run on other hosts
        limit = MAX_CPU_RANKS_PER_CORE * (os.cpu_count() or 1)
        if max(sizes) > limit:
            raise ConfigError(
                f"world size {max(sizes)} needs {max(sizes)} rank processes, more than this machine's "
                f"{os.cpu_count()} cores can run ({limit} at most): lower --kdist-world-sizes"
            )
    return sorted(set(sizes))


def keras_facts():
    try:
        import keras
    except ImportError as error:
        raise ConfigError(f"Keras cannot be imported ({error}): pip install 'keras>=3.13' "
                          "or point KDIST_KERAS at a Keras checkout") from None

    origin = keras_checkout() or os.path.dirname(os.path.dirname(keras.__file__))
    return keras.__version__, ("checkout " if keras_checkout() else "installed ") + origin


# After a test's first hang, its further examples get a short deadline:
# SHORT_DEADLINE_FACTOR times its slowest successful example, at least
# SHORT_DEADLINE_FLOOR_S (never more than --kdist-deadline). Examples of one
# test are alike in cost (the same body, drawn sizes within one strategy), so
# one that takes ten times the slowest seen is hanging, not slow; the floor
# covers a test that hung before any example succeeded, and the noise of a
# loaded machine on millisecond examples. The final replays of a failure still
# get the long deadline, up to LONG_WAITS_PER_TEST long waits in all, so a
# reported hang is a hang at the deadline the user chose.
SHORT_DEADLINE_FACTOR = 10
SHORT_DEADLINE_FLOOR_S = 2.0
LONG_WAITS_PER_TEST = 3


@dataclass
class TestRecord:
    nodeid: str
    target: str
    world_size: int
    clause: str
    examples: int = 0
    first_failure_at: int = None
    clean_target: bool = True  # the next example is the test's first: fresh target, Keras state cleared
    slowest_ok_s: float = 0.0
    long_waits: int = 0  # examples that waited the whole --kdist-deadline
    short_waits: int = 0  # examples that hung under the short deadline
    most_threads_added: int = 0  # by one run of this test (a stateful program counts as one)
    program_threads_added: int = 0  # by the stateful program under way

    def headroom(self):
        """Threads the next run may add, for the pool's replacement rule (cluster/pool.py):
        what this test's most expensive run added, a quarter more and two groups' worth
        for a run that leaks more than any before it (3 threads a gloo group)."""
        return int(self.most_threads_added * 1.25) + 2 * 3

    def note_threads_added(self, added, *, continues_program):
        self.program_threads_added = (self.program_threads_added if continues_program else 0) + max(0, added)
        self.most_threads_added = max(self.most_threads_added, self.program_threads_added)

    @property
    def has_hung(self):
        return self.long_waits + self.short_waits > 0

    def short_deadline(self, long_deadline):
        return min(long_deadline, max(SHORT_DEADLINE_FLOOR_S, SHORT_DEADLINE_FACTOR * self.slowest_ok_s))


@dataclass
class LeakRecord:
    """What one target left on the ranks of one world size, over the session."""

    examples: int = 0
    groups_left: int = 0  # process groups still held after the examples that made them
    threads_left: int = 0
    pool_replacements: int = 0

    def as_dict(self):
        per_example = self.examples or 1
        return {"examples": self.examples, "groups_left": self.groups_left, "threads_left": self.threads_left,
                "groups_per_example": round(self.groups_left / per_example, 3),
                "threads_per_example": round(self.threads_left / per_example, 3),
                "pool_replacements": self.pool_replacements}


class Runner:
    """What a property test uses: run a body on every rank of its pool."""

    def __init__(self, session, target, world_size):
        self.session, self.target, self.world_size = session, target, world_size

    def __repr__(self):  # Hypothesis prints it in every failing example
        return f"kdist(target={self.target!r}, world_size={self.world_size})"

    def run(self, body, example, *, agree=False, stateful=False, starts_state=False):
        """Observations by rank. A failure of the communication backend (not
        of the target) is noted in the report and the example is rejected.

        stateful=True keeps the rank state of the previous run (a step of a
        stateful program); starts_state=True marks a program's first step,
        whose rank state starts empty. The pool may be replaced (when its ranks
        hold too many leaked groups) before any run that is not a later step.
        """
        record = self.session.current or TestRecord("", self.target, self.world_size, None, clean_target=False)
        record.examples += 1
        # Where no rank state must survive this run: a fresh pool if the ranks
        # hold too much of what the target leaked.
        may_replace = starts_state or not stateful
        pool = self.session.pool_for(self.world_size, target=self.target,
                                     replace_if=(lambda p: p.holds_too_much(record.headroom())) if may_replace
                                     else None)
        clean_target, record.clean_target = record.clean_target, False
        deadline, deadline_name, long_wait = self.deadline(record)
        before = pool.leaked()
        began = time.monotonic()
        try:
            with self.session.costs.run(record.nodeid, cold=not pool.has_run):
                observations = pool.run(body, example, target=self.target, deadline_s=deadline, stateful=stateful,
                                        starts_state=starts_state, agree=agree, clean_target=clean_target,
                                        deadline_name=deadline_name)
        except RankHang:
            self.session.hangs[record.nodeid] = record
            if long_wait:
                record.long_waits += 1
            else:
                record.short_waits += 1
            raise
        except BackendLimitation as limitation:
            self.session.backend_limitations.add(f"{limitation.summary}: {limitation.cause()}")
            reject()
        except RankError as error:
            # A target that says, on a rank, that the suite cannot drive it (or
            # that it lacks a piece) ends the test as such, never as a failure.
            verdict = target_verdict(error.cause())
            if verdict:
                pytest.skip(verdict)
            raise
        finally:
            if not pool.broken:
                after = pool.leaked()
                self.session.note_leaks(self.target, self.world_size, before, after)
                record.note_threads_added(after.threads - before.threads, continues_program=stateful and not starts_state)
        record.slowest_ok_s = max(record.slowest_ok_s, time.monotonic() - began)
        return observations

    def deadline(self, record):
        """(seconds, what to call it, whether it is the long one) for the next example of `record`'s test."""
        long_deadline = self.session.deadline
        if not record.has_hung:
            return long_deadline, "--kdist-deadline", True
        if is_final_replay() and record.long_waits < LONG_WAITS_PER_TEST:
            return long_deadline, "--kdist-deadline, final replay of a failure", True
        short = record.short_deadline(long_deadline)
        return short, (f"short deadline after a hang in this test: {SHORT_DEADLINE_FACTOR}x its slowest "
                       f"example, at least {SHORT_DEADLINE_FLOOR_S:g} s"), False


def is_final_replay():
    """Whether Hypothesis is replaying a shrunk failure to report it."""
    from hypothesis.control import current_build_context
    from hypothesis.errors import InvalidArgument

    try:
        return current_build_context().is_final
    except InvalidArgument:  # not inside a Hypothesis test
        return False


@dataclass(repr=False)
class Session:
    targets: list
    world_sizes: list
    device: str
    deadline: float
    profile: str
    report_path: str
    mutant_scope: str
    target_source: str
    keras_version: str
    keras_origin: str
    baseline: object
    pools: PoolManager
    current: TestRecord = None
    backend_limitations: set = field(default_factory=set)
    leaks: dict = field(default_factory=dict)  # (target, world size) -> LeakRecord
    hangs: dict = field(default_factory=dict)  # nodeid -> TestRecord of tests that hung
    builder: report.ReportBuilder = field(default_factory=report.ReportBuilder)
    summary: list = field(default_factory=list)
    recorded: bool = False
    torchrun: str = None  # HOST:PORT where torchrun-launched ranks dial in; None: local pools
    budget_s: float = None  # --kdist-budget in seconds: round robin until spent (budget.py)
    caught: set = field(default_factory=set)  # mutants that failed a clause they break
    turns: dict = field(default_factory=dict)  # nodeid -> turns it got in a budget run
    database_entries_at_start: int = 0
    costs: CostLedger = field(default_factory=CostLedger)  # where the session's time went (costs.py)

    @classmethod
    def from_config(cls, config):
        import kdist_props

        if kdist_props.ENVIRONMENT_ERROR is not None:
            raise kdist_props.ENVIRONMENT_ERROR
        option = config.getoption
        keras_version, keras_origin = keras_facts()
        targets = [t.strip() for t in option("--kdist-target").split(",") if t.strip()]
        for target in targets:
            registry.validate(target)
        device = option("--kdist-device")
        torchrun = option("--kdist-torchrun")
        world_sizes = parse_world_sizes(option("--kdist-world-sizes"), device, local=not torchrun)
        if device == "cuda" and not torchrun:
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--kdist-device=cuda, but torch {torch.__version__} sees no CUDA GPU: "
                                  "use --kdist-device=cpu (gloo) or run on a machine with GPUs")
        profile = config.getoption("--hypothesis-profile", None) or option("--kdist-profile") or profiles.default_profile()
        if profile not in profiles.PROFILES and not config.getoption("--hypothesis-profile", None):
            raise ConfigError(f"--kdist-profile={profile!r}: choose one of {', '.join(profiles.PROFILES)}")
        settings.load_profile(profile)
        baseline = baselines.load_baseline(option("--kdist-baselines"), "keras", keras_version) \
            if "keras" in targets else baselines.Baseline()
        repro.clear_repros(option("--kdist-report"))  # a cell that passes now keeps no old repro
        return cls(
            targets=targets, world_sizes=world_sizes, device=device, deadline=option("--kdist-deadline"),
            profile=profile, report_path=option("--kdist-report"), mutant_scope=option("--kdist-mutant-scope"),
            target_source=target_source(config),
            keras_version=keras_version, keras_origin=keras_origin, baseline=baseline,
            pools=pool_manager(torchrun, world_sizes, device, option("--kdist-startup-timeout")),
            torchrun=torchrun, budget_s=option("--kdist-budget") and option("--kdist-budget") * 60,
            database_entries_at_start=count_files(database_path()),
        )

    # -- collection -------------------------------------------------------

    def runs_clause(self, target, clause):
        if not target.startswith(registry.MUTANT_PREFIX) or self.mutant_scope == "all" or clause is None:
            return True
        return mutant_breaks(target, clause)

    def cases_for(self, clause):
        return [(t, ws) for t in self.targets for ws in self.world_sizes if self.runs_clause(t, clause)]

    def case_id(self, target, world_size):
        return f"w{world_size}" if len(self.targets) == 1 else f"{target}-w{world_size}"

    def runner(self, target, world_size):
        return Runner(self, target, world_size)

    def pool_for(self, world_size, *, target, replace_if=None):
        """The pool of `world_size`; a fresh one when `replace_if(pool)` says so."""
        before = self.pools.replacements.get(world_size, 0)
        pool = self.pools.get(world_size, replace_if=replace_if)
        if self.pools.replacements.get(world_size, 0) > before:
            self.leaks_of(target, world_size).pool_replacements += 1
        return pool

    def leaks_of(self, target, world_size):
        return self.leaks.setdefault((target, world_size), LeakRecord())

    def note_leaks(self, target, world_size, before, after):
        leaks = self.leaks_of(target, world_size)
        leaks.examples += 1
        leaks.groups_left += max(0, after.process_groups - before.process_groups)
        leaks.threads_left += max(0, after.threads - before.threads)

    def harness_facts(self):
        """For the report header: what targets leaked on the ranks, the most
        threads a rank held, and the tests that hung (with their deadline waits)."""
        return {
            "leaks": {f"{target} w{ws}": record.as_dict() for (target, ws), record in sorted(self.leaks.items())},
            "max_threads": self.pools.max_threads,
            "hangs": {nodeid: {"long_deadline_waits": r.long_waits, "short_deadline_waits": r.short_waits,
                               "short_deadline_s": round(r.short_deadline(self.deadline), 3)}
                      for nodeid, r in self.hangs.items()},
        }

    def harness_lines(self):
        facts = self.harness_facts()
        lines = [f"leaks: {where}: " + ", ".join(f"{k}={v}" for k, v in leaked.items())
                 for where, leaked in facts["leaks"].items() if leaked["groups_left"] or leaked["pool_replacements"]]
        lines.append(f"max threads held by a rank: {facts['max_threads']}")
        lines += [f"hang: {nodeid}: long-deadline waits={h['long_deadline_waits']} "
                  f"short-deadline waits={h['short_deadline_waits']} (short deadline {h['short_deadline_s']:g} s)"
                  for nodeid, h in facts["hangs"].items()]
        return lines

    def apply_baselines(self, items):
        keras_items = 0
        for item in items:
            target, world_size, clause = self.item_case(item)
            if target != "keras":
                continue
            keras_items += 1
            entry = self.baseline.match(item.nodeid, clause, world_size)
            if entry is not None:
                item.add_marker(pytest.mark.xfail(strict=entry.strict, reason=f"known failure ({self.baseline.path}): "
                                                                      f"{entry.reason}"))
        for entry in self.baseline.unmatched() if keras_items else ():
            warnings.warn(f"baseline {self.baseline.path}: entry matches no test: {entry}")

    @staticmethod
    def item_case(item):
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("kdist") if callspec is not None else None
        if not isinstance(case, tuple):  # not a property, or no case (a mutant that skips this clause)
            return None, None, None
        marker = item.get_closest_marker("clause")
        target, world_size = case
        return target, world_size, marker.args[0] if marker else None

    # -- running ----------------------------------------------------------

    def begin_test(self, item, runner, clause):
        self.current = TestRecord(item.nodeid, runner.target, runner.world_size, clause)
        if self.device == "cuda" and not self.torchrun:  # torchrun ranks count their own GPUs
            import torch

            if torch.cuda.device_count() < runner.world_size:
                pytest.skip(f"world size {runner.world_size} needs {runner.world_size} GPUs for NCCL; "
                            f"{torch.cuda.device_count()} visible")
        if self.mutant_scope == "first-catch" and runner.target in self.caught:
            pytest.skip(f"{runner.target} is caught already (--kdist-mutant-scope=first-catch)")
        reason = registry.load_target(runner.target).unsupported(clause) if clause else None
        if reason:
            pytest.skip(f"unsupported: {reason}")
        if runner.world_size in self.pools.pools:
            # Every test starts from a clean target (its first run asks the ranks
            # for one) on ranks that hold no groups or threads left by earlier
            # tests: when the pool replaces itself during the test then depends
            # on this test alone, and so does the verdict its replay line reproduces.
            self.pool_for(runner.world_size, target=runner.target, replace_if=lambda pool: pool.has_grown())

    def record(self, item, call, rep):
        """Note a test's outcome in the report: a cell of its (target, clause,
        world size), or for an environment probe (marked `environment`) the
        report's environment section, never a target's cell."""
        target, world_size, clause = self.item_case(item)
        probe = item.get_closest_marker("environment")
        if clause is None and probe is None:
            return
        outcome = None
        if rep.when == "setup" and rep.skipped:
            outcome = "skipped"
        elif rep.when == "setup" and rep.failed or rep.when == "call":
            outcome = classify(rep)
        if outcome is None:
            return
        self.recorded = True
        text = str(rep.longrepr) if rep.longrepr else ""
        reason = skip_reason(rep) if outcome in ("skipped", "xfailed", "xpassed") else None
        if probe is not None:
            callspec = getattr(item, "callspec", None)
            self.builder.record_environment(
                probe=probe.args[0], world_size=callspec.params.get(report.ENVIRONMENT_PARAM) if callspec else None,
                test=item.nodeid, outcome=outcome, workaround=probe.kwargs.get("workaround"),
                reason=reason or (report.failure_reason(text) if outcome == "failed" else None))
            return
        verdict, _, found = (reason or "").partition(": ")
        if outcome == "skipped" and verdict == "incompatible":
            outcome, reason = "incompatible", found  # Runner.run: the suite cannot drive the target
        failures = report.failures_in(text) if outcome in ("failed", "xfailed") else []
        if outcome == "xfailed":
            # A known failure must fail for its known reason: a baseline entry
            # with `match` does not cover a failure whose reason line it misses.
            entry = self.baseline.match(item.nodeid, clause, world_size) if target == "keras" else None
            unexplained = [why for why, _ in failures if entry is not None and not entry.explains(why)]
            if unexplained:
                outcome, reason = "failed", None
                rep.outcome = "failed"
                del rep.wasxfail
                rep.sections.append(("kdist baseline", f"{self.baseline.path} expects this test to fail with a "
                                     f"reason matching {entry.match!r}; it failed with: {unexplained[0]}"))
        record = self.current if self.current and self.current.nodeid == item.nodeid else None
        examples = record.examples if record else 0
        if rep.when == "call" and outcome in ("failed", "xfailed"):  # known failures get repros too
            path = repro.write_repro(item, target=target, clause=clause, world_size=world_size,
                                     case_id=self.case_id(target, world_size), device=self.device,
                                     report_path=self.report_path, failure_text=text)
            if path:
                rep.sections.append(("kdist repro", repro.command_line(path, world_size)))
        if outcome == "failed":
            rep.sections.append(("kdist replay", self.replay_hint(item, target, world_size, record)))
            if target.startswith(registry.MUTANT_PREFIX) and mutant_breaks(target, clause):
                self.caught.add(target)
        self.builder.record(target=target, clause=clause, world_size=world_size, nodeid=item.nodeid,
                            outcome=outcome, examples=examples, reason=reason, failures=failures,
                            examples_to_failure=record.first_failure_at if record else None)

    def replay_hint(self, item, target, world_size, record):
        after = f" (first failure after {record.first_failure_at} examples)" if record and record.first_failure_at else ""
        return (
            f"replay this test{after}:\n  KDIST_TARGET={target} {sys.executable} -m pytest '{item.nodeid}' "
            f"--kdist-world-sizes={world_size} --kdist-profile={self.profile}\n"
            "Hypothesis replays the shrunk example from its database (dev/nightly profiles); with the ci profile, "
            "paste the @reproduce_failure line printed above onto the test to pin it."
        )

    @contextlib.contextmanager
    def hypothesis_statistics(self):
        """While a test runs, learn from Hypothesis how many examples it ran
        before the first failing one (its statistics callback)."""
        previous = statistics.collector.value
        record = self.current

        def note(stats):
            if record is not None:
                record.first_failure_at = examples_to_first_failure(stats)
            if previous is not None:
                previous(stats)

        with statistics.collector.with_value(note):
            yield

    # -- reporting --------------------------------------------------------

    def header(self):
        import hypothesis
        import torch

        return {
            "target": ",".join(self.targets),
            "keras_version": self.keras_version,
            "keras_origin": self.keras_origin,
            "torch_version": torch.__version__,
            "hypothesis_version": hypothesis.__version__,
            "profile": self.profile,
            "world_sizes": self.world_sizes,
            "device": self.device,
            "backend": "nccl" if self.device == "cuda" else "gloo",
            "baseline": str(self.baseline.path) if self.baseline.path else None,
            "target_selected_by": self.target_source,
            "targets": {t: registry.load_target(t).describe() for t in self.targets},
        }

    def header_lines(self):
        h = self.header()
        return [
            f"kdist-props: target={h['target']} world sizes={h['world_sizes']} device={h['device']} "
            f"backend={h['backend']} profile={h['profile']} deadline={self.deadline:g}s "
            f"(target from {h['target_selected_by']})",
            f"kdist-props: keras {h['keras_version']} ({h['keras_origin']}), torch {h['torch_version']}, "
            f"hypothesis {h['hypothesis_version']}, baseline {h['baseline']}",
        ]

    def expected_cells(self):
        return [(c.id, ws) for c in contract.CLAUSES for ws in self.world_sizes]

    def finish(self):
        self.pools.close_all()
        header = self.header()
        header["backend_limitations"] = sorted(self.backend_limitations)
        header["respawned_pools"] = len(self.pools.respawns)
        header.update(self.harness_facts())
        header["time"] = self.costs.split(self.pools)
        header["cost"] = cost_line(header["time"], header["leaks"])
        header["examples_per_clause"] = self.builder.examples_per_clause()
        header["example_database"] = self.example_database_facts()
        if not self.recorded:
            return  # no property ran (e.g. only the suite's own tests)
        expected_by_target = [t for t in self.targets if not t.startswith(registry.MUTANT_PREFIX)]
        built = self.builder.build(header, self.expected_cells(), expected_by_target)
        md_path = os.path.splitext(self.report_path)[0] + ".md"
        report.write(built, self.report_path, md_path)
        self.summary = report.summary_lines(built) + [f"report: {self.report_path} and {md_path}"]
        self.summary += [f"backend limitation (not a target bug): {line}" for line in header["backend_limitations"]]
        self.summary.append(header["cost"])
        self.summary.append("examples per clause: " + ", ".join(
            f"{clause}={count}" for clause, count in header["examples_per_clause"].items()))
        database = header["example_database"]
        if database:
            self.summary.append(f"example database {database['path']}: {database['entries_at_start']} entries at "
                                f"start, {database['entries_at_end']} at the end")

    def example_database_facts(self):
        """Where the profile keeps examples between runs, and how many it held
        when the session started and ended (a run that starts from an earlier
        one's database shows a non-zero start)."""
        path = database_path()
        if path is None:
            return None
        return {"path": path, "entries_at_start": self.database_entries_at_start,
                "entries_at_end": count_files(path)}


def mutant_breaks(target, clause):
    """Whether `clause` is one that mutant `target` declares it breaks (targets/mutants.py)."""
    from kdist_props.targets.mutants import MUTANTS

    return clause in MUTANTS[target.removeprefix(registry.MUTANT_PREFIX)].breaks


def database_path():
    """The directory of the loaded profile's example database, or None (ci keeps none)."""
    path = getattr(settings.default.database, "path", None)
    return None if path is None else str(path)


def count_files(path):
    if path is None or not os.path.isdir(path):
        return 0
    return sum(len(files) for _, _, files in os.walk(path))


def pool_manager(torchrun, world_sizes, device, startup_timeout_s):
    """Local pools forked on this host, or pools of ranks that torchrun starts anywhere."""
    if torchrun:
        from kdist_props.cluster.remote import TorchrunPools

        return TorchrunPools.from_option(torchrun, world_sizes, device=device, startup_timeout_s=startup_timeout_s)
    return PoolManager(device=device, startup_timeout_s=startup_timeout_s)


# How a rank's traceback names the target's own verdicts (targets/base.py).
TARGET_VERDICTS = {"kdist_props.targets.base.Incompatible": "incompatible",
                   "kdist_props.targets.base.Unsupported": "unsupported"}


def target_verdict(cause):
    """`incompatible: <what was found>` or `unsupported: <missing piece>` when a
    rank's exception line is one of the target's verdicts, else None."""
    exception, _, message = cause.partition(": ")
    status = TARGET_VERDICTS.get(exception)
    return f"{status}: {message}" if status else None


def target_source(config):
    if any(str(arg).startswith("--kdist-target") for arg in config.invocation_params.args):
        return "--kdist-target"
    return "KDIST_TARGET" if os.environ.get("KDIST_TARGET") else "default"


def examples_to_first_failure(stats):
    """Test cases Hypothesis ran up to and including the first failing one."""
    count = 0
    for phase in ("explicit", "reuse", "generate"):
        for case in stats.get(f"{phase}-phase", {}).get("test-cases", []):
            count += 1
            if case.get("status") == "interesting":
                return count
    return None


def classify(rep):
    if hasattr(rep, "wasxfail"):
        return "xfailed" if rep.skipped else "xpassed"
    if rep.failed and "XPASS(strict)" in str(rep.longrepr):
        return "xpassed"
    return rep.outcome


def skip_reason(rep):
    if hasattr(rep, "wasxfail"):
        return rep.wasxfail
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return longrepr[2].removeprefix("Skipped: ")
    return str(longrepr)
