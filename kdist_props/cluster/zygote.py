"""A fork server: imports torch and Keras once, then forks ranks on request.

Started by the driver as `python -m kdist_props.cluster.zygote`; talks over its
stdin/stdout with the messages of messages.py (Fork -> Forked, Reap -> Reaped).
It is the parent of every rank, so it also reaps them and reports how they
ended. It dies with the driver (PDEATHSIG), and every rank dies with it, so
nothing outlives the session.
"""

import gc
import importlib
import multiprocessing.connection as mpc
import os
import signal
import sys

from kdist_props.cluster.messages import Fork, Forked, Reap, Reaped, ZygoteReady, recv, send

def main():
    from kdist_props.cluster.bringup import local_rank
    from kdist_props.cluster.rank import die_with_parent

    die_with_parent(int(os.environ["KDIST_DRIVER_PID"]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when we stop
    # What a rank imports to run bodies on a target (the driver names it), imported
    # once here: a pool replaced because a target leaked then starts warm.
    for name in sys.argv[1:]:
        importlib.import_module(name)
    # Collect once here, not in every rank, and freeze the imports: forked ranks
    # then never scan (nor copy-on-write touch) them in a collection.
    gc.collect()
    gc.freeze()
    commands, replies = mpc.Connection(0, writable=False), mpc.Connection(1, readable=False)
    send(replies, ZygoteReady(os.getpid()))
    while True:
        try:
            command = recv(commands)
        except EOFError:
            os._exit(0)  # the driver is gone; PDEATHSIG takes the ranks with us
        if isinstance(command, Fork):
            zygote_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(0)
                os.close(1)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                try:
                    local_rank(*command.args, zygote_pid)
                finally:
                    os._exit(1)
            send(replies, Forked(pid))
        elif isinstance(command, Reap):
            try:
                _, status = os.waitpid(command.pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = None
            send(replies, Reaped(code))


if __name__ == "__main__":
    main()
