"""A fork server: imports torch and Keras once, then forks ranks on request.

Started by the driver as `python -m kdist_props.cluster.zygote`; talks over its
stdin/stdout with length-prefixed pickles. It is the parent of every rank, so
it also reaps them and reports how they ended. It dies with the driver
(PDEATHSIG), and every rank dies with it, so nothing outlives the session.

Commands: ("fork", args) -> ("forked", pid); ("reap", pid) -> ("reaped", code)
where code is an exit status, negative for a signal.
"""

import gc
import importlib
import os
import pickle
import signal
import struct
import sys

# Everything a rank imports to run a body on a target, imported once here: a
# pool replaced because a target leaked (cluster/pool.py) then starts warm.
PRELOAD = ["torch", "torch.distributed", "torch.distributed.tensor", "keras", "kdist_props.cluster.rank",
           "kdist_props.targets.keras", "kdist_props.targets.mutants", "kdist_props.properties.tier_a",
           "kdist_props.properties.tier_b", "kdist_props.properties.training", "kdist_props.properties.meshes"]


def read_message(stream):
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError
    (size,) = struct.unpack("!I", header)
    return pickle.loads(stream.read(size))


def write_message(stream, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def main():
    from kdist_props.cluster.rank import die_with_parent, rank_main

    die_with_parent(int(os.environ["KDIST_DRIVER_PID"]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when we stop
    for name in PRELOAD:
        importlib.import_module(name)
    # Collect once here, not in every rank, and freeze the imports: forked ranks
    # then never scan (nor copy-on-write touch) them in a collection.
    gc.collect()
    gc.freeze()
    commands, replies = sys.stdin.buffer, sys.stdout.buffer
    write_message(replies, ("ready", os.getpid()))
    while True:
        try:
            command, arg = read_message(commands)
        except EOFError:
            os._exit(0)  # the driver is gone; PDEATHSIG takes the ranks with us
        if command == "fork":
            zygote_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(0)
                os.close(1)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                try:
                    rank_main(*arg, zygote_pid)
                finally:
                    os._exit(1)
            write_message(replies, ("forked", pid))
        elif command == "reap":
            try:
                _, status = os.waitpid(arg, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = None
            write_message(replies, ("reaped", code))


if __name__ == "__main__":
    main()
