"""The target's life on a rank (RunRequest.setup): which target a run uses,
when it starts fresh, and when its per-example state is forgotten.

Above the cluster, which only calls `setup(ctx, request)` before a body.
"""

from kdist_props import targets

# Modules a rank imports before its first run (fork server and torchrun ranks):
# the first example of a test must not pay for them.
RANK_MODULES = ("torch", "torch.distributed", "torch.distributed.tensor", "keras", "kdist_props.targets.keras",
                "kdist_props.targets.mutants", "kdist_props.properties.lifecycle", "kdist_props.properties.tier_a",
                "kdist_props.properties.tier_b", "kdist_props.properties.training", "kdist_props.properties.meshes",
                "kdist_props.properties.initializers", "kdist_props.properties.batch_norm",
                "kdist_props.properties.metrics")


def prepare_target(ctx, request):
    """Give `ctx` the target the request names. clean_target (the first run of
    a test): a new instance and a Keras with no global state (Keras keeps
    caches in keras.src.backend.common.global_state, which clear_session
    replaces wholesale; torch's process groups survive it). Every run that is
    not a later step of a stateful program starts with no active distribution."""
    if request.target is None:
        return
    if request.clean_target:
        import keras

        keras.backend.clear_session()
        ctx.target = targets.load(request.target, fresh=True)
    elif ctx.target is None or ctx.target.name != request.target:
        ctx.target = targets.load(request.target)
    if not request.stateful:
        ctx.target.reset()


def fresh_target(ctx):
    """A new instance of the current target: no cache left from earlier runs."""
    ctx.target = targets.load(ctx.target.name, fresh=True)
