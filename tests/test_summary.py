"""The typed run summary: what an xdist worker hands over, and how the controller merges it."""

import json
import statistics

from pytest_userflow.gate import BudgetUse, Check
from pytest_userflow.model import (
    FlowTally,
    KeyValues,
    ProcessSummary,
    SessionShare,
    SinkNotes,
    merge,
)


def worker(name, values, status="Passed"):
    use = BudgetUse()
    use.note(f"test_{name}.py::t", "Login", ["Login Time"], ["Login Time"])
    return ProcessSummary(
        worker=name,
        device=f"{name}@host",
        flows={"Login": FlowTally(1, {status: 1}, {"local": len(values)})},
        keys=[KeyValues("Login", "Login Time", None, None, "ms", len(values), values)],
        pending_tests=1,
        pending_measurements=2,
        reruns=[(f"test_{name}.py::t", 2)],
        tests=[{"nodeid": f"test_{name}.py::t", "measurements": []}],
        checks=[
            Check(
                f"test_{name}.py::t",
                "Login",
                "Login Time",
                130.0,
                "ms",
                "regression",
                "baseline 100 (median of 10)",
                "regressed",
                30.0,
                2.0,
                baseline=100.0,
                device=f"{name}@host",
            )
        ],
        no_history=["Login/FPS (2)"],
        budget_use=use,
        errors=[f"an error on {name}"],
        foreign_tags=[],
        sink=SinkNotes(unroutable=["t"], shared_sessions={"s": SessionShare("Login", 2, "Failed")}),
    )


def test_a_summary_crosses_to_the_controller_as_json_whole():
    summary = worker("gw0", [1.0, 2.5])
    assert ProcessSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_merge_takes_the_median_of_every_value_not_of_the_workers_medians():
    # gw0's median is 1, gw1's 100: the mean of medians would be 50.5, the run's median is 2.
    total = merge([worker("gw0", [1.0, 1.0, 2.0]), worker("gw1", [100.0, 100.0])])
    (key,) = total.keys
    assert sorted(key.values) == [1.0, 1.0, 2.0, 100.0, 100.0] and key.count == 5
    assert statistics.median(key.values) == 2.0
    assert total.flows["Login"] == FlowTally(2, {"Passed": 2}, {"local": 5})
    assert (total.pending_tests, total.pending_measurements) == (2, 4)
    assert [c.device for c in total.checks] == ["gw0@host", "gw1@host"]
    assert total.no_history == ["Login/FPS (2)"]
    assert total.errors == ["an error on gw0", "an error on gw1"]
    assert total.budget_use is not None and total.budget_use.recorded == {"Login Time"}
