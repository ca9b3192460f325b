"""The driver side of a rank pool: spawn once, dispatch examples, survive faults.

The driver (pytest + Hypothesis) is never a rank, so a hung collective cannot
hang it: every dispatch has a deadline, and on expiry the pool is dumped and
killed. Ranks are forked from a forkserver that has already imported torch and
Keras, so replacing a dead pool costs a fork and a handshake.
"""

import atexit
import multiprocessing.connection as mpc
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from kdist_props.cluster.agreement import disagreeing_ranks
from kdist_props.cluster.errors import (BackendLimitation, ProtocolError, RankCrash, RankDesync, RankError,
                                        RankFailure, RankHang, backend_refusal, check_observation_types)
from kdist_props.environment import ConfigError
from kdist_props.specs import SHUTDOWN, RankUsage, RunReply, RunRequest

# After one rank raised, how long the others get to finish before the pool is
# declared stuck (they may be waiting in a collective the failed rank skipped).
ERROR_GRACE_S = 2.0
SHUTDOWN_GRACE_S = 5.0
LOG_TAIL_CHARS = 3000



class Zygote:
    """Driver-side handle on the fork server (see zygote.py)."""

    def __init__(self):
        from kdist_props.cluster import zygote

        self._protocol = zygote
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kdist_props.cluster.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "KDIST_DRIVER_PID": str(os.getpid())},
        )
        kind, _ = self._protocol.read_message(self.proc.stdout)
        assert kind == "ready", kind

    def call(self, command, arg):
        with self._lock:
            self._protocol.write_message(self.proc.stdin, (command, arg))
            return self._protocol.read_message(self.proc.stdout)[1]

    def fork(self, *rank_args):
        return self.call("fork", rank_args)

    def reap(self, pid):
        return self.call("reap", pid)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


class RankProcess:
    """A rank forked by the zygote: pid, a pollable sentinel, and its exit code."""

    def __init__(self, zygote, pid):
        self.zygote = zygote
        self.pid = pid
        self.sentinel = os.pidfd_open(pid)  # readable once the process has ended
        self.exitcode = None
        self._reaped = False

    def has_ended(self):
        return bool(select.select([self.sentinel], [], [], 0)[0])

    def reap(self):
        """Wait for the ended process and record its exit code (negative: signal)."""
        if not self._reaped:
            self.exitcode = self.zygote.reap(self.pid)
            self._reaped = True
            os.close(self.sentinel)
        return self.exitcode


