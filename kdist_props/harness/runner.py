"""What a property test uses: run a body on every rank of its pool, under the
deadline and leak policies, and turn a target's verdicts into skips."""

import time
from dataclasses import dataclass, field

from hypothesis import reject

from kdist_props.cluster.errors import RankError, RankHang
from kdist_props.harness import limitations, outcomes
from kdist_props.properties.lifecycle import prepare_target

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
    final_examples: list = field(default_factory=list)  # run while Hypothesis replayed a failure to report it

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


class Runner:
    """The `kdist` fixture: one target on the pool of one world size. The
    session tells it which test runs (`session.current`); it reports every
    event of the harness to `session.stats`."""

    def __init__(self, session, target, world_size):
        self.session, self.target, self.world_size = session, target, world_size

    @property
    def device(self):
        return self.session.config.device

    def __repr__(self):  # Hypothesis prints it in every failing example
        return f"kdist(target={self.target!r}, world_size={self.world_size})"

    def run(self, body, example, *, agree=False, stateful=False, starts_state=False):
        """Observations by rank. A failure of the communication backend (not
        of the target) is noted in the report and the example is rejected; a
        target's own verdict (Unsupported, Incompatible) on every rank that
        raised ends the test as that verdict.

        stateful=True keeps the rank state of the previous run (a step of a
        stateful program); starts_state=True marks a program's first step,
        whose rank state starts empty. The pool may be replaced (when its ranks
        hold too many leaked groups) before any run that is not a later step.
        """
        session, stats = self.session, self.session.stats
        record = session.current or TestRecord("", self.target, self.world_size, None, clean_target=False)
        record.examples += 1
        if is_final_replay():
            record.final_examples.append(example)
        if starts_state or not stateful:  # no rank state must survive this run
            self.replace_pool_if(lambda p: p.holds_too_much(record.headroom()))
        pool = session.pools.get(self.world_size)
        clean_target, record.clean_target = record.clean_target, False
        deadline, deadline_name, long_wait = self.deadline(record)
        before = pool.leaked()
        began = time.monotonic()
        try:
            with session.costs.run(record.nodeid, cold=not pool.has_run):
                observations = pool.run(body, example, target=self.target, deadline_s=deadline, stateful=stateful,
                                        starts_state=starts_state, agree=agree, clean_target=clean_target,
                                        setup=prepare_target, deadline_name=deadline_name)
        except RankHang:
            stats.hung(record)
            if long_wait:
                record.long_waits += 1
            else:
                record.short_waits += 1
            raise
        except RankError as error:
            verdict = outcomes.verdict_of(error)
            if verdict is not None:
                raise verdict from None
            limitation = None if pool.broken else limitations.prove(pool, error, example, deadline_s=deadline)
            if limitation is not None:
                stats.backend_limitation(limitation)
                reject()
            raise
        finally:
            if not pool.broken:
                after = pool.leaked()
                stats.run_finished(self.target, self.world_size, before, after)
                record.note_threads_added(after.threads - before.threads, continues_program=stateful and not starts_state)
        record.slowest_ok_s = max(record.slowest_ok_s, time.monotonic() - began)
        return observations

    def replace_pool_if(self, predicate):
        """Replace this world size's pool when `predicate(pool)` holds (the caller
        knows no rank state must survive), and say so to the stats."""
        if self.session.pools.replace_if(self.world_size, predicate):
            self.session.stats.pool_replaced(self.target, self.world_size)

    def incompatible(self, what):
        """End the test as `incompatible`: the suite cannot read what the target gave."""
        raise outcomes.VerdictSkip("incompatible", what)

    def deadline(self, record):
        """(seconds, what to call it, whether it is the long one) for the next example of `record`'s test."""
        long_deadline = self.session.config.deadline
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
