"""Backend limitations, proven: an error counts as the communication backend
refusing a dtype (gloo and int16), not as the target's failure, only when the
rank's own RaisedOutcome says it came from a torch.distributed collective
with a refusal message, and a harness probe of the same collective with the
same dtype, on the same pool, fails the same way.
"""

import dataclasses

from kdist_props.cluster import RankError, RankFailure
from kdist_props.properties import probes
from kdist_props.contract.specs import CollectiveProbe


class BackendLimitation(RankError):
    """The communication backend, not the target, refused the operation, as a
    harness probe of the same collective with the same dtype proved on the
    same pool. Reported apart from target bugs."""


def prove(pool, error, example, *, deadline_s):
    """A BackendLimitation for `error` when the backend itself refuses what
    it ran into, else None (the error is the target's)."""
    dtypes = example_dtypes(example)
    for outcome in (error.outcomes[r] for r in sorted(error.outcomes)):
        if outcome.refused is None:
            continue
        message, collectives = outcome.refused
        for probe in (CollectiveProbe(c, d) for c in collectives for d in dtypes):
            if _probe_refuses(pool, probe, message, deadline_s):
                return BackendLimitation(f"{error.summary}; the backend itself refuses {probe.collective} of "
                                         f"{probe.dtype} (harness probe)", error.details, outcomes=error.outcomes)
    return None


def _probe_refuses(pool, probe, message, deadline_s):
    try:
        outcomes = pool.run(probes.backend_collective, probe, deadline_s=deadline_s, stateful=True)
    except RankFailure:
        return False  # the probe itself broke (a dead pool is replaced for the next example): nothing proven
    return all(outcome is not None and outcome.endswith(message) for outcome in outcomes)


def example_dtypes(example):
    """Every dtype an example names: `dtype` fields of its (nested) dataclasses, dicts and tuples."""
    found = []

    def walk(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(f.name, getattr(value, f.name))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(key, item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    def visit(name, value):
        if name == "dtype" and isinstance(value, str):
            if value not in found:
                found.append(value)
        else:
            walk(value)

    walk(example)
    return found