class Pool:
    """`world_size` ranks in one process group, reused across examples."""

    def __init__(self, zygote, world_size, *, device="cpu", startup_timeout_s=120.0, pg_timeout_s=600.0):
        self.zygote = zygote
        self.world_size = world_size
        self.device = device
        self.startup_timeout_s = startup_timeout_s
        self.pg_timeout_s = pg_timeout_s
        self.procs = []
        self.conns = {}
        self.pids = []
        self.store_port = None
        self.broken = False
        self.closed = False
        self.startup_s = None
        self._seq = 0
        self._workdir = None
        self.usage = {}  # rank -> RankUsage after its last run
        self.fresh = None  # the most any rank held right after start-up
        self.max_threads = 0  # the most threads any rank held after a run

    # -- lifecycle -------------------------------------------------------

    def start(self):
        began = time.monotonic()
        self._workdir = tempfile.mkdtemp(prefix=f"kdist-w{self.world_size}-")
        address = os.path.join(self._workdir, "driver.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(address)
            server.listen(self.world_size)
            for rank in range(self.world_size):
                pid = self.zygote.fork(rank, self.world_size, address, self._workdir, self.device, self.pg_timeout_s)
                self.procs.append(RankProcess(self.zygote, pid))
            self._handshake(server, began + self.startup_timeout_s)
        except BaseException:
            self.kill()
            raise
        finally:
            server.close()
        self.startup_s = time.monotonic() - began
        return self

    def _handshake(self, server, deadline):
        unnamed = []
        while len(unnamed) < self.world_size:
            self._raise_if_any_died("during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RankHang(
                    f"pool of {self.world_size} did not start within {self.startup_timeout_s:.0f} s "
                    "(--kdist-startup-timeout)",
                    self._log_tails(),
                )
            if select.select([server], [], [], min(remaining, 0.2))[0]:
                sock, _ = server.accept()
                unnamed.append(mpc.Connection(sock.detach()))
        for conn in unnamed:
            kind, rank, pid = self._recv_by(conn, deadline)
            assert kind == "hello", kind
            self.conns[rank] = conn
        self.pids = [proc.pid for proc in self.procs]
        kind, port = self._recv_by(self.conns[0], deadline)
        assert kind == "store", kind
        self.store_port = port
        for rank in range(1, self.world_size):
            self.conns[rank].send_bytes(pickle.dumps(("store", port)))
        replies, dead, pending = self._collect(range(self.world_size), deadline)
        if dead or pending:
            raise RankCrash(
                f"pool of {self.world_size} failed to join its process group",
                self._log_tails(),
            )
        self.usage = {r: reply[2] for r, reply in replies.items()}
        self.fresh = self.leaked()
        self.max_threads = self.fresh.threads

    def _recv_by(self, conn, deadline):
        while not conn.poll(0.2):
            self._raise_if_any_died("during start-up")
            if time.monotonic() > deadline:
                raise RankHang(f"pool of {self.world_size} stalled during start-up", self._log_tails())
        return pickle.loads(conn.recv_bytes())

    def _raise_if_any_died(self, when):
        dead = {r: p.reap() for r, p in enumerate(self.procs) if p.has_ended()}
        if dead:
            raise RankCrash(f"rank(s) {sorted(dead)} died {when}", self._death_reports(dead))

    def close(self):
        """Shut the ranks down in order; whatever does not leave in time is made to."""
        if self.closed:
            return
        if not self.broken:
            for conn in self.conns.values():
                try:
                    conn.send_bytes(pickle.dumps(SHUTDOWN))
                except OSError:
                    pass
            self._wait_for_exits(time.monotonic() + SHUTDOWN_GRACE_S)
        self._after_shutdown()

    def _wait_for_exits(self, deadline):
        for proc in self.procs:
            select.select([proc.sentinel], [], [], max(0.0, deadline - time.monotonic()))

    def _after_shutdown(self):
        self.kill()  # reaps them all, and frees the connections and the work folder

    def kill(self):
        """SIGKILL every rank's process group, reap them, free everything."""
        self.broken = True
        for proc in self.procs:
            # Its own group (anything it started), then itself (if it died before setpgid).
            for kill in (os.killpg, os.kill):
                try:
                    kill(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for proc in self.procs:
            proc.reap()
        for conn in self.conns.values():
            conn.close()
        self.conns = {}
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.closed = True

    # -- dispatch --------------------------------------------------------

    def run(self, body, example, *, target, deadline_s, stateful=False, starts_state=False, agree=False,
            clean_target=False, deadline_name="--kdist-deadline"):
        """Run `body(ctx, example)` on every rank; return the observations by rank.

        stateful: keep the rank state (ctx.state, the target) of the previous
        run; starts_state: the first step of a stateful program, whose rank
        state starts empty; clean_target: a fresh target instance and Keras
        global state cleared first (the first example of a test).

        Raises RankError, RankHang, RankCrash, RankDesync or BackendLimitation,
        and ObservationTypeError (in the driver) when a body returns something
        other than its return annotation; after a hang or a crash this pool is
        dead and the manager gives the next example a new one.
        """
        if self.broken:
            raise RuntimeError("this pool is dead; ask the PoolManager for a fresh one")
        self._seq += 1
        request = RunRequest(self._seq, body, example, target, stateful and not starts_state, clean_target)
        # The sequence number travels outside the request, so that a rank that
        # cannot unpickle the request (a body it cannot import) still answers it.
        message = pickle.dumps((request.seq, pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)),
                               protocol=pickle.HIGHEST_PROTOCOL)
        try:
            observations = self._dispatch(message, request, deadline_s, deadline_name)
        except (RankError, RankDesync):
            raise  # every rank answered: the pool is still in step
        except BaseException:
            # A hang, a crash, Ctrl-C, a garbled reply: the ranks are in an unknown state.
            self.kill()
            raise
        check_observation_types(body, observations)
        if agree:
            differing = disagreeing_ranks(observations)
            if differing:
                raise RankDesync(
                    f"ranks disagree: rank(s) {differing} returned something other than rank 0",
                    {r: repr(obs) for r, obs in enumerate(observations)},
                )
        return observations

    @property
    def has_run(self):
        """Whether a body ran here yet: a fresh pool's first run meets cold caches."""
        return self._seq > 0

    def leaked(self):
        """The most threads and process groups any rank held after its last run."""
        return RankUsage(max(u.threads for u in self.usage.values()),
                         max(u.process_groups for u in self.usage.values()))

    def has_grown(self):
        """Whether some rank holds more threads or groups than right after start-up."""
        now = self.leaked()
        return now.threads > self.fresh.threads or now.process_groups > self.fresh.process_groups

    def holds_too_much(self, headroom):
        """Whether a next run that adds up to `headroom` threads could take some
        rank past the thread ceiling (thread_ceiling()), or a rank holds more
        groups than that many threads would pay for."""
        ceiling = thread_ceiling()
        if ceiling == NO_CEILING:
            return False
        now = self.leaked()
        return now.threads + headroom > ceiling or now.process_groups > ceiling // THREADS_PER_GLOO_GROUP

    def _dispatch(self, message, request, deadline_s, deadline_name):
        for conn in self.conns.values():
            try:
                conn.send_bytes(message)
            except OSError:
                pass  # a dead rank: its sentinel says so below
        replies, dead, pending = self._collect(range(self.world_size), time.monotonic() + deadline_s)
        wrong = {r: reply for r, reply in replies.items()
                 if not isinstance(reply, RunReply) or reply.seq != request.seq or reply.rank != r}
        if wrong:
            raise ProtocolError(
                f"rank(s) {sorted(wrong)} answered run {request.seq} with another message (protocol error)",
                {r: f"expected RunReply(seq={request.seq}, rank={r}, ...), got {reply!r:.500}"
                 for r, reply in wrong.items()},
            )
        for r, reply in replies.items():
            if reply.usage is not None:
                self.usage[r] = reply.usage
                self.max_threads = max(self.max_threads, reply.usage.threads)
        errors = {r: reply.value for r, reply in replies.items() if not reply.ok}
        if dead:
            details = self._death_reports(dead)
            details.update({r: tb for r, tb in errors.items()})
            details.update(self._stack_dumps(pending, note="still running, blocked:"))
            raise RankCrash(f"rank(s) {sorted(dead)} of {self.world_size} died during the example", details)
        if pending:
            details = self._stack_dumps(pending, note="no reply; stack at the deadline:")
            details.update(errors)
            if errors:
                self.kill()
                raise RankError(
                    f"rank(s) {sorted(errors)} raised and rank(s) {sorted(pending)} then stayed blocked "
                    f"(pool replaced)",
                    details,
                )
            raise RankHang(
                f"rank(s) {sorted(pending)} of {self.world_size} gave no reply within the "
                f"{deadline_s:g} s dispatch deadline ({deadline_name}); pool killed",
                details,
            )
        if errors:
            summary = f"rank(s) {sorted(errors)} of {self.world_size} raised"
            for refusal in backend_refusal(errors.values(), request.example) or ():
                if self._backend_refuses(refusal, request.target, deadline_s):
                    raise BackendLimitation(f"{summary}; the backend itself refuses {refusal.collective} of "
                                            f"{refusal.dtype} (harness probe)", errors)
            raise RankError(summary, errors)
        return [replies[r].value for r in range(self.world_size)]

    def _backend_refuses(self, refusal, target, deadline_s):
        """Run the same collective with the same dtype as a harness probe on
        this pool: the backend is at fault only if the probe fails the same way."""
        from kdist_props.properties import probes

        try:
            outcomes = self.run(probes.backend_collective, refusal, target=target, deadline_s=deadline_s,
                                stateful=True)
        except RankFailure:
            return False  # the probe itself broke (a dead pool is replaced for the next example): nothing proven
        return all(outcome is not None and refusal.same_as(outcome) for outcome in outcomes)

    def _collect(self, ranks, deadline):
        """Wait for one reply from each of `ranks` until `deadline` (cut short
        to a grace period once one of them has failed).

        Returns (replies, dead, pending): replies by rank, exit codes of ranks
        that died, and the ranks that neither replied nor died.
        """
        replies, dead, pending = {}, {}, set(ranks)
        failed = False
        while pending:
            if not failed and (dead or any(isinstance(reply, RunReply) and not reply.ok
                                           for reply in replies.values())):
                # The others may wait forever in a collective the failed rank skipped.
                failed = True
                deadline = min(deadline, time.monotonic() + ERROR_GRACE_S)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            waitables = {}
            for r in pending:
                waitables[self.conns[r]] = r
                waitables[self.procs[r].sentinel] = r
            for ready in mpc.wait(list(waitables), remaining):
                r = waitables[ready]
                if r not in pending:
                    continue
                conn = self.conns[r]
                try:
                    if conn.poll():
                        replies[r] = pickle.loads(conn.recv_bytes())
                        pending.discard(r)
                        continue
                except (EOFError, OSError):
                    pass
                dead[r] = self.procs[r].reap()
                pending.discard(r)
        return replies, dead, pending

    # -- diagnostics -----------------------------------------------------

    def _death_reports(self, dead):
        tails = self._log_tails()
        return {r: f"{describe_exit(code)}\n{tails.get(r, '')}" for r, code in dead.items()}

    def _log_tails(self):
        tails = {}
        for r in range(self.world_size):
            path = os.path.join(self._workdir or "", f"rank{r}.log")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text = f.read().decode(errors="replace")
                if text.strip():
                    tails[r] = "log tail:\n" + text[-LOG_TAIL_CHARS:]
        return tails

    def _stack_dumps(self, ranks, note):
        """SIGUSR1 each rank (faulthandler dumps every thread), then read the dumps."""
        paths = {r: os.path.join(self._workdir, f"rank{r}.stacks") for r in ranks}
        for r in ranks:
            try:
                os.kill(self.procs[r].pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        sizes = None
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = {r: os.path.getsize(p) if os.path.exists(p) else 0 for r, p in paths.items()}
            if all(now.values()) and now == sizes:
                break
            sizes = now
        dumps = {}
        for r, path in paths.items():
            with open(path, "rb") as f:
                dumps[r] = f"{note}\n" + (f.read().decode(errors="replace") or "(no dump)")
        return dumps


def describe_exit(code):
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code}"


# When a pool is replaced because its ranks pile up what targets leak. A fresh
# rank holds 5 threads and 1 process group (the world); gloo adds 3 threads per
# group it keeps (2 workers and a transport device whose loop wakes every 10 ms),
# and a leaky target (Keras master) adds groups with every mesh conversion.
# Wherever a run may start from scratch, the pool is replaced when the next run
# could take a rank past the thread ceiling: when a rank's threads plus the
# run's headroom (session.Runner: the most threads one run of the same test has
# added, a stateful program counting as one run) pass it, or when a rank holds
# more groups than the ceiling's threads would pay for (groups that cost no
# threads, or that a backend keeps elsewhere). Every test starts on ranks that
# hold nothing leaked, so its first run has the whole ceiling. A replacement
# costs a kill, a fork and a handshake (~100 ms at 4 ranks here) and a first
# example on cold caches (DTensor's sharding propagation cache is per process:
# ~165 ms more at 4 ranks); idle gloo threads cost less, up to a point (each
# group's transport loop wakes 100 times a second: with no ceiling at all, a
# rank of the mesh-per-variable mutant held ~2000 threads and the run took 6x
# the reference). `kdist-props leaks` sweeps the ceiling (README, "Leaky
# targets"): 512 was the fastest for both leaky mutants, 64 the slowest.
THREAD_CEILING = 512
THREADS_PER_GLOO_GROUP = 3
# The sweep's override: an integer, or `none` (never replace for leaks).
CEILING_VARIABLE = "KDIST_THREAD_CEILING"
NO_CEILING = "none"


def thread_ceiling():
    """The ceiling in force: CEILING_VARIABLE when set, else THREAD_CEILING."""
    text = os.environ.get(CEILING_VARIABLE, "").strip().lower()
    if not text:
        return THREAD_CEILING
    if text == NO_CEILING:
        return NO_CEILING
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{CEILING_VARIABLE}={text!r}: give a number of threads or {NO_CEILING!r}") from None


class PoolManager:
    """One live pool per world size for the whole session; replaces dead ones,
    and, when asked, ones whose ranks have piled up leaked groups and threads."""

    def __init__(self, *, device="cpu", startup_timeout_s=120.0):
        self.zygote = None
        self.device = device
        self.startup_timeout_s = startup_timeout_s
        self.pools = {}
        self.respawns = []  # start-up seconds of pools that replaced a dead one
        self.replacements = {}  # world size -> pools replaced because of what they held
        self.replacing_s = 0.0  # spent retiring pools (leaky or dead) and starting their replacements
        self.replaced_pools = 0
        self.first_starts_s = 0.0  # starting each world size's first pool
        self._retired_max_threads = 0
        thread_ceiling()  # a malformed override is a configuration error now, not mid-run
        atexit.register(self.close_all)

    def get(self, world_size, *, replace_if=None):
        """The live pool of `world_size`. `replace_if(pool)`, when given, may
        ask for a fresh one (the caller knows no rank state must survive)."""
        pool = self.pools.get(world_size)
        if pool is None:
            began = time.monotonic()
            pool = self._start(world_size)  # the first pool of the session starts the zygote too
            self.first_starts_s += time.monotonic() - began
            return pool
        if not pool.broken and (replace_if is None or not replace_if(pool)):
            return pool
        began = time.monotonic()
        if pool.broken:
            self._retire(pool)
            fresh = self._start(world_size)
            self.respawns.append(fresh.startup_s)
        else:
            self.replacements[world_size] = self.replacements.get(world_size, 0) + 1
            # Killed, not shut down in order: its ranks hold nothing anyone needs,
            # and destroying what a leaky target left costs more than the fork.
            self._retire(pool, orderly=False)
            fresh = self._start(world_size)
        self.replaced_pools += 1
        self.replacing_s += time.monotonic() - began
        return fresh

    def _start(self, world_size):
        if self.zygote is None:
            self.zygote = Zygote()
        pool = Pool(self.zygote, world_size, device=self.device, startup_timeout_s=self.startup_timeout_s).start()
        self.pools[world_size] = pool
        return pool

    def _retire(self, pool, orderly=True):
        self._retired_max_threads = max(self._retired_max_threads, pool.max_threads)
        if orderly:
            pool.close()
        else:
            pool.kill()

    @property
    def max_threads(self):
        """The most threads any rank of any pool of this manager held after a run."""
        return max([self._retired_max_threads, *(pool.max_threads for pool in self.pools.values())])

    def close_all(self):
        for pool in self.pools.values():
            self._retire(pool)
        self.pools = {}
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
