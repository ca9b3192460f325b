"""Chapter meshes: `mesh.identity` (stateful) and `mesh.reuse`."""

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, multiple, rule,
                                 run_state_machine_as_test)

from kdist_props.contract import oracles
from kdist_props.properties import meshes as mesh_bodies
from kdist_props.contract.specs import MeshReuseExample, MeshReuseObservation, MeshStep
from kdist_props.strategies.meshes import mesh_configs, near_twins

# The Keras device types a pool can build meshes of: a CPU gloo pool cannot
# build a cuda mesh, while a --kdist-device=cuda pool (gloo for cpu, NCCL for
# cuda) builds both. So a near twin differs in device type only under
# --kdist-device=cuda; on CPU the device type is still checked on every
# conversion, against the configuration's.
#
# Which fields a near twin can differ in alone (strategies.meshes.varying_fields):
# at world size 1 only the axis names (every dim has size 1 and the ndim goes
# with the number of axis names, so the shape cannot change alone; one device
# has one order), plus the device type on cuda; from world size 2 also the
# shape ((1, 2) vs (2, 1)) and the device order.
KERAS_DEVICE_TYPES = {"cpu": ("cpu",), "cuda": ("gpu", "cpu")}


class MeshLifecycle(RuleBasedStateMachine):
    """Meshes created, replaced, converted, dropped and collected in drawn orders
    on persistent ranks; every conversion must match its own configuration.
    `twin` makes a near-collision: a mesh equal to a live one in every field but
    one, and converts both, so a cache keyed on part of the configuration
    hands one of them the other's backend mesh. `replace` makes the new mesh
    take the freed one's id(), so a cache keyed by id() fails every time."""

    kdist = None  # set by the test: the runner of this world size and target
    live = Bundle("meshes")

    def __init__(self):
        super().__init__()
        self.configs = {}
        self.created = 0
        self.device_types = KERAS_DEVICE_TYPES[self.kdist.device]
        self.kdist.run(mesh_bodies.mesh_step, MeshStep("start"), stateful=True, starts_state=True)

    def step(self, step, agree=True):
        return self.kdist.run(mesh_bodies.mesh_step, step, stateful=True, agree=agree)

    def new_mesh(self, op, config, old=None):
        name = f"mesh{self.created}"
        self.created += 1
        observations = self.step(MeshStep(op, name, config, old), agree=False)
        self.configs[name] = config
        return name, observations

    def check_conversion(self, name):
        step = MeshStep("convert", name, self.configs[name])
        expected = oracles.expected_backend_mesh(self.configs[name])
        got = self.step(step)[0].backend_mesh  # agree=True: every rank saw the same
        assert got == expected, oracles.describe_mismatch("backend mesh", expected, got, step)

    @initialize(target=live, data=st.data())
    def create_with_a_twin(self, data):
        """Every program meets a near-collision at least once, whatever its rules:
        a twin among the drawn rules is rare in short programs."""
        name = self.create(data)
        return multiple(name, self.twin(name, data))

    @rule(target=live, data=st.data())
    def create(self, data):
        config = data.draw(mesh_configs(self.kdist.world_size, self.device_types), label="mesh")
        return self.new_mesh("create", config)[0]

    @rule(target=live, name=live, data=st.data())
    def twin(self, name, data):
        config = data.draw(near_twins(self.configs[name], self.kdist.world_size, self.device_types), label="twin")
        twin, _ = self.new_mesh("create", config)
        self.check_conversion(name)
        self.check_conversion(twin)
        return twin

    @rule(target=live, old=consumes(live), data=st.data())
    def replace(self, old, data):
        config = data.draw(mesh_configs(self.kdist.world_size, self.device_types), label="mesh")
        name, observations = self.new_mesh("replace", config, old)
        del self.configs[old]
        event(f"replace: new mesh took the freed id() on {sum(o.took_old_id for o in observations)} "
              f"of {len(observations)} ranks")
        return name

    @rule(name=live)
    def convert(self, name):
        self.check_conversion(name)

    @rule(name=consumes(live))
    def drop(self, name):
        self.step(MeshStep("drop", name))
        del self.configs[name]

    @rule()
    def collect(self):
        self.step(MeshStep("collect"))


@pytest.mark.clause("mesh.identity")
def test_backend_mesh_matches_its_configuration_whatever_came_before(kdist):
    MeshLifecycle.kdist = kdist
    # Short programs suffice (the id() reuse bug needs create, convert, replace,
    # convert; a near-collision needs create, twin), and each new mesh layout
    # costs process groups on every rank.
    run_state_machine_as_test(MeshLifecycle, settings=settings(
        settings.default, stateful_step_count=10, max_examples=max(10, settings.default.max_examples // 2)))


@pytest.mark.clause("mesh.reuse")
@given(data=st.data())
def test_equal_mesh_configuration_creates_no_new_process_group(kdist, data):
    example = MeshReuseExample(data.draw(mesh_configs(kdist.world_size, KERAS_DEVICE_TYPES[kdist.device]),
                                         label="mesh"))
    expected = MeshReuseObservation(new_groups=0, same_mesh=True)
    for rank, got in enumerate(kdist.run(mesh_bodies.mesh_reuse, example, agree=True)):
        assert got == expected, oracles.describe_mismatch(f"rank {rank} second conversion", expected, got, example)
