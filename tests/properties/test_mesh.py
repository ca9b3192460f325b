"""Chapter meshes: `mesh.identity` (stateful) and `mesh.reuse`."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, rule, run_state_machine_as_test

from kdist_props import oracles
from kdist_props.properties import meshes
from kdist_props.strategies.meshes import meshes


class MeshLifecycle(RuleBasedStateMachine):
    """Meshes created, converted, dropped and collected in drawn orders on
    persistent ranks; every conversion must match its own configuration."""

    kdist = None  # set by the test: the runner of this world size and target
    live = Bundle("meshes")

    def __init__(self):
        super().__init__()
        self.specs = {}
        self.created = 0
        self.step({"op": "start", "name": None})

    def step(self, example):
        return self.kdist.run(meshes.mesh_step, example, stateful=True, agree=True)

    def new_name(self):
        self.created += 1
        return f"mesh{self.created - 1}"

    @rule(target=live, data=st.data())
    def create(self, data):
        spec = data.draw(meshes(self.kdist.world_size), label="mesh")
        name = self.new_name()
        self.step({"op": "create", "name": name, "mesh": spec})
        self.specs[name] = spec
        return name

    @rule(target=live, old=consumes(live), data=st.data())
    def replace(self, old, data):
        spec = data.draw(meshes(self.kdist.world_size), label="mesh")
        name = self.new_name()
        self.step({"op": "replace", "name": name, "old": old, "mesh": spec})
        del self.specs[old]
        self.specs[name] = spec
        return name

    @rule(name=live)
    def convert(self, name):
        example = {"op": "convert", "name": name, "mesh": self.specs[name]}
        expected = oracles.expected_backend_mesh(self.specs[name], self.kdist.session.device)
        got = self.step(example)[0]  # agree=True: every rank saw the same
        assert got == expected, oracles.describe_mismatch("backend mesh", expected, got, example)

    @rule(name=consumes(live))
    def drop(self, name):
        self.step({"op": "drop", "name": name})
        del self.specs[name]

    @rule()
    def collect(self):
        self.step({"op": "collect", "name": None})



@pytest.mark.clause("mesh.identity")
def test_backend_mesh_matches_its_configuration_whatever_came_before(kdist):
    MeshLifecycle.kdist = kdist
    # Short programs suffice (the id() reuse bug needs create, convert, replace,
    # convert), and each new mesh layout costs process groups on every rank.
    run_state_machine_as_test(MeshLifecycle, settings=settings(
        settings.default, stateful_step_count=10, max_examples=max(10, settings.default.max_examples // 2)))


@pytest.mark.clause("mesh.reuse")
@given(data=st.data())
def test_equal_mesh_configuration_creates_no_new_process_group(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    example = {"mesh": mesh}
    for rank, got in enumerate(kdist.run(meshes.mesh_reuse, example, agree=True)):
        expected = {"new_groups": 0, "same_mesh": True}
        assert got == expected, oracles.describe_mismatch(f"rank {rank} second conversion", expected, got, example)
