"""Time-boxed fuzzing: `--kdist-budget=MINUTES` runs the property tests round
robin, a few examples per turn, until the budget is spent, instead of each
test once with the profile's fixed example count.

Round robin over clauses first (one test of each clause, then the next test of
each), so that within the first minutes every clause has had examples; a turn
of a slow test costs more time than a turn of a fast one, but no test gets a
second turn before every test had its first, so slow clauses do not starve
fast ones. A test leaves the rotation once it fails, is skipped (unsupported,
incompatible) or xfails (a known failure): more examples would only repeat
that verdict. Each turn is a full pytest run of the test (setup, call,
teardown, report), so failures, shrinking, the example database and the
report work as in an ordinary run.
"""

import itertools
import time
from collections import defaultdict

from hypothesis import settings

# Examples per turn: enough that a turn is dominated by examples, not by the
# per-turn cost (fixtures, the database's reuse phase); few enough that a
# round over ~100 tests ends within a few minutes on a 2-core machine.
EXAMPLES_PER_TURN = 5
TURN_PROFILE = "kdist-budget-turn"


def interleave_by_clause(items, clause_of):
    """Items reordered as one test of each clause, then the next of each, ..."""
    by_clause = defaultdict(list)
    for item in items:
        by_clause[clause_of(item)].append(item)
    rounds = itertools.zip_longest(*by_clause.values())
    return [item for batch in rounds for item in batch if item is not None]


def limit_examples(item, max_examples):
    """This turn of `item` runs at most `max_examples` examples. @given tests
    keep the settings they were decorated with, so theirs are replaced; tests
    that build settings at run time (state machines) read the loaded profile."""
    test = getattr(item, "obj", None)
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if current is not None:
        test._hypothesis_internal_use_settings = settings(current, max_examples=max_examples)
    settings.register_profile(TURN_PROFILE, settings.default, max_examples=max_examples)
    settings.load_profile(TURN_PROFILE)


def ended_its_rotation(reports):
    """Whether a turn's reports mean the test should get no further turn."""
    return any(r.failed or r.skipped for r in reports)


def run_round_robin(session, budget_s, clause_of, profile, examples_per_turn=EXAMPLES_PER_TURN,
                    clock=time.monotonic):
    """Turns of session.items until budget_s has passed; returns {nodeid: turns}.
    `profile` is the Hypothesis profile to load back afterwards."""
    from _pytest.runner import runtestprotocol

    ends = clock() + budget_s
    rotation = interleave_by_clause(session.items, clause_of)
    turns = defaultdict(int)
    try:
        while rotation and clock() < ends:
            for item in list(rotation):
                if clock() >= ends or session.shouldstop or session.shouldfail:
                    return dict(turns)
                limit_examples(item, examples_per_turn)
                item._initrequest()  # fresh function-scoped fixtures for this turn
                reports = runtestprotocol(item, nextitem=None, log=True)
                turns[item.nodeid] += 1
                if ended_its_rotation(reports):
                    rotation.remove(item)
    finally:
        settings.load_profile(profile)
    return dict(turns)
