"""Bodies that exercise the harness itself: no-ops, a small DTensor workload,
and injected faults (raise, hang, die, disagree)."""

import ctypes
import os
import signal
import time

import torch
import torch.distributed as dist


def noop(ctx, example):
    return None


def rank_identity(ctx, example):
    return {"rank": ctx.rank, "world_size": ctx.world_size, "pid": os.getpid()}


def small_dtensor_matmul(ctx, example):
    """distribute + matmul + full_tensor: the unit of work of a typical example."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    mesh = ctx.state.get("mesh")
    if mesh is None:
        mesh = init_device_mesh("cpu", (ctx.world_size,))
        ctx.state["mesh"] = mesh
    n = example["n"]
    a = torch.arange(n * n, dtype=torch.float32).reshape(n, n)
    da = distribute_tensor(a, mesh, [Shard(0)])
    db = distribute_tensor(a.T.contiguous(), mesh, [Replicate()])
    return (da @ db).full_tensor()


def remember(ctx, example):
    """Stateful probe: counts calls in ctx.state."""
    ctx.state["calls"] = ctx.state.get("calls", 0) + 1
    return ctx.state["calls"]


def fault(ctx, example):
    """Misbehave on `example['rank']` only, as `example['kind']` says."""
    if ctx.rank != example["rank"]:
        if example["kind"] in ("hang-in-collective", "raise-before-collective"):
            dist.barrier()  # the faulty rank never joins
        return example.get("value", 0)
    kind = example["kind"]
    if kind in ("raise", "raise-before-collective"):
        raise ValueError(f"injected failure on rank {ctx.rank}")
    if kind == "hang-in-collective":
        time.sleep(3600)
    if kind == "hang":
        while True:
            time.sleep(0.1)
    if kind == "exit":
        os._exit(3)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "desync":
        return example.get("value", 0) + 1
    raise AssertionError(f"unknown fault {kind!r}")
