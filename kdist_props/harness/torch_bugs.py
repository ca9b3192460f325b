"""Which known torch bugs a failing example meets.

A torch bug never excuses a value a Keras user sees wrong: the cell stays
`fail`. Its failures name the environment probe (tests/properties/
test_environment.py) of every torch bug the failing example meets, so a
reader knows where to look and a baseline may name it; the report's
environment section says whether the probe found the bug present.
"""

from kdist_props.contract.specs import meshes_in

# DTensor gathers on torch's own DeviceMesh over devices not in rank order
# concatenate in rank order (torch_mesh.py builds groups that do not).
PERMUTED_MESH_GATHER = "torch-permuted-mesh-gather"


def bugs_met(examples):
    """{probe id: what in the examples meets it} over the examples of a failure."""
    permuted = [m.ranks for e in examples for m in meshes_in(e) if not m.in_rank_order]
    if permuted:
        return {PERMUTED_MESH_GATHER: f"a mesh whose devices are not in rank order (ranks {permuted[0]})"}
    return {}


def annotated(reason, bugs):
    """`reason` with the probe id of every torch bug in `bugs` (bugs_met's result)."""
    if not bugs:
        return reason
    met = "; ".join(f"{what}: environment probe {probe}" for probe, what in bugs.items())
    return f"{reason} [the failing example meets a known torch bug: {met}]"
