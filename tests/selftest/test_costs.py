"""The session's time split (costs.py): the target's work, the harness's
overhead (replacements, cold first examples, hang waits), the driver's share."""

from types import SimpleNamespace

import pytest

from kdist_props.cluster.errors import RankHang
from kdist_props.harness.costs import CostLedger, RunTimes, cost_line

pytestmark = pytest.mark.selftest


def test_a_cold_first_run_costs_what_it_took_beyond_the_tests_mean_warm_run():
    times = RunTimes(warm_s=3.0, warm_runs=3, cold=[1.5, 0.5])
    assert times.cold_extra_s() == pytest.approx(0.5)  # 1.5 - 1.0; a cold run under the mean costs nothing
    assert RunTimes(cold=[2.0]).cold_extra_s() == 0.0  # no warm run to compare with


def test_a_hang_is_a_wait_and_anything_else_is_the_targets_work():
    ledger = CostLedger()
    with ledger.run("t", cold=False):
        pass
    with pytest.raises(RankHang):
        with ledger.run("t", cold=False):
            raise RankHang("no reply", {})
    with pytest.raises(ValueError):
        with ledger.run("t", cold=True):
            raise ValueError("the target's own failure")
    assert ledger.hung_runs == 1
    assert ledger.tests["t"].warm_runs == 1 and len(ledger.tests["t"].cold) == 1


def test_the_parts_add_up_to_the_wall_time_and_the_line_names_the_worst_leaker():
    ledger = CostLedger()
    ledger.began -= 100.0
    ledger.runs_s, ledger.waits_s, ledger.hung_runs = 50.0, 10.0, 2
    pools = SimpleNamespace(replacing_s=5.0, replaced_pools=7, first_starts_s=4.0)
    split = ledger.split(pools)
    assert split["target_work_s"] + split["overhead_s"] + split["first_pools_s"] + split["driver_s"] == \
        pytest.approx(split["wall_s"], abs=0.5)
    assert split["overhead_s"] == pytest.approx(15.0)
    leaks = {"a w2": {"groups_per_example": 4.4, "groups_left": 44}, "b w2": {"groups_per_example": 0.1,
                                                                             "groups_left": 1}}
    line = cost_line(split, leaks)
    assert "7 pool replacements" in line and "2 hung examples" in line and "4.4 process groups" in line
    assert "(a w2)" in line
    assert "no process group leaked" in cost_line(split, {"a w1": {"groups_per_example": 0, "groups_left": 0}})
