"""Running requests on a pool's connected ranks: send one run to every rank,
collect the replies under a deadline, and turn what went wrong into a typed
rank failure (cluster/errors.py)."""

import multiprocessing.connection as mpc
import pickle
import time

from kdist_props.cluster.agreement import require_agreement
from kdist_props.cluster.errors import (ProtocolError, RankCrash, RankDesync, RankError, RankHang,
                                        check_observation_types)
from kdist_props.cluster.messages import RankUsage, RunReply, RunRequest, recv

# After one rank raised, how long the others get to finish before the pool is
# declared stuck (they may be waiting in a collective the failed rank skipped).
ERROR_GRACE_S = 2.0


class Dispatcher:
    """The run loop of a pool (pool.Pool, remote.RemotePool), and what the
    ranks said they hold after their last run: it needs the pool's
    `world_size`, `conns` and `procs` by rank, `usage`, `fresh`,
    `max_threads`, `broken`, `kill()`, `diagnostics` and `_seq` (runs sent)."""

    def run(self, body, example, *, target=None, deadline_s, stateful=False, starts_state=False, agree=False,
            clean_target=False, setup=None, deadline_name="--kdist-deadline"):
        """Run `setup(ctx, request)` (when given) and `body(ctx, example)` on
        every rank; return the observations by rank.

        stateful: keep the rank state (ctx.state, what setup keeps) of the
        previous run; starts_state: the first step of a stateful program, whose
        rank state starts empty; target and clean_target travel to setup (the
        layer above prepares the rank's target there).

        Raises RankError, RankHang, RankCrash or RankDesync, and
        ObservationTypeError (in the driver) when a body returns something
        other than its return annotation; after a hang or a crash this pool is
        dead and the manager gives the next example a new one.
        """
        if self.broken:
            raise RuntimeError("this pool is dead; ask the PoolManager for a fresh one")
        self._seq += 1
        request = RunRequest(self._seq, body, example, target, stateful and not starts_state, clean_target, setup)
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
            require_agreement(observations)
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
        raised = {r: reply.value for r, reply in replies.items() if not reply.ok}  # RaisedOutcome by rank
        tracebacks = {r: outcome.traceback for r, outcome in raised.items()}
        if dead:
            details = self.diagnostics.death_reports(dead)
            details.update(tracebacks)
            details.update(self.diagnostics.stack_dumps(pending, note="still running, blocked:"))
            raise RankCrash(f"rank(s) {sorted(dead)} of {self.world_size} died during the example", details,
                            outcomes=raised, exit_codes=dead)
        if pending:
            details = self.diagnostics.stack_dumps(pending, note="no reply; stack at the deadline:")
            details.update(tracebacks)
            if raised:
                self.kill()
                raise RankError(
                    f"rank(s) {sorted(raised)} raised and rank(s) {sorted(pending)} then stayed blocked "
                    f"(pool replaced)",
                    details, outcomes=raised,
                )
            raise RankHang(
                f"rank(s) {sorted(pending)} of {self.world_size} gave no reply within the "
                f"{deadline_s:g} s dispatch deadline ({deadline_name}); pool killed",
                details,
            )
        if raised:
            raise RankError.of(raised, self.world_size)
        return [replies[r].value for r in range(self.world_size)]

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
                        replies[r] = recv(conn)
                        pending.discard(r)
                        continue
                except (EOFError, OSError):
                    pass
                dead[r] = self.procs[r].reap()
                pending.discard(r)
        return replies, dead, pending
