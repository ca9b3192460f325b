"""variable.init in the reference target: what the contract says, written
down. Every rank runs the variable's Keras initializer on the GLOBAL shape,
with no distribution, then takes rank 0's value (what torch's
distribute_tensor does by default): a seeded program gets the single-process
value, and replicas agree even where the program never seeded and each rank
drew other numbers. Each rank then keeps its own shard."""

import keras
import torch
import torch.distributed as dist

from kdist_props.contract import keras_programs


class ReferenceInitializers:
    """Mixed into ReferenceTarget; uses its build_model."""

    def build_initialized_model(self, example, distribution, device_mesh):
        initializers = keras_programs.initializer_objects(example)
        initial = {path: self._initial_value(distribution, path, initializer, shape, example.model.dtype)
                   for (path, shape), initializer in zip(example.model.variable_shapes(), initializers)}
        return self.build_model(example.model, distribution, device_mesh, initial)

    def _initial_value(self, distribution, path, initializer, shape, dtype):
        """The global value of one variable, the same on every rank."""
        value = self._initializer_value(distribution, path, initializer, shape, dtype)
        dist.broadcast(value, src=0)
        return value

    def _initializer_value(self, distribution, path, initializer, shape, dtype):
        """What `initializer` gives at the global shape on this rank (distribution
        and path: for the mutants that get them wrong)."""
        return torch.from_numpy(keras.ops.convert_to_numpy(initializer(shape, dtype=dtype)).copy())
