"""Small dense models, their distributions, their training runs and checkpoints (Tier B)."""

from hypothesis import strategies as st

from kdist_props.contract.training import ONE_STEP_OPTIMIZERS
from kdist_props.contract.specs import (DATA_PARALLEL, DISTRIBUTED, MODEL_PARALLEL, UNDISTRIBUTED, CheckpointExample,
                                       DistributionSpec, MeshSpec, ModelSpec, TrainSpec)
from kdist_props.strategies.meshes import device_orders, factorizations
from kdist_props.strategies.tensors import seeds

ACTIVATIONS = ("linear", "relu", "tanh")
# float32 only: Keras computes Dense layers of float64 in float32 (its type
# promotion), a dtype-policy question outside the distribution contract.
TRAIN_DTYPES = ("float32",)
# Adam's first step is ~lr*sign(grad) and hides averaging bugs: SGD shows them.
# AdamW is Adam with a weight decay of its own; any of them may decay and clip.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LOSS_REDUCTIONS = ("sum_over_batch_size", "sum")
DATA_KINDS = ("numpy", "tensor")  # what a user hands fit and train_on_batch
# Powers of two: lr * weight_decay * w is exact in float32, so a wrong decay
# cannot hide in rounding. clipnorm from below typical gradient norms to
# above them, so that some gradients are clipped and some not.
WEIGHT_DECAYS = (0.0625, 0.25)
CLIPNORMS = (0.5, 2.0, 16.0)
ENTRIES = ("fit", "train_on_batch")


@st.composite
def model_specs(draw, min_layers=1, max_layers=3):
    layers = draw(st.integers(min_layers, max_layers), label="layers")
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
def model_distributions(draw, world_size, model, kind=None, every_factorisation=True):
    """DataParallel or ModelParallel (`kind` fixes which) on a mesh as users
    draw them: any factorisation of the world size into (batch, model), and
    for DataParallel also the 1-D (world,) mesh; every_factorisation=False
    keeps to (world,) for DataParallel and (1, world) for ModelParallel.
    ModelParallel shards kernels and biases on drawn dims of the model axis,
    or leaves them replicated."""
    kind = kind or draw(st.sampled_from([DATA_PARALLEL, MODEL_PARALLEL]), label="distribution")
    shapes = factorizations(world_size, 2) if every_factorisation else [(1, world_size)]
    if kind == DATA_PARALLEL:
        shapes = [(world_size,), *shapes] if every_factorisation else [(world_size,)]
    shape = draw(st.sampled_from(shapes), label="mesh shape")
    # DataParallel batches over the mesh's first axis (as Keras does).
    mesh = MeshSpec(shape=shape, axis_names=("batch", "model")[:len(shape)],
                    ranks=draw(device_orders(world_size), label="device order"))
    if kind == DATA_PARALLEL:
        return DistributionSpec(kind=kind, mesh=mesh, batch_dim_name="batch")
    layout_map = []
    for path, shape in model.variable_shapes():
        dim = draw(st.sampled_from([None, *range(len(shape))]), label=f"{path} sharded dim")
        layout_map.append((f".*{path}", tuple("model" if d == dim else None for d in range(len(shape)))))
    return DistributionSpec(kind=kind, mesh=mesh, layout_map=tuple(layout_map), batch_dim_name="batch")


@st.composite
def train_specs(draw, world_size, entry=None, kind=None, every_factorisation=True, freeze=None, decay=True):
    """A training run; `entry` fixes the entry point (fit or train_on_batch) and
    `kind` the distribution (DataParallel or ModelParallel), else they are
    drawn; every_factorisation as model_distributions takes it. `freeze`
    freezes some layers (never all): once the model is "built", or once it is
    "trained" for some steps (SGD, whose steps the oracle bounds beyond one).
    decay=False draws no weight decay (nor AdamW): a decayed variable moves
    whether or not it gets a gradient."""
    model = draw(model_specs(min_layers=2 if freeze else 1), label="model")
    frozen = ()
    if freeze:
        layers = range(len(model.activations))
        frozen = tuple(sorted(draw(st.sets(st.sampled_from(layers), min_size=1, max_size=len(layers) - 1),
                                   label="frozen layers")))
    distribution = draw(model_distributions(world_size, model, kind, every_factorisation), label="distribution")
    per_slice = draw(st.integers(1, 3), label="per-slice batch")
    optimizers = [name for name in OPTIMIZERS if decay or name != "adamw"]
    optimizer = draw(st.sampled_from(("sgd",) if freeze == "trained" else optimizers), label="optimizer")
    # The oracle bounds one step of the adaptive optimizers only (training.train
    # says why); SGD, which shows averaging bugs best, gets several.
    steps = 1 if optimizer in ONE_STEP_OPTIMIZERS else draw(st.integers(1, 3), label="steps")
    decays = WEIGHT_DECAYS if optimizer == "adamw" else (None, *WEIGHT_DECAYS)  # AdamW always decays
    if not decay:
        decays = (None,)
    freeze_after = 0
    if freeze == "trained":
        steps = max(steps, 2)  # a step before the freeze and one after it
        freeze_after = draw(st.integers(1, steps - 1), label="steps before the freeze")
    return TrainSpec(
        model=model,
        distribution=distribution,
        optimizer=optimizer,
        learning_rate=draw(st.sampled_from([0.125, 0.25, 0.5]), label="learning rate"),
        steps=steps,
        global_batch=per_slice * distribution.mesh.axis_size(distribution.batch_dim_name),
        entry=entry or draw(st.sampled_from(ENTRIES), label="entry point"),
        data_seed=draw(seeds, label="data seed"),
        frozen=frozen,
        freeze_after=freeze_after,
        loss_reduction=draw(st.sampled_from(LOSS_REDUCTIONS), label="loss reduction"),
        weight_decay=draw(st.sampled_from(decays), label="weight decay"),
        clipnorm=draw(st.sampled_from((None, *CLIPNORMS)), label="clipnorm"),
        data_kind=draw(st.sampled_from(DATA_KINDS), label="data kind"),
    )


# A checkpoint between two models: at least one built under the distribution.
CHECKPOINT_ROUTES = ((DISTRIBUTED, DISTRIBUTED), (DISTRIBUTED, UNDISTRIBUTED), (UNDISTRIBUTED, DISTRIBUTED))


@st.composite
def checkpoint_examples(draw, world_size, routes=CHECKPOINT_ROUTES):
    """save_weights then load_weights between two models of one dense stack,
    along a route drawn from `routes` ((saved from, loaded into)); the
    distribution keeps to (world,) DataParallel and (1, world) ModelParallel."""
    model = draw(model_specs(), label="model")
    distribution = draw(model_distributions(world_size, model, every_factorisation=False), label="distribution")
    saved_from, loaded_into = draw(st.sampled_from(routes), label="route")
    return CheckpointExample(model, distribution, saved_from, loaded_into)
