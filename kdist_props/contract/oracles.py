"""Single-process expectations, in plain torch: no process group, no DTensor.

Placements are plain tuples here: ("S", dim) for Shard(dim), ("R",) for
Replicate(); bodies describe what the target produced the same way.
"""

import re

import numpy as np
import torch

from kdist_props.contract.specs import MODEL_PARALLEL, BackendMesh


def expected_placements(mesh, axes):
    """Mesh axis i named at tensor dim d gives Shard(d); otherwise Replicate()."""
    return tuple(("S", axes.index(name)) if name in axes else ("R",) for name in mesh.axis_names)


def expected_local_shard(full, mesh, placements, rank):
    """What `rank` must hold: torch.chunk along each sharded dim, mesh dim by mesh dim
    (uneven shards, and empty trailing ones, as torch.chunk gives them)."""
    local = full
    for mesh_dim, placement in enumerate(placements):
        if placement[0] != "S":
            continue
        dim, parts, index = placement[1], mesh.shape[mesh_dim], mesh.coordinate(rank)[mesh_dim]
        chunks = torch.chunk(local, parts, dim=dim) if local.shape[dim] else ()
        if index < len(chunks):
            local = chunks[index]
        else:
            empty_shape = list(local.shape)
            empty_shape[dim] = 0
            local = local.new_empty(empty_shape)
    return local


def expected_variable_axes(distribution, variable):
    """DataParallel replicates; ModelParallel takes the LayoutMap entry for the
    variable's path; a layout already set on the variable wins over both."""
    if variable.preassigned is not None:
        return tuple(variable.preassigned)
    if distribution.kind == MODEL_PARALLEL:
        for path, axes in distribution.layout_map:
            if path == variable.path:
                return tuple(axes)
    return (None,) * variable.rank


def expected_layout_map_axes(distribution, path, rank):
    """A model variable's axes: the LayoutMap key that fully matches its path
    (keys are regular expressions, as in Keras), else replicated."""
    for pattern, axes in distribution.layout_map:
        if re.fullmatch(pattern, path):
            return tuple(axes)
    return (None,) * rank


def expected_layout_map_layout(entries, path, rank):
    """(axes, None) for a variable at `path` with `rank` dims under a LayoutMap of
    `entries` (specs.LayoutMapEntry), or (None, why) where making it must raise a
    ValueError naming it. As Keras documents LayoutMap: the key equal to the
    path, else the one key that fully matches it as a regular expression, else
    replicated; several full matches are ambiguous; the axes must be one per dim."""
    keys = [entry.key for entry in entries]
    matching = [path] if path in keys else [key for key in keys if re.fullmatch(key, path)]
    if len(matching) > 1:
        return None, f"several keys fully match it: {matching}"
    axes = next(entry.axes for entry in entries if entry.key == matching[0]) if matching else (None,) * rank
    if len(axes) != rank:
        return None, f"its layout {tuple(axes)} has {len(axes)} axes for {rank} dims"
    return tuple(axes), None


def expected_after_assign(current, how, value):
    """A variable's value after `how` (assign, assign_add, assign_sub) of `value`, in its dtype."""
    if how == "assign":
        return value.to(current.dtype)
    return (current + value if how == "assign_add" else current - value).to(current.dtype)


def expected_backend_mesh(config):
    """The torch DeviceMesh of a Keras mesh configuration: the same shape, names
    and rank layout, on the torch device type of Keras' ("gpu" is torch's "cuda")."""
    mesh = config.mesh
    device_type = {"gpu": "cuda"}.get(config.device_type, config.device_type)
    return BackendMesh(tuple(mesh.shape), tuple(mesh.axis_names), tuple(mesh.ranks), device_type)


def matmul_result_dtype(a, b):
    """Keras' matmul dtype: int8 @ int8 gives int32, else Keras' own type
    promotion (which, like JAX without x64, turns float64 into float32).
    The promotion table is Keras' dtype policy, not its distribution code:
    the clause asks that distributed operands follow the same policy."""
    if a == b == torch.int8:
        return torch.int32
    from keras.src.backend.common.dtypes import result_type

    return getattr(torch, result_type(str(a).removeprefix("torch."), str(b).removeprefix("torch.")))


def expected_matmul(a, b):
    """torch.matmul of the full operands, computed wide (exact for our small
    integer values), then cast to Keras' result dtype."""
    dtype = matmul_result_dtype(a.dtype, b.dtype)
    wide = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    return torch.matmul(a.to(wide), b.to(wide)).to(dtype)


