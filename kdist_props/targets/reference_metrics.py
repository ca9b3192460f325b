"""eval.count-metrics in the reference target: the count of the global batch,
gathered along the batch axis (ranks that share a batch position feed the
same rows and must count them once), with the count model's own math."""

import torch

from kdist_props.targets.reference_models import ReferenceModels


class ReferenceMetrics:
    """Mixed into ReferenceTarget; uses its to_backend_mesh."""

    def evaluate_true_positives(self, distribution, x, y):
        mesh = self.to_backend_mesh(distribution.device_mesh)
        x, y = (ReferenceModels.global_batch(t, mesh, distribution.batch_dim_name).to_local() for t in (x, y))
        predicted = torch.sigmoid(x.sum(1, keepdim=True)) > 0.5  # kernel of ones, no bias; Keras' threshold 0.5
        return float((predicted & (y == 1)).sum())
