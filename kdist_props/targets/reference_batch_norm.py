"""train.batch-norm in the reference target: under DataParallel the batch
statistics are those of the global batch (sums all-reduced, as torch's
SyncBatchNorm does), then Keras' moving-average update. Only the moving
statistics are observed, so only they are computed."""

import torch
import torch.distributed as dist

from kdist_props.contract.batch_norm import MOMENTUM
from kdist_props.targets.reference_models import ReferenceVariable


class ReferenceBatchNorm:
    """Mixed into ReferenceTarget."""

    def train_batch_norm(self, distribution, x, y):
        # Ranks that share a batch position feed the same rows: summed over
        # every rank, numerator and count are scaled alike.
        count = self._batch_sum(torch.tensor(float(len(x))))
        mean = self._batch_sum(x.sum(0)) / count
        variance = self._batch_sum(((x - mean) ** 2).sum(0)) / count
        moving_mean = torch.zeros_like(mean) * MOMENTUM + mean * (1 - MOMENTUM)
        moving_variance = torch.ones_like(variance) * MOMENTUM + variance * (1 - MOMENTUM)
        return (ReferenceVariable("bn/moving_mean", moving_mean, None, trainable=False),
                ReferenceVariable("bn/moving_variance", moving_variance, None, trainable=False))

    def _batch_sum(self, tensor):
        """The sum of `tensor` over every rank's batch."""
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor
