"""Bodies that exercise the harness itself: no-ops, a small DTensor workload,
and injected faults (raise, hang, die, disagree)."""

import ctypes
import os
import signal
import time

import torch
import torch.distributed as dist

from kdist_props.contract.specs import CollectiveProbe, FaultExample, RankIdentity, SizeExample


def noop(ctx, example) -> None:
    return None


def rank_identity(ctx, example) -> RankIdentity:
    return RankIdentity(ctx.rank, ctx.world_size, os.getpid())


def small_dtensor_matmul(ctx, example: SizeExample) -> torch.Tensor:
    """distribute + matmul + full_tensor: the unit of work of a typical example."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    mesh = ctx.state.get("mesh")
    if mesh is None:
        mesh = init_device_mesh("cpu", (ctx.world_size,))
        ctx.state["mesh"] = mesh
    n = example.n
    a = torch.arange(n * n, dtype=torch.float32).reshape(n, n)
    da = distribute_tensor(a, mesh, [Shard(0)])
    db = distribute_tensor(a.T.contiguous(), mesh, [Replicate()])
    return (da @ db).full_tensor()


def remember(ctx, example) -> int:
    """Stateful probe: counts calls in ctx.state."""
    ctx.state["calls"] = ctx.state.get("calls", 0) + 1
    return ctx.state["calls"]


def fault(ctx, example: FaultExample) -> int:
    """Misbehave on `example.rank` only, as `example.kind` says."""
    if ctx.rank != example.rank:
        if example.kind in ("hang-in-collective", "raise-before-collective"):
            dist.barrier()  # the faulty rank never joins
        return example.value
    kind = example.kind
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
        return example.value + 1
    raise AssertionError(f"unknown fault {kind!r}")


def backend_collective(ctx, probe: CollectiveProbe):
    """The harness probe of a backend refusal: `probe.collective` on a small
    tensor of `probe.dtype`, straight on the world group (no target involved).
    Returns the first line of the message it raised, or None when the backend took it."""
    dtype = getattr(torch, probe.dtype)
    world = ctx.world_size
    value = torch.zeros(world, dtype=dtype)
    run = {
        "broadcast": lambda: dist.broadcast(value, src=0),
        "all_reduce": lambda: dist.all_reduce(value),
        "reduce": lambda: dist.reduce(value, dst=0),
        "all_gather": lambda: dist.all_gather([torch.empty_like(value) for _ in range(world)], value),
        "all_gather_into_tensor": lambda: dist.all_gather_into_tensor(torch.empty(world * world, dtype=dtype), value),
        "gather": lambda: dist.gather(value, [torch.empty_like(value) for _ in range(world)] if ctx.rank == 0
                                      else None, dst=0),
        "scatter": lambda: dist.scatter(value, [torch.empty_like(value) for _ in range(world)] if ctx.rank == 0
                                        else None, src=0),
        "reduce_scatter": lambda: dist.reduce_scatter(torch.empty(1, dtype=dtype),
                                                      [torch.empty(1, dtype=dtype) for _ in range(world)]),
        "reduce_scatter_tensor": lambda: dist.reduce_scatter_tensor(torch.empty(1, dtype=dtype), value),
        "all_to_all_single": lambda: dist.all_to_all_single(torch.empty_like(value), value),
        "all_to_all": lambda: dist.all_to_all([torch.empty(1, dtype=dtype) for _ in range(world)],
                                              list(value.split(1))),
    }[probe.collective]
    try:
        run()
    except Exception as error:
        return (str(error).splitlines() or [""])[0]
    return None
