"""The rank side of a pool: join the process group, then run bodies until told to stop.

Runs in a process forked from the forkserver, which has already imported torch
and Keras, so a fresh rank costs a fork and a process-group handshake, not a
multi-second import. Knows nothing of Hypothesis: it runs `body(ctx, example)`
and sends back what the body returns, or the traceback.
"""

import ctypes
import datetime
import faulthandler
import gc
import os
import pickle
import signal
import sys
import traceback

import torch
import torch.distributed as dist

from kdist_props import targets
from kdist_props.specs import SHUTDOWN, RankUsage, RunReply

_PR_SET_PDEATHSIG = 1


class RankContext:
    """What a rank-side body may use: its coordinates, the target, and state."""

    def __init__(self, rank, world_size, device):
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.state = {}  # survives across examples only when the driver asks
        self._target_name = None
        self.target = None

    def select_target(self, name):
        if name != self._target_name:
            self.target = targets.load(name)
            self._target_name = name

    def fresh_target(self):
        """A new instance of the current target: no cache left from earlier examples."""
        self.target = targets.load(self._target_name, fresh=True)

    def clean_target(self):
        """A fresh target and a Keras with no global state (the start of a test):
        Keras keeps caches in keras.src.backend.common.global_state, which
        clear_session replaces wholesale. The process groups are torch's and
        survive it."""
        import keras

        keras.backend.clear_session()
        if self._target_name is not None:
            self.fresh_target()

    def reset(self):
        """Forget per-example state: the body's state and Keras' global distribution."""
        self.state.clear()
        if self.target is not None:
            self.target.reset()


def die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent exits.

    Ranks die with the zygote, the zygote with the driver, however the driver
    goes (Ctrl-C, SIGKILL, os._exit from pytest-timeout): no rank outlives it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def rank_main(rank, world_size, address, workdir, device, pg_timeout_s, parent_pid):
    die_with_parent(parent_pid)
    # Own process group: a terminal Ctrl-C reaches the driver, which then shuts
    # the ranks down in order instead of every rank printing a traceback.
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = open(os.path.join(workdir, f"rank{rank}.log"), "ab", buffering=0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    dump = open(os.path.join(workdir, f"rank{rank}.stacks"), "wb", buffering=0)
    faulthandler.enable(file=log, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True)
    torch.set_num_threads(1)

    from multiprocessing.connection import Client

    conn = Client(address, family="AF_UNIX")
    send(conn, ("hello", rank, os.getpid()))
    store = join_store(conn, rank, world_size)
    backend = "gloo"
    if device == "cuda":
        torch.cuda.set_device(rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=pg_timeout_s),
    )
    # Everything made so far lives for good: keep the collector off it, so that
    # collections during examples (and gc.collect in bodies) stay cheap. The
    # zygote already collected and froze the imports; this adds the process group.
    gc.freeze()
    send(conn, ("ready", rank, usage()))
    serve(conn, RankContext(rank, world_size, device))


def join_store(conn, rank, world_size):
    """Rendezvous on a TCPStore that rank 0 opens on a port the kernel picks."""
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
        send(conn, ("store", store.port))
        return store
    kind, port = recv(conn)
    assert kind == "store", kind
    return dist.TCPStore("127.0.0.1", port, world_size, is_master=False)


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
            ctx.select_target(request.target)
            if request.clean_target:
                ctx.clean_target()
            if not request.stateful:
                ctx.reset()  # before, not after: a stateful run may have stopped halfway
            reply = RunReply(seq, ctx.rank, True, request.body(ctx, request.example), usage())
        except BaseException:  # a body may even raise SystemExit; report it
            reply = RunReply(seq, ctx.rank, False, traceback.format_exc(), usage())
        try:
            send(conn, reply)
        except Exception:  # an unpicklable observation is the body's fault
            send(conn, RunReply(seq, ctx.rank, False, "observation could not be sent:\n" + traceback.format_exc(),
                                usage()))


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


def send(conn, obj):
    # Plain pickle, not multiprocessing's: torch registers reducers there that
    # move tensors through shared memory; we want bytes, whatever the dtype.
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn):
    return pickle.loads(conn.recv_bytes())
