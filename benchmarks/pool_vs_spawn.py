"""Persistent rank pool vs. fresh processes per example: what the pool saves.

A property-based suite runs hundreds of examples per property. A naive suite
starts `world_size` fresh interpreters per example (import torch and Keras,
rendezvous, init gloo, run the body, exit); the rank pool forks its ranks once
from a preloaded zygote and feeds them examples. Measured per world size:

  pool     s/example for the no-op and the small DTensor body (distribute +
           matmul + full_tensor), after a warm-up;
  bare     the body alone: probes.noop called in this process, and the DTensor
           body timed inside warm ranks; overhead = pool no-op - bare no-op,
           i.e. what the pool adds to every example;
  spawn    s/example with fresh processes per example (`python -c`, FileStore
           rendezvous in a temp dir, gloo) running the DTensor body once;
  respawn  PoolManager.get replacing a pool killed by a SIGKILLed rank, and one
           killed after a hang (deadline_s=0.5).

Last line, at 2 ranks: pool-vs-spawn: ratio=<spawn/pool s per DTensor example>
overhead_ms=<...>. No timing is asserted: a measurement, not a test.
"""

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time

WARMUP = 20
REPEATS = 3  # respawn measurements per fault kind
SPAWN_TIMEOUT_S = 300


def timed_dtensor(ctx, example):
    """Rank-side: the DTensor body's own time, excluding dispatch and reply."""
    from kdist_props.properties import probes

    began = time.perf_counter()
    probes.small_dtensor_matmul(ctx, example)
    return time.perf_counter() - began


