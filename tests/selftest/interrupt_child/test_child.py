"""Run only by test_interrupt.py, in a pytest subprocess that it then signals.

Never collected by an ordinary run (tests/selftest/conftest.py ignores this
folder): the test hangs on purpose until the parent interrupts it.
"""

import json
import os

from kdist_props.properties import probes
from kdist_props.contract.specs import FaultExample


def test_hangs(kdist):
    pools = kdist.session.pools
    pool = pools.get(kdist.world_size)
    info = {"ranks": pool.pids, "zygote": pools.zygote.proc.pid, "port": pool.store_port}
    path = os.environ["KDIST_INTERRUPT_INFO"]
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)  # atomic: the parent never reads half a file
    # Rank 1 never answers; the long --kdist-deadline the parent passes keeps
    # the driver waiting in the dispatch until the parent's signal arrives.
    kdist.run(probes.fault, FaultExample("hang", 1))
