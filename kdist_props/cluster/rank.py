"""The rank side of a pool: run bodies until told to stop.

Knows nothing of Hypothesis, of Keras or of targets: for each RunRequest it
runs the request's `setup` (the layer above prepares the rank there, e.g. its
target) and `body(ctx, example)`, and sends back what the body returns, or a
RaisedOutcome that describes what it raised (cluster/outcome.py). How a rank
comes up is bringup.py's.
"""

import ctypes
import os
import pickle
import signal
import sys

import torch.distributed as dist

from kdist_props.cluster.messages import SHUTDOWN, RankUsage, RunReply, send
from kdist_props.cluster.outcome import raised

_PR_SET_PDEATHSIG = 1


class RankContext:
    """What a rank-side body may use: its coordinates, state and target.
    `state` is cleared before every run that is not a later step of a
    stateful program; `target` is whatever a request's setup put there (the
    cluster never looks at it)."""

    def __init__(self, rank, world_size, device):
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.state = {}
        self.target = None


def die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent exits.

    Ranks die with the zygote, the zygote with the driver, however the driver
    goes (Ctrl-C, SIGKILL, os._exit from pytest-timeout): no rank outlives it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def serve(conn, ctx):
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:  # the driver is gone
            shutdown(0)
        envelope = pickle.loads(data)  # (seq, pickled RunRequest), or SHUTDOWN
        if envelope == SHUTDOWN:
            shutdown(0)
        seq, payload = envelope
        try:
            request = pickle.loads(payload)  # may name a body this rank cannot import
        except BaseException as error:
            reply = RunReply(seq, ctx.rank, False, raised(error), usage())
        else:
            reply = execute(ctx, request)
        try:
            send(conn, reply)
        except Exception as error:  # an unpicklable observation is the body's fault
            send(conn, RunReply(seq, ctx.rank, False, raised(error, context="observation could not be sent:\n"),
                                usage()))


def execute(ctx, request):
    """Run one request on this rank: its setup, then its body. The RunReply
    holds the observation, or a RaisedOutcome of what was raised."""
    try:
        if not request.stateful:
            ctx.state.clear()  # before, not after: a stateful run may have stopped halfway
        if request.setup is not None:
            request.setup(ctx, request)
        return RunReply(request.seq, ctx.rank, True, request.body(ctx, request.example), usage())
    except BaseException as error:  # a body may even raise SystemExit; report it
        return RunReply(request.seq, ctx.rank, False, raised(error), usage())


def usage():
    """Threads and process groups this rank holds now. Groups are never freed
    by the examples that leak them, so the count after a run is also the most
    the run held."""
    # OS threads, not threading.active_count(): gloo's threads are C++ threads.
    threads = len(os.listdir("/proc/self/task"))
    # torch has no public count of live process groups; pg_map is the registry.
    return RankUsage(threads, len(dist.distributed_c10d._world.pg_map))


def shutdown(code):
    """Leave deliberately: a normal interpreter exit after gloo work sometimes
    aborts in a C++ destructor ("terminate called without an active exception")."""
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        sys.stdout.flush()
        os._exit(code)
