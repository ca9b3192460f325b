"""Rank-side bodies of the mesh clauses: `mesh.identity` (stateful) and `mesh.reuse`."""

import gc

import torch.distributed as dist

from kdist_props.properties.build import describe_backend_mesh, keras_mesh, keras_mesh_args


def mesh_step(ctx, ex):
    """mesh.identity, one step of the state machine, on meshes kept in ctx.state."""
    meshes = ctx.state.setdefault("meshes", {})
    op, name = ex["op"], ex["name"]
    if op == "start":  # a new run: no mesh, and a target with no cache from earlier runs
        meshes.clear()
        ctx.fresh_target()
    elif op == "create":
        meshes[name] = keras_mesh(ctx, ex["mesh"])
    elif op == "replace":
        # Freed and allocated back to back (arguments built first), the new mesh
        # takes the old one's address, hence its id(): the case an id()-keyed
        # cache gets wrong.
        args = keras_mesh_args(ctx, ex["mesh"])
        del meshes[ex["old"]]
        meshes[name] = keras_mesh(ctx, ex["mesh"], args)
    elif op == "drop":
        del meshes[name]
    elif op == "collect":
        gc.collect()
    elif op == "convert":
        return describe_backend_mesh(ctx.target.to_backend_mesh(meshes[name]))
    return None


def process_group_count():
    # torch has no public count of live process groups; pg_map is the registry.
    return len(dist.distributed_c10d._world.pg_map)


def mesh_reuse(ctx, ex):
    """mesh.reuse: groups created by converting an equal configuration a second time."""
    first = ctx.target.to_backend_mesh(keras_mesh(ctx, ex["mesh"]))
    before = process_group_count()
    second = ctx.target.to_backend_mesh(keras_mesh(ctx, ex["mesh"]))
    return {
        "new_groups": process_group_count() - before,
        "same_mesh": describe_backend_mesh(first) == describe_backend_mesh(second),
    }