def spawn_worker(rank, world_size, workdir, n):
    """One rank of a spawn-per-example run: a fresh interpreter does it all."""
    import ctypes, datetime, signal  # noqa: E401

    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the script
    import keras  # noqa: F401  (a naive suite pays for this import every example)
    import torch
    import torch.distributed as dist
    from kdist_props.cluster.rank import RankContext
    from kdist_props.properties import probes
    from kdist_props.contract.specs import SizeExample

    torch.set_num_threads(1)  # as the pool's ranks do
    store = dist.FileStore(os.path.join(workdir, "store"), world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    result = probes.small_dtensor_matmul(RankContext(rank, world_size, "cpu"), SizeExample(n))
    with open(os.path.join(workdir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result.tolist(), f)
    dist.destroy_process_group()
    os._exit(0)  # skip gloo's sometimes-aborting destructors, as the pool's ranks do


def spawn_example(world_size, n):
    """Start world_size fresh processes, run the body once, gather, reap. Returns results."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": os.pathsep.join([here, *sys.path])}
    with tempfile.TemporaryDirectory(prefix="kdist-spawn-") as workdir:
        procs = []
        try:
            for rank in range(world_size):
                code = f"import pool_vs_spawn as b; b.spawn_worker({rank}, {world_size}, {workdir!r}, {n})"
                log = open(os.path.join(workdir, f"rank{rank}.log"), "wb")
                procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log))
                log.close()
            for rank, proc in enumerate(procs):
                if proc.wait(SPAWN_TIMEOUT_S) != 0:
                    tail = read(workdir, f"rank{rank}.log").decode(errors="replace")[-2000:]
                    raise RuntimeError(f"spawned rank {rank} exited with {proc.returncode}:\n{tail}")
            return [pickle.loads(read(workdir, f"rank{rank}.pkl")) for rank in range(world_size)]
        finally:
            for proc in procs:  # nothing outlives an example, even on error
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def read(*path):
    with open(os.path.join(*path), "rb") as f:
        return f.read()


def per_example(run, count):
    began = time.perf_counter()
    for _ in range(count):
        run()
    return (time.perf_counter() - began) / count


POOL_DT, SPAWN_DT = "pool: DTensor body", "spawn: DTensor body, fresh processes"
POOL_NOOP, BARE_NOOP, OVERHEAD = "pool: no-op body", "bare: no-op, in-process", "overhead = pool no-op - bare no-op"


def measure(pools, ws, examples, spawn_examples, timed_body):
    from kdist_props.cluster import RankCrash, RankHang
    from kdist_props.properties import probes
    from kdist_props.contract.specs import FaultExample, SizeExample

    ex, row = SizeExample(8), {}
    began = time.perf_counter()
    pools.get(ws)
    row["first pools.get (the first one starts the zygote)"] = time.perf_counter() - began

    def run(body, example=ex, deadline_s=30):
        return pools.get(ws).run(body, example, deadline_s=deadline_s)

    for body in (probes.noop, probes.small_dtensor_matmul):
        per_example(lambda: run(body), WARMUP)
    row[POOL_NOOP] = per_example(lambda: run(probes.noop), examples)
    row[POOL_DT] = per_example(lambda: run(probes.small_dtensor_matmul), examples)
    row[BARE_NOOP] = per_example(lambda: probes.noop(None, ex), 100_000)
    row["bare: DTensor body in warm ranks (median)"] = statistics.median(
        max(run(timed_body)) for _ in range(examples))
    row[OVERHEAD] = row[POOL_NOOP] - row[BARE_NOOP]

    reference, spawned = run(probes.small_dtensor_matmul)[0].tolist(), []
    for _ in range(spawn_examples):
        began = time.perf_counter()
        results = spawn_example(ws, ex.n)
        spawned.append(time.perf_counter() - began)
        if any(r != reference for r in results):
            print(f"warning: spawned ranks at world size {ws} disagree with the pool", file=sys.stderr)
    row[SPAWN_DT] = statistics.mean(spawned)

    for kind, deadline_s, error in (("sigkill", 30, RankCrash), ("hang", 0.5, RankHang)):
        times = []
        for _ in range(REPEATS):
            try:
                run(probes.fault, FaultExample(kind, rank=1), deadline_s)
                print(f"warning: {kind} fault did not raise {error.__name__}", file=sys.stderr)
            except error:
                pass
            began = time.perf_counter()
            pools.get(ws)  # closes the dead pool, forks and joins a new one
            times.append(time.perf_counter() - began)
            run(probes.noop)  # the new pool works
        row[f"respawn after {kind}: pools.get (median of {REPEATS})"] = statistics.median(times)
        row[f"  of which new pool's startup_s ({kind})"] = statistics.median(pools.respawns[-REPEATS:])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--spawn-examples", type=int, default=2)
    parser.add_argument("--world-sizes", default="2,4")
    args = parser.parse_args()
    world_sizes = [int(w) for w in args.world_sizes.split(",")]

    # Rank-side bodies are pickled by reference, so timed_dtensor must come from an
    # importable module, not __main__; the zygote inherits this sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pool_vs_spawn

    from kdist_props.cluster import PoolManager

    pools = PoolManager()
    try:
        rows = {ws: measure(pools, ws, args.examples, args.spawn_examples, pool_vs_spawn.timed_dtensor)
                for ws in world_sizes}
    finally:
        pools.close_all()

    width = max(map(len, rows[world_sizes[0]]))
    print(f"\n{args.examples} pool examples, {args.spawn_examples} spawn examples, {os.cpu_count()} CPUs; "
          "milliseconds per example (or per respawn)")
    print(" " * width + "".join(f"{f'{ws} ranks':>14}" for ws in world_sizes))
    for label in rows[world_sizes[0]]:
        print(f"{label:<{width}}" + "".join(f"{rows[ws][label] * 1e3:>14.3f}" for ws in world_sizes))
    print(f"{'spawn / pool, DTensor body (ratio)':<{width}}"
          + "".join(f"{rows[ws][SPAWN_DT] / rows[ws][POOL_DT]:>13.0f}x" for ws in world_sizes))
    if 2 in rows:
        r = rows[2]
        print(f"pool-vs-spawn: ratio={r[SPAWN_DT] / r[POOL_DT]:.0f} overhead_ms={r[OVERHEAD] * 1e3:.3f}")


if __name__ == "__main__":
    main()