def tolerance(dtype):
    """(rtol, atol) for a result of `dtype`: exact for integers and bool; for
    floats a few ulps of the dtype. Inputs are small integers, so exact
    arithmetic gives exact results and these only absorb summation order."""
    if not (dtype.is_floating_point or dtype.is_complex):
        return 0.0, 0.0
    eps = torch.finfo(dtype).eps
    return 4 * eps, 4 * eps


def describe_mismatch(what, expected, actual, example):
    return f"{what}: expected {shown(expected)}, got {shown(actual)}{difference(expected, actual)}, for {example!r}"


def shown(value):
    """A value with every digit that tells it apart: a tensor's floats in their
    shortest repr that round-trips (torch's own printing rounds to 4 places)."""
    if not isinstance(value, torch.Tensor):
        return repr(value)
    plain = value.detach().cpu()
    if plain.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16; both widen exactly
        plain = plain.float()
    text = np.array2string(plain.numpy(), floatmode="unique", separator=", ", threshold=64)
    # One line (rows joined): a failure's reason is the message's first line.
    return f"tensor({' '.join(text.split())}, dtype={value.dtype})"


def difference(expected, actual):
    """For two float tensors of one shape: where they differ most, and by how much."""
    if not (isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor)
            and expected.shape == actual.shape and expected.numel()
            and (expected.is_floating_point() or expected.is_complex())):
        return ""
    gap = (actual.detach().cpu().to(torch.complex128 if expected.is_complex() else torch.float64)
           - expected.detach().cpu().to(torch.complex128 if expected.is_complex() else torch.float64)).abs()
    if not bool((gap > 0).any()):
        return ""
    index = tuple(int(i) for i in np.unravel_index(int(torch.nan_to_num(gap, nan=float("inf")).argmax()),
                                                   tuple(gap.shape)))
    return f" (largest |difference| {float(gap[index] if index else gap):.3g} at index {index})"


def assert_tensors_match(actual, expected, what, example):
    """Same dtype, same shape, and values equal within tolerance(dtype)."""
    assert actual.dtype == expected.dtype, describe_mismatch(f"{what} dtype", expected.dtype, actual.dtype, example)
    assert actual.shape == expected.shape, describe_mismatch(f"{what} shape", tuple(expected.shape),
                                                             tuple(actual.shape), example)
    rtol, atol = tolerance(expected.dtype)
    if rtol == 0 and atol == 0:
        ok = torch.equal(actual, expected)
    else:
        ok = torch.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    assert ok, describe_mismatch(what, expected, actual, example)


def assert_identical(actual, expected, what, example):
    """Same dtype, shape and bits: for values that are moved, never computed."""
    assert actual.dtype == expected.dtype, describe_mismatch(f"{what} dtype", expected.dtype, actual.dtype, example)
    assert actual.shape == expected.shape, describe_mismatch(f"{what} shape", tuple(expected.shape),
                                                             tuple(actual.shape), example)
    assert torch.equal(actual, expected), describe_mismatch(what, expected, actual, example)


def assert_model_reads(observed, expected, rank, example, when=""):
    """A ModelStorageObservation lists the variables of `expected` ({path: full
    value}) in order, and every read of each, and get_weights, gives its full
    value; `when` ends each message (e.g. " after load_weights")."""
    paths = [path for path, _ in observed.variables]
    assert paths == list(expected), describe_mismatch(f"rank {rank} variables listed{when}", list(expected), paths,
                                                      example)
    assert len(observed.weights) == len(expected), describe_mismatch(
        f"rank {rank} number of get_weights() values{when}", len(expected), len(observed.weights), example)
    for path, got in observed.variables:
        for how, value in got.reads:
            assert_identical(value, expected[path], f"rank {rank} {path} read by {how}{when}", example)
    for (path, value), weight in zip(expected.items(), observed.weights):
        assert_identical(weight, value, f"rank {rank} {path} read by get_weights{when}", example)


def assert_model_layout(observed, distribution, expected, rank, example, when=""):
    """Every variable of a ModelStorageObservation has its LayoutMap axes under
    `distribution` and holds the chunk shard of its full value in `expected`."""
    for path, got in observed.variables:
        axes = expected_layout_map_axes(distribution, path, expected[path].ndim)
        assert got.axes == axes, describe_mismatch(f"rank {rank} {path} layout{when}", axes, got.axes, example)
        placements = expected_placements(distribution.mesh, axes)
        local = expected_local_shard(expected[path], distribution.mesh, placements, rank)
        assert_identical(got.local, local, f"rank {rank} {path} local shard{when}", example)
