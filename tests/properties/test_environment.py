"""Bugs of torch itself, probed on the pools with torch alone, once per world
size and for no target. Each probe is marked `environment(<id>, workaround=...)`
and lands in the report's environment section, never in a target's cells:
`present` (the probe xfails: the bug shows, the workaround is needed),
`absent` (the probe passes: a fixed torch, remove the workaround), `error`
(the probe itself broke)."""

import pytest
import torch

from kdist_props.contract import oracles
from kdist_props.harness import torch_bugs
from kdist_props.properties import environment
from kdist_props.reporting.report import ENVIRONMENT_PARAM
from kdist_props.contract.specs import MeshSpec, PermutedGatherExample, TensorSpec
from kdist_props.contract.values import tensor_from

class EnvironmentProbe:
    """Runs a torch-only body on every rank of the pool of one world size."""

    def __init__(self, session, world_size):
        self.session, self.world_size = session, world_size

    def run(self, body, example):
        pool = self.session.pools.get(self.world_size)
        return pool.run(body, example, deadline_s=self.session.config.deadline)  # no target: torch alone


def pytest_generate_tests(metafunc):
    if ENVIRONMENT_PARAM in metafunc.fixturenames:
        sizes = metafunc.config.kdist.config.world_sizes
        metafunc.parametrize(ENVIRONMENT_PARAM, sizes, ids=[f"w{ws}" for ws in sizes], indirect=True)


@pytest.fixture
def kdist_environment(request):
    return EnvironmentProbe(request.config.kdist, request.param)


@pytest.mark.environment(torch_bugs.PERMUTED_MESH_GATHER,
                         workaround="the harness and the reference build mesh groups in mesh order "
                                    "(properties/torch_mesh.py); failures on such meshes name this probe")
def test_full_tensor_of_a_permuted_mesh(kdist_environment):
    """torch 2.13: full_tensor() of a DTensor on a DeviceMesh(device_type, ranks)
    whose devices are not in rank order concatenates the shards in rank order
    (DeviceMesh builds each dim's process group with its ranks sorted)."""
    world_size = kdist_environment.world_size
    if world_size < 2:
        pytest.skip("a permuted mesh needs at least 2 ranks")
    mesh = MeshSpec(shape=(world_size,), axis_names=("x",), ranks=tuple(reversed(range(world_size))))
    example = PermutedGatherExample(mesh=mesh, tensor=TensorSpec(shape=(world_size, 2), dtype="float32", seed=0))
    full = tensor_from(example.tensor)
    observations = kdist_environment.run(environment.permuted_mesh_gather, example)
    for rank, got in enumerate(observations):
        # The shards are right; only the gather may be wrong.
        expected = oracles.expected_local_shard(full, mesh, (("S", 0),), rank)
        oracles.assert_identical(got.local, expected, f"rank {rank} local shard", example)
    wrong = [rank for rank, got in enumerate(observations) if not torch.equal(got.full, full)]
    if wrong:
        pytest.xfail(f"torch {torch.__version__}: full_tensor() on mesh ranks {mesh.ranks} gave "
                     f"{observations[wrong[0]].full.tolist()} on rank {wrong[0]}, expected {full.tolist()} "
                     "(gathered in rank order, not mesh order)")
