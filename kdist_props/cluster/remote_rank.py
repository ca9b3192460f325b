"""A rank launched by torchrun that joins a kdist-props driver over TCP.

    KDIST_AUTHKEY=<secret> torchrun --nnodes=N --nproc-per-node=M --max-restarts=R \\
        --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT \\
        -m kdist_props.cluster.remote_rank --driver DRIVER_HOST:DRIVER_PORT

Each worker dials the driver (the pytest process, see remote.py), joins a
process group of torchrun's RANK and WORLD_SIZE (on a store rank 0 opens, see
its rendezvous store, bringup.py), and then serves examples with the local
pool's loop (rank.serve). A second connection carries what the driver must be able to do
to a rank whose main thread is stuck in a collective: dump every thread's
stack, and make it exit.

Exit codes tell torchrun's agent what to do next:
  0         the driver has closed the session (or is gone): the agent finishes;
  REPLACED  the driver replaced this pool after a hang or a crash: the agent
            restarts the workers (--max-restarts), which dial in again as a
            fresh pool;
  NO_DRIVER no driver answered, or it refused our key: see the message.
"""

import argparse
import faulthandler
import multiprocessing.connection as mpc
import os
import socket
import struct
import sys
import tempfile
import threading
import time

import torch

from kdist_props.cluster.bringup import bring_up
from kdist_props.cluster.messages import Control, DumpStacks, Exit, Stacks, recv, send
from kdist_props.cluster.rank import die_with_parent

REPLACED = 75  # EX_TEMPFAIL: "try again", which torchrun does by restarting the workers
NO_DRIVER = 2
AUTHKEY_VARIABLE = "KDIST_AUTHKEY"
DIAL_RETRY_S = 0.5


def authkey_from_environment():
    key = os.environ.get(AUTHKEY_VARIABLE, "")
    if not key:
        raise KeyError(f"{AUTHKEY_VARIABLE} is not set: give the driver and every torchrun node the same secret "
                       f"(e.g. export {AUTHKEY_VARIABLE}=$(python -c 'import secrets; print(secrets.token_hex(16))'))")
    return key.encode()


def authenticate(sock, authkey, *, server, timeout_s=None):
    """A multiprocessing Connection over `sock`, after the mutual HMAC challenge
    of multiprocessing.connection (Listener/Client with an authkey): nothing is
    unpickled from a peer that does not hold the key. Raises
    mpc.AuthenticationError, or OSError when the peer stalls past `timeout_s`."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # request/reply: no Nagle delays
    sock.setblocking(True)  # Connection reads the descriptor directly
    receive_timeout(sock, timeout_s)
    conn = mpc.Connection(sock.detach())
    try:
        if server:
            mpc.deliver_challenge(conn, authkey)
            mpc.answer_challenge(conn, authkey)
        else:
            mpc.answer_challenge(conn, authkey)
            mpc.deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def receive_timeout(sock, timeout_s):
    # SO_RCVTIMEO, not settimeout: a Connection needs a blocking descriptor.
    seconds = timeout_s or 0
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", int(seconds), int((seconds % 1) * 1e6)))


# -- the rank ----------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kdist_props.cluster.remote_rank")
    parser.add_argument("--driver", required=True, metavar="HOST:PORT",
                        help="where the kdist-props driver (pytest --kdist-torchrun=HOST:PORT) listens")
    parser.add_argument("--dial-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long a first start waits for the driver to listen (default 300)")
    args = parser.parse_args(argv)
    die_with_parent(os.getppid())  # torchrun's agent: no worker outlives it
    faulthandler.enable(all_threads=True)  # a crash prints every stack into torchrun's log
    torch.set_num_threads(1)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    try:
        authkey = authkey_from_environment()
    except KeyError as error:
        leave(NO_DRIVER, error.args[0])
    address = parse_address(args.driver)
    conn = dial(address, authkey, restart_count, time.monotonic() + args.dial_timeout)

    def open_control(group):
        control = dial(address, authkey, restart_count, time.monotonic() + args.dial_timeout)
        send(control, Control(group, rank))
        threading.Thread(target=watch, args=(control,), name="kdist-watchdog", daemon=True).start()

    # Rank 0's store listens on the address this host reaches the driver from.
    # Not torchrun's store (env://): torch 2.13's agents share one store server
    # across restarts without a per-attempt prefix, so restarted workers would
    # read the previous start's gloo addresses ("Gloo connectFullMesh failed ...
    # Connection refused") and the pool would never form again.
    bring_up(conn, rank, world_size, store_host=conn_local_host, host=socket.gethostname(),
             restart_count=restart_count, cuda_device=int(os.environ.get("LOCAL_RANK", rank)),
             before_ready=open_control)


def conn_local_host(conn):
    with socket.socket(fileno=os.dup(conn.fileno())) as view:
        return view.getsockname()[0]


def dial(address, authkey, restart_count, deadline):
    """An authenticated connection to the driver. A refused connection on a
    restart means the driver has closed the session since this node's last
    workers reached it: leave with 0, so that torchrun's agent finishes."""
    while True:
        try:
            sock = socket.create_connection(address)
            return authenticate(sock, authkey, server=False)
        except mpc.AuthenticationError:
            leave(NO_DRIVER, f"the driver at {format_address(address)} refused this node's {AUTHKEY_VARIABLE}")
        except (ConnectionError, EOFError):
            if restart_count > 0:
                leave(0, f"the driver at {format_address(address)} has closed the session")
            if time.monotonic() > deadline:
                leave(NO_DRIVER, f"no kdist-props driver listens at {format_address(address)} (--dial-timeout)")
            time.sleep(DIAL_RETRY_S)


def watch(control):
    """The watchdog thread: runs while the main thread may be blocked in a
    collective (gloo and NCCL waits release the GIL)."""
    while True:
        try:
            message = recv(control)
        except (EOFError, OSError):
            os._exit(0)  # the driver is gone: nothing more to serve
        if isinstance(message, DumpStacks):
            try:
                send(control, Stacks(all_stacks()))
            except OSError:
                os._exit(0)  # the driver is gone
        elif isinstance(message, Exit):
            sys.stderr.flush()
            os._exit(message.code)  # no destructors: see rank.shutdown


def all_stacks():
    with tempfile.TemporaryFile() as dump:
        faulthandler.dump_traceback(file=dump, all_threads=True)
        dump.seek(0)
        return dump.read().decode(errors="replace")


def leave(code, why):
    print(f"kdist-props rank {os.environ.get('RANK')}: {why}; exiting with {code}", file=sys.stderr, flush=True)
    os._exit(code)


def parse_address(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--driver={text!r}: give HOST:PORT")
    return host.strip("[]"), int(port)


def format_address(address):
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if __name__ == "__main__":
    # Run from the module under its own name, so that the handshake classes
    # pickle as kdist_props.cluster.remote_rank.*, which the driver can load.
    from kdist_props.cluster import remote_rank

    remote_rank.main()
