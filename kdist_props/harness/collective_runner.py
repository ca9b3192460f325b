"""The `kdist` of a test run by every rank of a torchrun job itself (the repro
scripts): each rank runs the body with the pool's own code (rank.execute,
the target's lifecycle as setup) and the replies are gathered with a
collective, so every rank sees every rank's observation, as the driver does.

Imports torch, Keras and the suite only (no pytest, no Hypothesis): a repro
script bundles it.
"""

import torch.distributed as dist

from kdist_props.cluster.agreement import require_agreement
from kdist_props.cluster.errors import RankError
from kdist_props.cluster.messages import RunRequest
from kdist_props.cluster.rank import RankContext, execute
from kdist_props.properties.lifecycle import prepare_target
from kdist_props.targets.base import Incompatible


class CollectiveRunner:
    """Runner's interface (harness/runner.py) for one rank of a torchrun job."""

    def __init__(self, rank, world_size, device, target):
        self.ctx = RankContext(rank, world_size, device)
        self.world_size, self.device, self.target = world_size, device, target
        self._seq = 0
        self._clean_target = True

    def run(self, body, example, *, agree=False, stateful=False, starts_state=False):
        self._seq += 1
        request = RunRequest(self._seq, body, example, self.target, stateful and not starts_state,
                             self._clean_target, prepare_target)
        self._clean_target = False
        replies = [None] * self.world_size
        dist.all_gather_object(replies, execute(self.ctx, request))
        raised = {reply.rank: reply.value for reply in replies if not reply.ok}
        if raised:
            raise RankError.of(raised, self.world_size)
        observations = [reply.value for reply in replies]
        if agree:
            require_agreement(observations)
        return observations

    def incompatible(self, what):
        raise Incompatible(what)
