"""The History interface, one suite for every implementation: a SQLite file and a
PostgreSQL database (``store_location`` gives each test a fresh one of each)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import EVERY_ROW, pick

from pytest_userflow.gate import Check
from pytest_userflow.model import Accept, Measurement, RunInfo, TestRecord
from pytest_userflow.storage import Query, StoreError, open_store


@pytest.fixture
def history(store_location: str) -> Iterator[Any]:
    store = open_store(store_location)
    yield store
    store.close()


def run_info(run_id: str, started: float) -> RunInfo:
    return RunInfo(run_id, started, "host-a", "abc123", "main", "build-7", "local")


def record(
    nodeid: str,
    flow: str,
    values: dict[str, Any],
    *,
    at: float,
    status: str = "Passed",
    outcome: str | None = None,
    device: str | None = None,
    worker: str | None = None,
    event: str | None = None,
) -> TestRecord:
    rec = TestRecord(nodeid, flow, "the flow", device=device, worker=worker)
    rec.measurements = [Measurement(k, v, "time", "ms") for k, v in values.items()]
    rec.end(status, None if status == "Passed" else "it broke", outcome)
    rec.event_ts = at
    if event is not None:
        rec.perf_event_id = event
    return rec


def test_a_new_history_reads_as_empty(history) -> None:
    assert history.runs() == []
    assert history.flows() == []
    assert history.tests() == []
    assert list(history.measurements(EVERY_ROW)) == []
    assert history.recent_values("Login", "t", 5) == []
    assert history.run_tests() == {}
    assert history.checks(["r1"]) == []
    assert not history.exists
    history.check()
    history.finish_run("r1", "passed")  # nothing recorded: nothing to note
    assert not history.exists


def test_tests_runs_and_flows_are_listed_with_their_counts(history) -> None:
    first, second = run_info("run-aaa1", 1000.0), run_info("run-bbb2", 2000.0)
    history.add_test(record("t.py::test_a", "Login", {"t": 10, "u": 1.5}, at=1001.0), first)
    history.add_test(record("t.py::test_b", "Pay", {"t": 20}, at=1002.0), first)
    history.add_test(
        record("t.py::test_a", "Login", {"t": 12}, at=2001.0, status="Failed", worker="gw1"),
        second,
    )
    history.finish_run("run-aaa1", "passed")
    assert history.exists
    runs = history.runs()
    assert pick(runs, "run_id", "tests", "measurements", "outcome", "host", "git_commit") == [
        ("run-bbb2", 1, 1, None, "host-a", "abc123"),
        ("run-aaa1", 2, 3, "passed", "host-a", "abc123"),
    ]
    assert runs[1]["finished_at"] is not None
    assert pick(history.runs(limit=1), "run_id") == [("run-bbb2",)]
    assert pick(history.flows(), "name", "description", "tests", "measurements") == [
        ("Login", "the flow", 2, 3),
        ("Pay", "the flow", 1, 1),
    ]
    assert history.run_tests() == {
        "run-aaa1": {"t.py::test_a", "t.py::test_b"},
        "run-bbb2": {"t.py::test_a"},
    }
    assert history.match_runs(["run-b"]) == ["run-bbb2"]
    with pytest.raises(StoreError, match="matches 2 of the 2 runs"):
        history.match_runs(["run-"])
    with pytest.raises(StoreError, match="matches 0"):
        history.match_runs(["nope"])
    tests = history.tests()
    assert pick(tests, "nodeid", "flow", "status", "status_message", "worker", "run_id") == [
        ("t.py::test_a", "Login", "Passed", None, None, "run-aaa1"),
        ("t.py::test_b", "Pay", "Passed", None, None, "run-aaa1"),
        ("t.py::test_a", "Login", "Failed", "it broke", "gw1", "run-bbb2"),
    ]
    assert tests[0]["measurements"] == [
        {"key": "t", "value": 10, "type": "time", "units": "ms"},
        {"key": "u", "value": 1.5, "type": "time", "units": "ms"},
    ]
    assert pick(history.tests("run-bbb2", worker="gw1"), "nodeid") == [("t.py::test_a",)]
    assert history.tests("run-bbb2", worker="gw0") == []


def test_values_come_back_as_they_were_recorded(history) -> None:
    values = {"int": 2**62 + 1, "float": 0.1 + 0.2, "text": "fast", "neg": -7, "zero": 0.0}
    history.add_test(record("t.py::test_v", "Values", values, at=5.0), run_info("r", 1.0))
    got = {m["key"]: m["value"] for m in history.tests()[0]["measurements"]}
    assert got == values
    assert [type(v) for v in got.values()] == [type(v) for v in values.values()]
    rows = list(history.measurements(Query("Values")))
    assert [(r["key_name"], r["value"]) for r in rows] == list(values.items())


def test_the_measurement_listing_filters_as_the_api_does(history) -> None:
    run = run_info("run-1", 1.0)
    history.add_test(record("t::a", "F", {"k": 1, "j": 2}, at=10.0), run)
    history.add_test(record("t::b", "F", {"k": 3}, at=20.0, status="Failed"), run)
    history.add_test(record("t::c", "F", {"k": 5}, at=30.0, status="Excluded"), run)
    history.add_test(record("t::d", "G", {"k": 7}, at=40.0), run_info("run-2", 2.0))

    def values(query: Query) -> list[Any]:
        return [r["value"] for r in history.measurements(query)]

    assert values(Query()) == [1, 2, 3, 7]  # passed and failed (and not_set) by default
    assert values(EVERY_ROW) == [1, 2, 3, 5, 7]
    assert values(Query("F", keys=["k"])) == [1, 3]
    assert values(Query("F", statuses=["excluded"])) == [5]
    assert values(Query(statuses=["not_set"])) == []
    assert values(Query(start_time=20, end_time=40)) == [3, 7]
    assert values(Query(run_ids=["run-2"])) == [7]
    assert values(Query(limit=2, offset=1)) == [2, 3]
    assert values(Query(offset=3)) == [7]
    row = next(iter(history.measurements(Query("G"))))
    assert {k: row[k] for k in ("user_flow_name", "key_name", "status", "nodeid", "run_id")} == {
        "user_flow_name": "G",
        "key_name": "k",
        "status": "Passed",
        "nodeid": "t::d",
        "run_id": "run-2",
    }
    assert list(row) == [
        "user_flow_id", "user_flow_name", "perf_event_id", "event_time", "session_id",
        "key_name", "key_type", "key_units", "value", "status", "outcome", "run_id", "nodeid",
        "worker", "device_address", "perf_key_id",
    ]  # fmt: skip
    with pytest.raises(StoreError, match="no user flow named or with id 'H'"):
        list(history.measurements(Query("H")))
    with pytest.raises(StoreError, match="status must be one of"):
        list(history.measurements(Query(statuses=["lost"])))


def test_a_baseline_is_the_newest_passed_values_of_its_test_and_device(history) -> None:
    for i in range(6):
        run = run_info(f"run-{i}", float(i))
        history.add_test(record("t::a", "F", {"k": 100 + i}, at=10.0 + i), run)
        history.add_test(record("t::a", "F", {"k": 500 + i}, at=10.5 + i, device="d@h"), run)
        history.add_test(record("t::b", "F", {"k": 900 + i}, at=10.7 + i), run)
    history.add_test(record("t::a", "F", {"k": 1}, at=99.0, status="Failed"), run_info("x", 9))
    assert history.recent_values("F", "k", 3, nodeid="t::a") == [105, 104, 103]
    assert history.recent_values("F", "k", 2, nodeid="t::a", device="d@h") == [505, 504]
    assert history.recent_values("F", "k", 2, nodeid="t::a", exclude_run="run-5") == [104, 103]
    assert history.recent_values("F", "k", 3) == [905, 505, 105]
    assert history.recent_values("F", "other", 3) == []
    assert history.recent_values("Nope", "k", 3) == []


def test_checks_and_the_run_summary(history) -> None:
    run = run_info("run-1", 1.0)
    rec = record("t::a", "F", {"k": 10, "label": "x"}, at=5.0, device="d@h", worker="gw0")
    rec.checks = [
        Check("t::a", "F", "k", 10.0, "ms", "budget", "<= 5", "over budget", low=None, high=5.0),
        Check("t::a", "F", "k", 10.0, "ms", "regression", "baseline 8", "ok", 25.0, 3.0,
              6.0, 10.0, 8.0),
    ]  # fmt: skip
    history.add_test(rec, run)
    history.add_test(record("t::b", "F", {"k": 20}, at=6.0, status="Excluded"), run)
    history.add_test(record("t::c", "F", {"k": 30}, at=7.0, status="Failed"), run)
    checks = history.checks(["run-1"])
    assert pick(checks, "nodeid", "key", "kind", "verdict", "high", "baseline", "limit") == [
        ("t::a", "k", "budget", "over budget", 5.0, None, "<= 5"),
        ("t::a", "k", "regression", "ok", 10.0, 8.0, "baseline 8"),
    ]
    assert checks[1]["change_pct"] == 25.0 and checks[1]["device"] == "d@h"
    summary = history.run_summary("run-1")
    assert summary["flows"]["F"]["tests"] == 3
    assert summary["flows"]["F"]["statuses"] == {"Passed": 1, "Excluded": 1, "Failed": 1}
    assert summary["flows"]["F"]["left_out"] == 1
    assert pick(summary["keys"], "key", "device", "count", "values") == [
        ("k", None, 1, [30]),
        ("k", "d@h", 1, [10]),
        ("label", "d@h", 1, []),
    ]
    assert summary["pending"] == {"tests": 0, "measurements": 0, "team": 0}
    one = history.run_summary("run-1", worker="gw0")
    assert one["flows"]["F"]["tests"] == 1
    assert history.run_summary("run-1", worker=None)["flows"]["F"]["tests"] == 2


def test_postgresql_keeps_a_test_once_however_often_it_is_delivered(pg_url: str) -> None:
    run = run_info("run-1", 1.0)
    rec = record("t::a", "F", {"k": 1, "j": 2}, at=5.0, event="event-1")
    stores = [open_store(pg_url) for _ in range(4)]
    try:
        threads = [threading.Thread(target=store.add_test, args=(rec, run)) for store in stores * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pick(stores[0].runs(), "tests", "measurements") == [(1, 2)]
        assert len(stores[0].flows()) == 1
    finally:
        for store in stores:
            store.close()


def test_postgresql_errors_are_store_errors_without_the_password(pg_url: str) -> None:
    secret = "s3cr3t-pw-0123"
    url = pg_url.replace("postgres@", f"postgres:{secret}@").replace(":5432/", ":1/")
    store = open_store(url)
    assert secret not in store.location and "postgres@127.0.0.1:1" in store.location
    with pytest.raises(StoreError) as caught:
        store.runs()
    assert "cannot connect to the userflow store" in str(caught.value)
    assert secret not in str(caught.value)


def test_a_postgresql_url_libpq_cannot_read_is_a_store_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="is not a PostgreSQL URL") as caught:
        open_store("postgresql://ada:s3cret@db:5432/perf?sslmode=sometimes&nonsense=1")
    assert "s3cret" not in str(caught.value)


def test_postgresql_refuses_a_schema_of_another_version(pg_url: str) -> None:
    import psycopg

    store = open_store(pg_url)
    store.add_test(record("t::a", "F", {"k": 1}, at=5.0), run_info("r", 1.0))
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE userflow_schema SET version = 99")
    store = open_store(pg_url)
    with pytest.raises(StoreError, match="schema of version 99"):
        store.check()
    store.close()


def test_a_test_only_the_gate_failed_keeps_its_own_outcome_apart_from_its_status(history) -> None:
    run = run_info("run-1", 1.0)
    history.add_test(record("t::ok", "F", {"k": 1}, at=10.0), run)
    history.add_test(
        record("t::gate", "F", {"k": 2}, at=20.0, status="Failed", outcome="Passed"), run
    )
    history.add_test(record("t::own", "F", {"k": 3}, at=30.0, status="Failed"), run)
    history.add_test(record("t::skip", "F", {"k": 4}, at=40.0, status="Excluded"), run)
    assert pick(history.tests(), "nodeid", "status", "outcome") == [
        ("t::ok", "Passed", "Passed"),
        ("t::gate", "Failed", "Passed"),
        ("t::own", "Failed", "Failed"),
        ("t::skip", "Excluded", "Excluded"),
    ]

    def listed(query: Query) -> list[tuple[Any, ...]]:
        return pick(history.measurements(query), "value", "status", "outcome")

    assert listed(Query(outcomes=["passed"])) == [(1, "Passed", "Passed"), (2, "Failed", "Passed")]
    assert listed(Query(statuses=["failed"])) == [(2, "Failed", "Passed"), (3, "Failed", "Failed")]
    assert listed(Query(statuses=["failed"], outcomes=["failed"])) == [(3, "Failed", "Failed")]
    assert listed(Query(outcomes=["excluded"])) == []  # the default statuses leave it out
    assert listed(Query(statuses=["excluded"], outcomes=["excluded", "passed"])) == [
        (4, "Excluded", "Excluded")
    ]
    with pytest.raises(StoreError, match="outcome must be one of passed, failed, excluded"):
        list(history.measurements(Query(outcomes=["gated"])))
    assert history.run_summary("run-1")["flows"]["F"]["by_gate"] == 1
    # what a copy into another history takes carries both
    assert [(s.record.status, s.record.outcome) for s in history.records()] == [
        ("Passed", "Passed"),
        ("Failed", "Passed"),
        ("Failed", "Failed"),
        ("Excluded", "Excluded"),
    ]


def test_the_run_summary_keeps_a_keys_units_apart(history) -> None:
    run = run_info("run-1", 1.0)
    history.add_test(record("t::a", "F", {"k": 1.5}, at=10.0), run)
    rec = record("t::b", "F", {}, at=20.0)
    rec.measurements = [Measurement("k", 1800, "time", "ms")]
    history.add_test(rec, run)
    rec = record("t::c", "F", {}, at=30.0)
    rec.measurements = [Measurement("k", 2.5, "time", None)]
    history.add_test(rec, run)
    assert pick(history.run_summary("run-1")["keys"], "key", "units", "count", "values") == [
        ("k", None, 1, [2.5]),
        ("k", "ms", 2, [1.5, 1800]),
    ]


def accept(flow: str, key: str, run: str, at: float, **given: Any) -> Accept:
    return Accept(flow, key, run, created_at=at, user="ada", host="box", **given)


def test_accepts_are_kept_listed_and_taken_back(history) -> None:
    history.add_test(record("t::a", "F", {"k": 1}, at=10.0), run_info("run-1", 5.0))
    assert history.accepts(undone=True) == []
    with pytest.raises(StoreError, match="no run 'nope' to accept a level from"):
        history.add_accept(accept("F", "k", "nope", 50.0))
    first = history.add_accept(accept("F", "k", "run-1", 50.0, reason="TLS 1.3"))
    assert (first.id, first.from_started, first.reason, first.who) == (1, 5.0, "TLS 1.3", "ada@box")
    second = history.add_accept(accept("F", "j", "run-1", 60.0, nodeid="t::a", device="d@h"))
    assert second.id == 2
    assert history.accepts() == [first, second]
    assert history.accepts(flow="F", key="j") == [second]
    assert history.accepts(flow="G", key="k") == []
    undone = history.undo_accept(1)
    assert undone.id == 1 and undone.undone_at is not None
    assert history.accepts() == [second]
    assert [(a.id, a.undone_at) for a in history.accepts(undone=True)] == [
        (1, undone.undone_at),
        (2, None),
    ]
    with pytest.raises(StoreError, match="accept 1 was taken back already in"):
        history.undo_accept(1)
    with pytest.raises(StoreError, match=r"accept 7 is not in .*accept --list lists them"):
        history.undo_accept(7)


def test_an_accepted_level_is_the_baseline_and_what_the_gate_fails_after_it_is_not(
    history,
) -> None:
    def add(i: int, value: float, **given: Any) -> None:
        history.add_test(
            record("t::a", "F", {"k": value}, at=100.0 * i + 1, **given),
            run_info(f"run-{i}", 100.0 * i),
        )
        history.add_test(
            record("t::b", "F", {"k": value + 1000}, at=100.0 * i + 2),
            run_info(f"run-{i}", 100.0 * i),
        )

    for i in range(4):
        add(i, 100 + i)
    for i in range(4, 7):  # a kept step the gate failed
        add(i, 130 + i, status="Failed", outcome="Passed")
    add(7, 999, status="Failed")  # a test that failed on its own
    assert history.recent_values("F", "k", 10, nodeid="t::a") == [103, 102, 101, 100]
    history.add_accept(accept("F", "k", "run-5", 750.0, nodeid="t::a"))
    # from the accepted run on, with what only the gate failed before the accept was made
    assert history.recent_values("F", "k", 10, nodeid="t::a") == [136, 135]
    add(8, 150, status="Failed", outcome="Passed")  # the gate fails it after the accept
    add(9, 137)
    assert history.recent_values("F", "k", 10, nodeid="t::a") == [137, 136, 135]
    assert history.recent_values("F", "k", 2, nodeid="t::a", exclude_run="run-9") == [136, 135]
    # the accept covers t::a only: t::b and the flow's baseline are as they were
    assert history.recent_values("F", "k", 3, nodeid="t::b") == [1137, 1150, 1999]
    assert history.recent_values("F", "k", 2) == [1137, 137]
    # a flow-wide accept made later decides, until it is taken back
    newer = history.add_accept(accept("F", "k", "run-8", 950.0))
    assert history.recent_values("F", "k", 10, nodeid="t::a") == [137, 150]
    assert history.recent_values("F", "k", 10, nodeid="t::a", device="d@h") == []
    history.undo_accept(newer.id)
    assert history.recent_values("F", "k", 10, nodeid="t::a") == [137, 136, 135]


def test_a_branch_history_up_to_a_fork_point(history) -> None:
    """Runs carry their branch and what they are gated against; the baseline reads one
    branch's runs up to a run (its fork point), and never another branch's."""
    runs = [
        RunInfo("m1", 1000.0, "h", "c1", "main", backend="local", baseline_branch="main"),
        RunInfo("f1", 1500.0, "h", "c9", "topic", backend="local", base_branch="main",
                baseline_branch="main", fork_run="m1"),
        RunInfo("m2", 2000.0, "h", "c2", "main", backend="local", baseline_branch="main"),
    ]  # fmt: skip
    for i, (run, value) in enumerate(zip(runs, (100, 500, 90), strict=True)):
        history.add_test(record("t.py::test_a", "Login", {"t": value}, at=run.started_at + i), run)
    assert pick(history.runs(branch="main"), "run_id") == [("m2",), ("m1",)]
    [topic] = history.runs(branch="topic")
    assert (topic["base_branch"], topic["baseline_branch"], topic["fork_run"]) == (
        "main",
        "main",
        "m1",
    )
    assert history.recent_values("Login", "t", 5, nodeid="t.py::test_a", branch="main") == [90, 100]
    assert history.recent_values(
        "Login", "t", 5, nodeid="t.py::test_a", branch="main", until="m1"
    ) == [100]
    # what the team store is sent (or copy copies) keeps what each run was gated against
    assert [(s.run.run_id, s.run.fork_run) for s in history.records()] == [
        ("m1", None),
        ("f1", "m1"),
        ("m2", None),
    ]
