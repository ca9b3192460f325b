"""Small dense models, their distributions and their training runs (Tier B)."""

from hypothesis import strategies as st

from kdist_props.contract.specs import DATA_PARALLEL, MODEL_PARALLEL, DistributionSpec, MeshSpec, ModelSpec, TrainSpec
from kdist_props.strategies.tensors import seeds

ACTIVATIONS = ("linear", "relu", "tanh")
# float32 only: Keras computes Dense layers of float64 in float32 (its type
# promotion), a dtype-policy question outside the distribution contract.
TRAIN_DTYPES = ("float32",)
OPTIMIZERS = ("sgd", "adam")  # Adam's first step is ~lr*sign(grad) and hides averaging bugs: draw both
ENTRIES = ("fit", "train_on_batch")


@st.composite
def model_specs(draw, max_layers=3):
    layers = draw(st.integers(1, max_layers), label="layers")
    # Size-1 and small odd widths land on uneven shards of the model axis.
    widths = tuple(draw(st.lists(st.integers(1, 6), min_size=layers + 1, max_size=layers + 1), label="widths"))
    return ModelSpec(
        widths=widths,
        biases=tuple(draw(st.lists(st.booleans(), min_size=layers, max_size=layers), label="biases")),
        activations=tuple(draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=layers, max_size=layers),
                               label="activations")),
        dtype=draw(st.sampled_from(TRAIN_DTYPES), label="model dtype"),
        seed=draw(seeds, label="weights seed"),
    )


@st.composite
def model_distributions(draw, world_size, model, kind=None):
    """DataParallel over every rank, or ModelParallel on a (1, world) mesh with
    kernels and biases sharded on drawn dims (or replicated); `kind` fixes which."""
    kind = kind or draw(st.sampled_from([DATA_PARALLEL, MODEL_PARALLEL]), label="distribution")
    ranks = tuple(range(world_size))
    if kind == DATA_PARALLEL:
        mesh = MeshSpec(shape=(world_size,), axis_names=("batch",), ranks=ranks)
        return DistributionSpec(kind=kind, mesh=mesh, batch_dim_name="batch")
    mesh = MeshSpec(shape=(1, world_size), axis_names=("batch", "model"), ranks=ranks)
    layout_map = []
    for path, shape in model.variable_shapes():
        dim = draw(st.sampled_from([None, *range(len(shape))]), label=f"{path} sharded dim")
        layout_map.append((f".*{path}", tuple("model" if d == dim else None for d in range(len(shape)))))
    return DistributionSpec(kind=kind, mesh=mesh, layout_map=tuple(layout_map), batch_dim_name="batch")


@st.composite
def train_specs(draw, world_size, entry=None, kind=None):
    """A training run; `entry` fixes the entry point (fit or train_on_batch) and
    `kind` the distribution (DataParallel or ModelParallel), else they are drawn."""
    model = draw(model_specs(), label="model")
    per_rank = draw(st.integers(1, 3), label="per-rank batch")
    optimizer = draw(st.sampled_from(OPTIMIZERS), label="optimizer")
    # The oracle bounds one Adam step only (training.train says why); SGD, which
    # shows averaging bugs best, gets several.
    steps = 1 if optimizer == "adam" else draw(st.integers(1, 3), label="steps")
    return TrainSpec(
        model=model,
        distribution=draw(model_distributions(world_size, model, kind), label="distribution"),
        optimizer=optimizer,
        learning_rate=draw(st.sampled_from([0.125, 0.25, 0.5]), label="learning rate"),
        steps=steps,
        global_batch=per_rank * world_size,
        entry=entry or draw(st.sampled_from(ENTRIES), label="entry point"),
        data_seed=draw(seeds, label="data seed"),
    )
