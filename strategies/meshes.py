"""Device meshes whose size equals the world size, in any device order, and
mesh configurations that differ from a given one in exactly one field."""

import dataclasses
import math

from hypothesis import strategies as st

from kdist_props.contract.specs import MeshConfig, MeshSpec

# Common names first (they shrink to them), then arbitrary identifiers: code that
# hard-codes "batch" or "model" must meet other names too.
axis_name = st.one_of(
    st.sampled_from(["batch", "model", "data", "x", "y"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
)


def factorizations(n, ndim):
    """Every ordered tuple of `ndim` positive ints whose product is n."""
    if ndim == 1:
        return [(n,)]
    return [(d, *rest) for d in range(1, n + 1) if n % d == 0 for rest in factorizations(n // d, ndim - 1)]


def device_orders(world_size):
    """The ranks in any order, shrinking to rank order."""
    return st.permutations(range(world_size)).map(tuple)


def axis_names(ndim):
    return st.lists(axis_name, min_size=ndim, max_size=ndim, unique=True).map(tuple)


@st.composite
def meshes(draw, world_size, min_ndim=1, max_ndim=3):
    """A mesh of any shape over every rank, its devices in any order (users
    list devices as they like; rank order is the shrink target)."""
    ndim = draw(st.integers(min_ndim, max_ndim), label="mesh ndim")
    shape = draw(st.sampled_from(factorizations(world_size, ndim)), label="mesh shape")
    names = draw(axis_names(ndim), label="mesh axis names")
    ranks = draw(device_orders(world_size), label="device order")
    assert math.prod(shape) == world_size
    return MeshSpec(shape=tuple(shape), axis_names=names, ranks=ranks)


@st.composite
def mesh_configs(draw, world_size, device_types):
    """A mesh in any device order on devices of one of `device_types` (Keras' names)."""
    mesh = draw(meshes(world_size), label="mesh")
    return MeshConfig(mesh, draw(st.sampled_from(device_types), label="device type"))


def varying_fields(config, world_size, device_types):
    """The fields of `config` that another configuration of the same world size
    can change while keeping every other field: axis names always; the shape
    only where the world size has another factorization of the same ndim
    (never at world size 1, where the ndim, fixed by the number of axis
    names, fixes the shape); the device order from world size 2; the device
    type only where several are available."""
    fields = ["axis names"]
    if len(factorizations(world_size, len(config.mesh.shape))) > 1:
        fields.append("shape")
    if world_size > 1:
        fields.append("device order")
    if len(device_types) > 1:
        fields.append("device type")
    return fields


@st.composite
def near_twins(draw, config, world_size, device_types):
    """A configuration equal to `config` in every field but one (drawn): the
    near-collision that a cache keyed on a part of the configuration gets wrong."""
    mesh = config.mesh
    field = draw(st.sampled_from(varying_fields(config, world_size, device_types)), label="differing field")
    if field == "device type":
        others = [t for t in device_types if t != config.device_type]
        return dataclasses.replace(config, device_type=draw(st.sampled_from(others), label="device type"))
    if field == "axis names":
        other_names = axis_names(len(mesh.shape)).filter(lambda names: names != mesh.axis_names)
        mesh = dataclasses.replace(mesh, axis_names=draw(other_names, label="mesh axis names"))
    elif field == "shape":
        others = [s for s in factorizations(world_size, len(mesh.shape)) if s != mesh.shape]
        mesh = dataclasses.replace(mesh, shape=draw(st.sampled_from(others), label="mesh shape"))
    else:
        order = device_orders(world_size).filter(lambda ranks: ranks != mesh.ranks)
        mesh = dataclasses.replace(mesh, ranks=draw(order, label="device order"))
    return dataclasses.replace(config, mesh=mesh)
