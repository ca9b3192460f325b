"""What a body raised, described on the rank, where `isinstance` works.

A rank never sends a bare traceback: it sends a RaisedOutcome whose fields
the driver reads as they are (the exception's type, its message, the suite's
own verdict when the exception is one, the collectives a backend refusal
came from). Nothing on the driver side parses traceback text to decide what
happened; the traceback travels only to be shown.
"""

import traceback

from kdist_props.cluster.messages import RaisedOutcome


class SuiteVerdict(Exception):
    """An exception that is the suite's verdict on a run, not a failure of
    what it ran: subclasses name the status (targets.base: Unsupported,
    Incompatible). The rank sends `status` along as RaisedOutcome.verdict."""

    status = None


# What a communication backend says when it refuses a dtype (gloo: "Invalid
# scalar type"). Only a hint: the driver proves it with a harness probe of the
# same collective and dtype (harness/limitations.py).
REFUSAL_MARKERS = ("Invalid scalar type", "Unsupported dtype", "not supported for gloo")
# The collective(s) a torch.distributed function may have issued, by its name:
# torch.distributed functions, functional collectives and their c10d ops.
COLLECTIVES = {
    "all_gather_into_tensor": ("all_gather_into_tensor",), "all_gather_tensor": ("all_gather_into_tensor",),
    "reduce_scatter_tensor": ("reduce_scatter_tensor",), "all_gather": ("all_gather",),
    "all_reduce": ("all_reduce",), "reduce_scatter": ("reduce_scatter",), "broadcast": ("broadcast",),
    "scatter": ("scatter",), "gather": ("gather",), "all_to_all_single": ("all_to_all_single",),
    "all_to_all": ("all_to_all",), "reduce": ("reduce",),
    # DTensor issues functional collectives and waits later, so only its own API
    # frames say which: gathering a shard (all_gather) or summing a partial (all_reduce).
    "full_tensor": ("all_gather_into_tensor", "all_reduce"),
    "redistribute": ("all_gather_into_tensor", "all_reduce"),
}


def raised(error, *, context=""):
    """The RaisedOutcome of `error`, caught on a rank. `context` goes before
    the traceback (e.g. what the rank was doing when it raised)."""
    return RaisedOutcome(
        type=qualified_name(type(error)),
        message=str(error),
        traceback=context + "".join(traceback.format_exception(error)),
        verdict=error.status if isinstance(error, SuiteVerdict) else None,
        refused=refusal(error),
    )


def qualified_name(cls):
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def chain(error):
    """`error` and the exceptions it was raised from or while handling, newest first."""
    seen = []
    while error is not None and all(error is not s for s in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def refusal(error):
    """(message, collectives) when `error` looks like a backend refusing a
    dtype inside a torch.distributed collective, else None: the message of
    the exception with a refusal marker, and the collectives that the
    innermost torch.distributed frame of the chain may have issued."""
    errors = chain(error)
    message = next((str(e).splitlines()[0] for e in errors
                    if str(e) and any(marker in str(e) for marker in REFUSAL_MARKERS)), None)
    if message is None:
        return None
    for e in errors:
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if "/torch/distributed/" in frame.filename and frame.name in COLLECTIVES:
                return message, COLLECTIVES[frame.name]
    return None
