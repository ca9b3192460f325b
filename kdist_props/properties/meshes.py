"""Rank-side bodies of the mesh clauses: `mesh.identity` (stateful) and `mesh.reuse`."""

import gc
import weakref

import keras
import torch.distributed as dist

from kdist_props.properties.lifecycle import fresh_target
from kdist_props.contract.specs import BackendMesh, MeshReuseExample, MeshReuseObservation, MeshStep, MeshStepObservation

# How many objects `replace` may allocate while looking for the freed mesh's
# address (about 64 bytes each): enough to go through every partly used pool
# of that size in this process many times over.
MAX_PLACEHOLDERS = 100_000


def mesh_args(config):
    return tuple(config.mesh.shape), list(config.mesh.axis_names), config.devices()


def keras_mesh(config):
    shape, axis_names, devices = mesh_args(config)
    return keras.distribution.DeviceMesh(shape, axis_names, devices=devices)


def backend_mesh_facts(mesh):
    return BackendMesh(tuple(mesh.mesh.shape), tuple(mesh.mesh_dim_names or ()), tuple(mesh.mesh.flatten().tolist()),
                       mesh.device_type)


class LiveMeshes:
    """One program's Keras meshes by name, and the id()s of the meshes it freed.

    An id() is reused by `replace`, always, and never by `create`: left to the
    allocator, whether a new mesh lands on a freed one's address depends on
    the process' allocation history, so a cache keyed by id() would fail on
    some replays of a program and not on others (Hypothesis: "flaky")."""

    def __init__(self):
        self.by_name = {}
        self.freed_ids = set()

    def create(self, name, config):
        held = []  # meshes that landed on a freed address, kept alive until one does not
        mesh = keras_mesh(config)
        while id(mesh) in self.freed_ids:
            held.append(mesh)
            mesh = keras_mesh(config)
        self.by_name[name] = mesh

    def drop(self, name):
        self.freed_ids.add(id(self.by_name.pop(name)))

    def replace(self, old, name, config):
        """Free mesh `old`, then build mesh `name` at its address. Returns
        whether that worked: not if something else still holds `old`."""
        address, mesh_type = id(self.by_name[old]), type(self.by_name[old])
        # Made before the old mesh is freed: nothing of them may take its address.
        placeholders, (shape, axis_names, devices) = [], mesh_args(config)
        gone = weakref.ref(self.by_name[old])
        self.drop(old)
        if gone() is not None:
            gc.collect()  # in a reference cycle: collected now, or never by us
        if gone() is not None:
            self.create(name, config)
            return False
        # The freed block goes back to its pool's free list; bare instances of
        # the mesh's type (same size) fill the blocks handed out before it until
        # one gets it, and that one is initialized in place, as the
        # constructor would (DeviceMesh has no __new__ of its own). The
        # collector stays off meanwhile: it would walk every placeholder.
        if mesh_type.__new__ is not object.__new__:
            self.create(name, config)
            return False
        collecting = gc.isenabled()
        gc.disable()
        try:
            for _ in range(MAX_PLACEHOLDERS):
                mesh = object.__new__(mesh_type)
                if id(mesh) == address:
                    mesh.__init__(shape, axis_names, devices=devices)
                    self.by_name[name] = mesh
                    return True
                placeholders.append(mesh)
        finally:
            if collecting:
                gc.enable()
        self.create(name, config)
        return False


def mesh_step(ctx, step: MeshStep) -> MeshStepObservation:
    """mesh.identity, one step of the state machine, on meshes kept in ctx.state."""
    if step.op == "start":  # a new program: no mesh, and a target with no cache from earlier programs
        fresh_target(ctx)
        ctx.state["meshes"] = LiveMeshes()
        return MeshStepObservation()
    meshes = ctx.state["meshes"]
    if step.op == "create":
        meshes.create(step.name, step.config)
    elif step.op == "replace":
        return MeshStepObservation(took_old_id=meshes.replace(step.old, step.name, step.config))
    elif step.op == "drop":
        meshes.drop(step.name)
    elif step.op == "collect":
        gc.collect()
    elif step.op == "convert":
        backend_mesh = ctx.target.to_backend_mesh(meshes.by_name[step.name])
        return MeshStepObservation(backend_mesh=backend_mesh_facts(backend_mesh))
    else:
        raise ValueError(f"unknown mesh step {step.op!r}")
    return MeshStepObservation()


def process_group_count():
    # torch has no public count of live process groups; pg_map is the registry.
    return len(dist.distributed_c10d._world.pg_map)


def mesh_reuse(ctx, example: MeshReuseExample) -> MeshReuseObservation:
    """mesh.reuse: groups created by converting a second, distinct DeviceMesh of an equal configuration."""
    # Both Keras meshes stay alive: two distinct objects, never one address reused.
    meshes = keras_mesh(example.config), keras_mesh(example.config)
    first = ctx.target.to_backend_mesh(meshes[0])
    before = process_group_count()
    second = ctx.target.to_backend_mesh(meshes[1])
    return MeshReuseObservation(new_groups=process_group_count() - before,
                                same_mesh=backend_mesh_facts(first) == backend_mesh_facts(second))
