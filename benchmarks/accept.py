"""A kept step in fail mode, and ``accept`` (seeded; ``benchmarks/detection.py`` runs it).

Through the real code: a History on a temporary SQLite file, the Gate with its local baseline
(the last 10 values, ``--userflow-regression 20``, noise 3), the run's "worse change confirmed"
line (``gate.confirmed_changes``), the detection ``pytest-userflow changes`` runs, and the run
``pytest-userflow accept`` starts from by default. Each run is one test of one key, kept as
the plugin keeps it: the gate's verdict decides the status sent, the test's own outcome is
passed.

Each history: 15 runs at one level (lognormal noise), then +30% kept for 5 runs. Reported:
the runs at the new level before ``changes`` finds the step (within 2 runs of where it began)
and before the run's line names it, as found within 3 runs; and the same with the readers of
before (passed tests' values only). Then ``accept`` (its default run), 15 runs at the accepted
level (the share that fail), and a further +30% (caught on its first run or not).
Run: ``python benchmarks/accept.py``.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pytest_userflow.analysis import CONFIRMED, find_changes, run_series
from pytest_userflow.gate import (
    BaselineSource,
    Gate,
    accepted_rows,
    confirmed_changes,
    local_fetch,
    local_since,
    newest_change,
)
from pytest_userflow.model import Accept, Measurement, RunInfo, TestRecord
from pytest_userflow.storage import Query
from pytest_userflow.storage.sqlite import SQLiteStore

FLOW, KEY, NODEID = "Login", "Login Time", "tests/test_login.py::test_login"
BEFORE, KEPT, AFTER, HISTORIES = 15, 5, 15, 20
STEP, WITHIN = 1.30, 3


def lower(flow: str, key: str) -> str:
    return "lower"


def one_run(store: SQLiteStore, value: float) -> tuple[RunInfo, bool]:
    """A run of the one test, gated against the history, and whether the gate failed it."""
    run = RunInfo(uuid.uuid4().hex[:16], time.time(), "bench")
    baselines = BaselineSource(local_fetch(store, run), 10)
    gate = Gate([], baselines, pct=20.0, warn_only=False, since=local_since(store, run))
    record = TestRecord(NODEID, FLOW)
    record.measurements = [Measurement(KEY, value, units="ms")]
    record.checks = gate.check(NODEID, FLOW, record.measurements, {})
    failed = [c for c in record.checks if c.failed]
    status = "Failed" if failed else "Passed"
    record.end(status, failed[0].message() if failed else None, outcome="Passed")
    store.add_test(record, run)
    store.finish_run(run.run_id, status.lower())
    return run, bool(failed)


def found_by_changes(store: SQLiteStore, step: str, statuses: dict[str, Any]) -> bool:
    """Whether ``changes`` (its rows: *statuses*) confirms a worse change within 2 runs of
    *step*."""
    runs = {r["run_id"]: r for r in reversed(store.runs())}
    order = list(runs)
    series = run_series(store.measurements(Query(**statuses)))
    return any(
        c["direction"] == "worse"
        and c["state"] == CONFIRMED
        and abs(order.index(c["run_id"]) - order.index(step)) <= 2
        for c in find_changes(series, runs, lower)
    )


def history(rng: random.Random, noise: float, path: Path) -> dict[str, Any]:
    """One history; what each reader saw of its step, and the gate's verdicts after accept."""
    store = SQLiteStore(path)
    try:
        level = 100.0
        for _ in range(BEFORE):
            one_run(store, level * rng.lognormvariate(0, noise))
        level *= STEP
        out: dict[str, Any] = {"changes": None, "line": None, "before": None, "kept_failed": 0}
        step = ""
        for n in range(1, KEPT + 1):
            run, failed = one_run(store, level * rng.lognormvariate(0, noise))
            step = step or run.run_id
            out["kept_failed"] += failed
            if out["changes"] is None and found_by_changes(store, step, {"outcomes": ["passed"]}):
                out["changes"] = n
            if out["before"] is None and found_by_changes(store, step, {"statuses": ["passed"]}):
                out["before"] = n
            if out["line"] is None and confirmed_changes(store, run, lower):
                out["line"] = n
        probe = Accept(FLOW, KEY, "", NODEID)
        ordered = {r["run_id"]: r for r in reversed(store.runs())}
        change = newest_change(accepted_rows(store, probe), ordered)
        out["accepted_at_step"] = change is not None and change["run_id"] == step
        start = change["run_id"] if change else step
        store.add_accept(Accept(FLOW, KEY, start, NODEID, created_at=time.time()))
        out["after_failed"] = sum(
            one_run(store, level * rng.lognormvariate(0, noise))[1] for _ in range(AFTER)
        )
        out["further_caught"] = one_run(store, level * STEP * rng.lognormvariate(0, noise))[1]
        return out
    finally:
        store.close()


def share(values: list[bool]) -> str:
    return f"{sum(values) / len(values):.0%}"


def main() -> None:
    rng = random.Random(2032)
    started = time.perf_counter()
    print(
        f"kept +{STEP - 1:.0%} step in fail mode, {HISTORIES} histories a noise level; "
        f"found within {WITHIN} runs by changes / by the run's line (before: passed only); "
        "then accept"
    )
    print(
        "noise  changes  line  changes before  kept runs failing  accept at the step"
        "  new level failing  further +30% caught"
    )
    with tempfile.TemporaryDirectory() as folder:
        # Each history its own store, copied from one made once: making one waits on the disk.
        empty = Path(folder, "empty.db")
        made = SQLiteStore(empty)
        made.db  # noqa: B018  (opening it makes it)
        made.close()
        for noise in (0.01, 0.05):
            seen = []
            for i in range(HISTORIES):
                path = Path(folder, f"{noise}-{i}.db")
                shutil.copyfile(empty, path)
                seen.append(history(rng, noise, path))

            def within(name: str, seen: list[dict[str, Any]] = seen) -> str:
                return share([s[name] is not None and s[name] <= WITHIN for s in seen])

            kept = sum(s["kept_failed"] for s in seen) / (HISTORIES * KEPT)
            after = sum(s["after_failed"] for s in seen) / (HISTORIES * AFTER)
            print(
                f"{noise:>4.0%}  {within('changes'):>7}  {within('line'):>4}  "
                f"{within('before'):>14}  {kept:>17.0%}  "
                f"{share([s['accepted_at_step'] for s in seen]):>18}  {after:>17.1%}  "
                f"{share([s['further_caught'] for s in seen]):>19}"
            )
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
