"""One rank bring-up for every kind of rank: say Hello to the driver, join the
process group on a rendezvous store that rank 0 opens, report Ready, serve.

Local ranks (forked by zygote.py, driver on a Unix socket) and torchrun ranks
(remote_rank.py, driver over TCP) differ only in where rank 0's store listens
(`store_host`: the loopback for a local pool, the address that reaches the
driver for a torchrun job) and in what they set up before saying Ready (a
torchrun rank opens its control connection there).
"""

import datetime
import faulthandler
import gc
import importlib
import os
import signal
import uuid
from multiprocessing.connection import Client

import torch
import torch.distributed as dist

from kdist_props.cluster.messages import Hello, Ready, StoreAddress, recv, send
from kdist_props.cluster.rank import RankContext, die_with_parent, serve, usage

# The process-group backend of each device: gloo on CPU; NCCL for CUDA tensors,
# with gloo beside it for the CPU tensors that bodies also move.
BACKENDS = {"cpu": "gloo", "cuda": "cpu:gloo,cuda:nccl"}
LOOPBACK = "127.0.0.1"


def bring_up(conn, rank, world_size, *, store_host, host, restart_count=0, cuda_device=None,
             before_ready=None):
    """Join the driver on `conn` and the process group, then serve until told
    to stop. `store_host(conn)` is where rank 0 opens the rendezvous store;
    `before_ready(group)` runs once in the group (the group token: the same
    on every rank of one start)."""
    send(conn, Hello(rank, world_size, host, os.getpid(), restart_count))
    welcome = recv(conn)
    for name in welcome.preload:
        importlib.import_module(name)
    timeout = datetime.timedelta(seconds=welcome.pg_timeout_s)
    if rank == 0:
        store = dist.TCPStore(store_host(conn), 0, world_size, is_master=True, wait_for_workers=False,
                              timeout=timeout)
        send(conn, StoreAddress(store.host, store.port))
    else:
        store = dist.TCPStore(welcome.store_host, welcome.store_port, world_size, is_master=False, timeout=timeout)
    if welcome.device == "cuda":
        torch.cuda.set_device(rank if cuda_device is None else cuda_device)
    dist.init_process_group(BACKENDS[welcome.device], store=store, rank=rank, world_size=world_size,
                            timeout=timeout)
    group = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(group, src=0)
    if before_ready is not None:
        before_ready(group[0])
    # Everything made so far lives for good: keep the collector off it, so that
    # collections during examples (and gc.collect in bodies) stay cheap.
    gc.collect()
    gc.freeze()
    send(conn, Ready(group[0], usage()))
    serve(conn, RankContext(rank, world_size, welcome.device))


def loopback(conn):
    return LOOPBACK


def local_rank(rank, world_size, address, workdir, parent_pid):
    """A rank forked by the zygote: its own log, stack dumps on SIGUSR1, and
    the driver on the Unix socket `address`."""
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
    conn = Client(address, family="AF_UNIX")
    bring_up(conn, rank, world_size, store_host=loopback, host=LOOPBACK)
