"""The strategies themselves: within the ci profile they reach what the
properties need (scalars, uneven and empty shards, every dtype, every
operand mix, both distributions and optimizers)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.strategies.dtypes import ALL
from kdist_props.strategies.layouts import invalid_layouts, layouts
from kdist_props.strategies.meshes import mesh_configs, meshes, near_twins
from kdist_props.strategies.models import (CLIPNORMS, DATA_KINDS, LOSS_REDUCTIONS, OPTIMIZERS, WEIGHT_DECAYS,
                                           train_specs)
from kdist_props.strategies.tensors import MATMUL_KINDS, laid_out_tensors, matmul_cases

pytestmark = pytest.mark.selftest
CI = settings.get_profile("ci")


def examples(strategy, max_examples=None):
    """Everything `strategy` produces in one ci-profile run (of `max_examples` when given)."""
    seen = []

    @settings(CI, database=None, **({"max_examples": max_examples} if max_examples else {}))
    @given(strategy)
    def collect(value):
        seen.append(value)

    collect()
    return seen


def mesh_and(inner, world_size=4, **mesh_options):
    return meshes(world_size, **mesh_options).flatmap(lambda mesh: st.tuples(st.just(mesh), inner(mesh)))


def test_meshes_have_the_world_size_any_rank_and_any_order():
    drawn = examples(meshes(4))
    assert all(math.prod(m.shape) == 4 and sorted(m.ranks) == [0, 1, 2, 3] for m in drawn)
    assert {len(m.shape) for m in drawn} == {1, 2, 3}, "1-D, 2-D and 3-D meshes"
    assert any(m.ranks != (0, 1, 2, 3) for m in drawn), "a device order other than rank order"
    assert any(set(m.axis_names) - {"batch", "model"} for m in drawn), "axis names other than batch/model"


def test_layouts_use_each_mesh_axis_at_most_once():
    for mesh, axes in examples(mesh_and(lambda mesh: layouts(mesh, 3))):
        named = [a for a in axes if a is not None]
        assert len(named) == len(set(named)) and set(named) <= set(mesh.axis_names), (mesh, axes)


def test_invalid_layouts_name_their_offender():
    drawn = examples(mesh_and(lambda mesh: invalid_layouts(mesh, 3)))
    kinds = set()
    for mesh, (axes, offender) in drawn:
        assert offender in axes
        kinds.add("repeated" if axes.count(offender) > 1 else "unknown")
        assert kinds and (axes.count(offender) > 1 or offender not in mesh.axis_names), (mesh, axes)
    assert kinds == {"repeated", "unknown"}


def test_tensors_reach_scalars_uneven_and_empty_shards_and_every_dtype():
    # The properties run once per world size (1, 2, 4): what they see together.
    drawn = [e for world_size in (1, 2, 4) for e in examples(mesh_and(laid_out_tensors, world_size))]
    assert any(t.shape == () for _, (t, _) in drawn), "a scalar"
    assert any(0 in t.shape for _, (t, _) in drawn), "an empty dim"

    def uneven(mesh, tensor, axes):
        return any(a is not None and tensor.shape[d] % mesh.axis_size(a) for d, a in enumerate(axes))

    assert any(uneven(mesh, t, axes) for mesh, (t, axes) in drawn), "a dim not divisible by its mesh axis"
    assert {t.dtype for _, (t, _) in drawn} == set(ALL), "every dtype"


def test_expected_shards_of_an_uneven_dim_follow_torch_chunk():
    import torch

    from kdist_props.contract.specs import MeshSpec

    mesh = MeshSpec(shape=(4,), axis_names=("x",), ranks=(0, 1, 2, 3))
    full = torch.arange(5)
    shards = [oracles.expected_local_shard(full, mesh, (("S", 0),), r).tolist() for r in range(4)]
    assert shards == [[0, 1], [2, 3], [4], []]


def test_matmul_cases_reach_every_kind_and_operand_mix():
    drawn = examples(matmul_cases(2))
    assert {kind for _, kind, _, _ in drawn} == set(MATMUL_KINDS)
    assert {(a.is_distributed, b.is_distributed) for _, _, a, b in drawn} == {
        (True, False), (False, True), (True, True), (False, False)}
    families = {("float" if "float" in a.tensor.dtype or "complex" in a.tensor.dtype else "other")
                for _, _, a, _ in drawn}
    assert families == {"float", "other"}


def test_training_runs_reach_both_distributions_optimizers_and_entries():
    drawn = examples(train_specs(2))
    assert {t.distribution.kind for t in drawn} == {"DataParallel", "ModelParallel"}
    assert {t.optimizer for t in drawn} == set(OPTIMIZERS)
    assert {t.entry for t in drawn} == {"fit", "train_on_batch"}
    assert {t.loss_reduction for t in drawn} == set(LOSS_REDUCTIONS)
    assert {t.data_kind for t in drawn} == set(DATA_KINDS)
    assert {t.clipnorm for t in drawn} == {None, *CLIPNORMS}
    assert {t.weight_decay for t in drawn} == {None, *WEIGHT_DECAYS}
    assert all(t.weight_decay is not None for t in drawn if t.optimizer == "adamw"), "AdamW always decays"
    assert any(1 in t.model.widths for t in drawn), "a size-1 dim"
    assert any(w % 2 for t in drawn for w in t.model.widths[1:]), "a width that shards unevenly on 2 ranks"


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_near_twins_differ_from_their_mesh_in_exactly_one_field(world_size):
    device_types = ("cpu", "gpu")
    pairs = examples(mesh_configs(world_size, device_types).flatmap(
        lambda config: st.tuples(st.just(config), near_twins(config, world_size, device_types))))
    for config, twin in pairs:
        fields = {"shape": (config.mesh.shape, twin.mesh.shape), "axis names": (config.mesh.axis_names,
                  twin.mesh.axis_names), "device order": (config.mesh.ranks, twin.mesh.ranks),
                  "device type": (config.device_type, twin.device_type)}
        differing = [name for name, (a, b) in fields.items() if a != b]
        assert len(differing) == 1, f"expected exactly one differing field, got {differing} for {config} vs {twin}"



@pytest.mark.parametrize("world_size", [2, 4])
def test_tier_b_meshes_reach_every_batch_model_factorisation(world_size):
    drawn = examples(train_specs(world_size), max_examples=200)
    pairs = [(b, world_size // b) for b in range(1, world_size + 1) if world_size % b == 0]
    assert any(not t.distribution.mesh.in_rank_order for t in drawn), "expected devices in other orders than rank order"
    assert {t.distribution.mesh.shape for t in drawn if t.distribution.kind == "ModelParallel"} == set(pairs)
    assert {t.distribution.mesh.shape for t in drawn if t.distribution.kind == "DataParallel"} == {
        (world_size,), *pairs}
