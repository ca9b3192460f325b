"""The interface every target implements (DESIGN.md §4).

Rank-side bodies call these methods; a target never sees a test. Values in and
out are torch tensors (DTensor where distributed) and Keras distribution
objects (DeviceMesh, TensorLayout). A method the target cannot provide raises
Unsupported, and `unsupported(clause)` tells the driver before any rank runs.
Both verdicts are types (cluster.outcome.SuiteVerdict): a rank sends their
status along with what it raised, and the driver reads it from there.
"""


from kdist_props.cluster.outcome import SuiteVerdict


class Unsupported(SuiteVerdict):
    """The target lacks a piece a clause needs; the message names it and the version."""

    status = "unsupported"


class Incompatible(SuiteVerdict):
    """The suite cannot drive the target: a hook exists but has another
    signature or returns another shape. The message says what was found.
    Never a verdict on the target (the report's `incompatible` status)."""

    status = "incompatible"


class Unreadable(Incompatible):
    """An Incompatible of a hook that ran and returned: what it returned is not
    what the suite can read. Where the contract asks for an error (a layout
    that repeats a mesh axis must raise ValueError), returning anything at all
    breaks it, so such a test fails instead of ending incompatible."""


class Target:
    name = "?"

    def version(self):
        raise NotImplementedError

    def describe(self):
        """Facts for the report header."""
        return {"target": self.name, "target_version": self.version()}

    def unsupported(self, clause):
        """Why `clause` cannot run on this target, or None when it can."""
        return None

    def reset(self):
        """Forget per-example global state (the active distribution)."""

    # -- Tier A ------------------------------------------------------------

    def make_distribution(self, spec, device_mesh):
        """A distribution object for `spec` (kdist_props.contract.specs.DistributionSpec) on a Keras DeviceMesh."""
        raise NotImplementedError

    def variable_layout(self, distribution, variable):
        """The Keras TensorLayout the distribution gives a Keras Variable."""
        raise NotImplementedError

    def to_placements(self, layout):
        """torch placements (one per mesh axis) of a Keras TensorLayout (Keras: its backend_layout)."""
        raise NotImplementedError

    def to_backend_mesh(self, device_mesh):
        """The torch DeviceMesh of a Keras DeviceMesh."""
        raise NotImplementedError

    def distribute_tensor(self, value, layout):
        """A DTensor whose global value is `value` (every rank passes the same): a
        tensor (leaf or not, contiguous or not), a numpy array, a variable or a
        DTensor of any layout. `value` itself is left as it was."""
        raise NotImplementedError

    def layout_map_distribution(self, device_mesh, entries, batch_dim_name):
        """ModelParallel(layout_map=..., batch_dim_name=...) of a LayoutMap on
        `device_mesh` filled with `entries` ((key, TensorLayout, tuple or list), ...)."""
        raise NotImplementedError

    def default_data_parallel(self):
        """DataParallel() with no arguments."""
        raise NotImplementedError

    def list_devices(self):
        """keras.distribution.list_devices() with no arguments."""
        raise NotImplementedError

    def distribute_data_input(self, local_batch, layout, batch_dim_name):
        """A DTensor whose global value is the per-rank batches stacked along the batch dim."""
        raise NotImplementedError

    def matmul(self, a, b):
        """matmul of any DTensor / plain tensor mix."""
        raise NotImplementedError

    # -- variables (Tier A wrapping, Tier B storage) --------------------------

    def make_variable(self, distribution, device_mesh, spec, initial):
        """A standalone variable (specs.VariableSpec) created under the distribution
        from the values `initial`: laid out by spec.preassigned when given (an
        explicit layout), else by the distribution; spec.trainable as given."""
        raise NotImplementedError

    def make_explicit_variable(self, distribution, layout, initial, spec):
        """keras.Variable(initial, layout=layout) made with no distribution
        (`distribution` None) or under it; `initial` as the user has it: a
        tensor, a numpy array or a DTensor. A layout with another number of axes
        than the variable's dims is a ValueError naming the variable."""
        raise NotImplementedError

    def variable_value(self, variable):
        """The torch tensor that holds a variable (Keras: `variable.value`)."""
        raise NotImplementedError

    # -- Tier B ------------------------------------------------------------

    def build_model(self, spec, distribution, device_mesh, initial):
        """A model of `spec` (specs.ModelSpec) created under the distribution,
        its variables initialized from `initial` ({path: tensor})."""
        raise NotImplementedError

    def build_undistributed_model(self, spec, initial):
        """A model of `spec` built with no distribution at all, its variables
        initialized from `initial` ({path: tensor})."""
        raise NotImplementedError

    def save_weights(self, model, file):
        """model.save_weights(file): every variable's value, as one process would write it."""
        raise NotImplementedError

    def load_weights(self, model, file):
        """model.load_weights(file) of a file save_weights wrote."""
        raise NotImplementedError

    def build_initialized_model(self, example, distribution, device_mesh):
        """The dense stack of `example` (specs.InitExample) created under the
        distribution, every variable given its Keras initializer after
        keras.utils.set_random_seed(example.seed)."""
        raise NotImplementedError

    def train_batch_norm(self, distribution, x, y):
        """Under the distribution, one fit step of Input -> BatchNormalization ->
        Dense(1) on this rank's batch; the layer's (moving_mean, moving_variance)."""
        raise NotImplementedError

    def evaluate_true_positives(self, distribution, x, y):
        """Under the distribution, evaluate of Input -> Dense "d0" (sigmoid, kernel
        of ones) with TruePositives on this rank's batch; the count it reports."""
        raise NotImplementedError

    def model_variables(self, model):
        """[(path, variable)] in creation order."""
        raise NotImplementedError

    def variable_layout_of(self, variable):
        """(axes, torch placements or None, local shard) of a model variable."""
        raise NotImplementedError

    def read(self, model, variable, how):
        """The value of `variable` read as `how`: convert_to_numpy, numpy or get_weights."""
        raise NotImplementedError

    def get_weights(self, model):
        """Every variable's value, as model.get_weights() lists them."""
        raise NotImplementedError

    def assign(self, variable, value, how):
        """variable.assign / assign_add / assign_sub / set_weights with a plain value, left as it was."""
        raise NotImplementedError

    def train(self, model, spec, x, y):
        """spec.steps steps of spec.optimizer through spec.entry on this rank's
        batch (torch tensors x, y, handed to the entry point as spec.data_kind
        says); returns the loss of every step."""
        raise NotImplementedError

    def freeze_layers(self, model, layers):
        """Set `trainable = False` on the Dense layers d<i> of a built model, i in `layers`."""
        raise NotImplementedError

    def iterations(self, model):
        """The optimizer's iterations variable after training."""
        raise NotImplementedError

    def scope_matmul(self, model, x):
        """Under the model's distribution: keras.ops.matmul(x, first kernel)."""
        raise NotImplementedError

    def variable_matmul(self, distribution, x, variable):
        """Under the distribution: keras.ops.matmul(x, variable) of a plain x."""
        raise NotImplementedError
