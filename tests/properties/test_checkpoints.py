"""Chapter checkpoints (Tier B): `model.checkpoint`.

save_weights from a model built under a distribution, or with none, then
load_weights into a model of the same layers built under it, or with none,
holding other values: what was saved is what every rank reads, and a
distributed destination keeps its layout. The oracle is the saved values
themselves (training.initial_weights); one test per fact, so that a wrong
value and a lost layout keep verdicts of their own.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles, training
from kdist_props.contract.specs import DISTRIBUTED
from kdist_props.properties import tier_b
from kdist_props.strategies.models import CHECKPOINT_ROUTES, checkpoint_examples


@pytest.mark.clause("model.checkpoint")
@given(data=st.data())
def test_loaded_weights_read_the_saved_values(kdist, data):
    example = data.draw(checkpoint_examples(kdist.world_size), label="checkpoint")
    saved = training.initial_weights(example.model)
    for rank, observed in enumerate(kdist.run(tier_b.checkpoint, example)):
        oracles.assert_model_reads(observed, saved, rank, example, when=" after load_weights")


@pytest.mark.clause("model.checkpoint")
@given(data=st.data())
def test_a_distributed_model_keeps_its_layout_through_load_weights(kdist, data):
    into_distributed = tuple(route for route in CHECKPOINT_ROUTES if route[1] == DISTRIBUTED)
    example = data.draw(checkpoint_examples(kdist.world_size, into_distributed), label="checkpoint")
    saved = training.initial_weights(example.model)
    for rank, observed in enumerate(kdist.run(tier_b.checkpoint, example)):
        oracles.assert_model_layout(observed, example.distribution, saved, rank, example, when=" after load_weights")
