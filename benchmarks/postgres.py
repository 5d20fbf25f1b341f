"""The PostgreSQL team store beside the SQLite store, measured.

    python benchmarks/postgres.py                       # the sizes in benchmarks/README.md
    python benchmarks/postgres.py --processes 8 --tests 2000 --runs 1000 --tests-per-run 500
    python benchmarks/postgres.py --smoke               # tiny sizes: the script works

Needs a PostgreSQL server (``USERFLOW_TEST_PG``, default
``postgresql://postgres@127.0.0.1:5432/test``); each case works in a schema of its own,
dropped at the end.

1. ``writers``: P pytest processes started at once, each T no-work tests x 10 values, into
   one PostgreSQL store (each process a folder with its own outbox), against the same
   processes on SQLite stores of their own. Reported: the processes' wall time and the tests'
   own time (the JSON report's durations) on each side, the values delivered a second, and
   whether PostgreSQL holds every value exactly once.
2. ``baseline``: a history of R runs x N tests x 20 keys, written with SQL (``generate_series``)
   in the store's schema; then the gate's baseline query (``History.recent_values`` of one
   test, device and key, the newest 10 passed values) for 500 random (test, key), p50 and p95;
   and ``pytest-userflow stats --flow`` and ``changes --flow`` on one flow, process start
   included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("USERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
KEYS = 20


def schema_url(schema: str) -> str:
    split = urllib.parse.urlsplit(PG)
    query = urllib.parse.urlencode({"options": f"-csearch_path={schema}"})
    return urllib.parse.urlunsplit(split._replace(query=query))


def env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


TESTS = """
import pytest

@pytest.mark.userflow("Bench")
@pytest.mark.parametrize("n", range({tests}))
def test_n(record_measurement, n):
    for k in range(10):
        record_measurement(f"k{{k}}", {machine} * 1_000_000 + n * 10 + k)
"""


def writers(processes: int, tests: int, admin: Any, rounds: int) -> dict[str, Any]:
    """*rounds* rounds of both sides, in an order that turns round by round: each round's
    ratios, and their medians."""
    each = []
    for i in range(rounds):
        each.append(writers_round(processes, tests, admin, reverse=bool(i % 2)))
    out: dict[str, Any] = {"rounds": each}
    for name in ("wall, postgresql / sqlite", "tests' own time, postgresql / sqlite"):
        out[f"median {name}"] = round(statistics.median(r[name] for r in each), 3)
    out["every value exactly once, every round"] = all(
        r["postgresql"]["every value exactly once"] for r in each
    )
    return out


def writers_round(processes: int, tests: int, admin: Any, reverse: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ("postgresql", "sqlite") if reverse else ("sqlite", "postgresql"):
        schema = f"userflow_bench_{uuid.uuid4().hex[:10]}"
        admin.execute(f"CREATE SCHEMA {schema}")
        url = schema_url(schema)
        with tempfile.TemporaryDirectory() as tmp:
            folders = []
            for i in range(processes):
                folder = Path(tmp, f"m{i}")
                folder.mkdir()
                (folder / "pytest.ini").write_text("[pytest]\n")
                (folder / "test_bench.py").write_text(
                    textwrap.dedent(TESTS.format(tests=tests, machine=i + 1))
                )
                folders.append(folder)
            store = ["--userflow-store", url] if side == "postgresql" else []
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                       "-p", "no:cacheprovider", "--userflow-report", "r.json", *store]  # fmt: skip
            started = time.monotonic()
            running = [
                subprocess.Popen(command, cwd=f, env=env(), stdout=subprocess.DEVNULL)
                for f in folders
            ]
            codes = [p.wait() for p in running]
            wall = time.monotonic() - started
            durations = [
                sum(t["duration"] for t in json.loads((f / "r.json").read_text())["tests"])
                for f in folders
            ]
            pending = [json.loads((f / "r.json").read_text())["team_store"] for f in folders]
        result: dict[str, Any] = {
            "exit codes": codes,
            "wall s": round(wall, 2),
            "tests' own time s (sum over processes)": round(sum(durations), 3),
        }
        if side == "postgresql":
            got = Counter(
                row[0]
                for row in admin.execute(
                    f"SELECT COALESCE(int_value, real_value) FROM {schema}.measurement_rows"
                ).fetchall()
            )
            want = Counter(
                m * 1_000_000 + n * 10 + k
                for m in range(1, processes + 1)
                for n in range(tests)
                for k in range(10)
            )
            result["every value exactly once"] = got == want
            result["values"] = sum(got.values())
            result["pending after the run"] = sum(p["pending"] for p in pending if p)
            result["values a second (delivered, over the wall time)"] = round(
                sum(got.values()) / wall
            )
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        out[side] = result
    out["wall, postgresql / sqlite"] = round(
        out["postgresql"]["wall s"] / out["sqlite"]["wall s"], 3
    )
    own = "tests' own time s (sum over processes)"
    out["tests' own time, postgresql / sqlite"] = round(
        out["postgresql"][own] / out["sqlite"][own], 3
    )
    return out


def baseline(runs: int, per_run: int, admin: Any) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from pytest_userflow.model import Accept, Measurement, RunInfo, TestRecord
    from pytest_userflow.storage import open_store

    schema = f"userflow_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    url = schema_url(schema)
    try:
        history = open_store(url)
        seed = TestRecord("seed::t", "Flow0")  # makes the schema and the flows
        seed.measurements = [Measurement("k0", 1)]
        seed.end("Passed", None)
        history.add_test(seed, RunInfo("seed", 0.0, "h"))
        started = time.monotonic()
        admin.execute(f"SET search_path = {schema}")
        admin.execute(
            "INSERT INTO flows (user_flow_id, name, created_time) SELECT 'flow-' || f,"
            " 'Flow' || f, 0 FROM generate_series(1, 9) f"
        )
        admin.execute(
            "INSERT INTO runs (run_id, started_at, host, outcome, finished_at)"
            " SELECT 'run-' || r, r * 100.0, 'h', 'passed', r * 100.0 + 50"
            " FROM generate_series(1, %s) r",
            (runs,),
        )
        flow_id = admin.execute("SELECT user_flow_id FROM flows WHERE name = 'Flow0'").fetchone()
        admin.execute(
            "INSERT INTO events (perf_event_id, run_id, user_flow_id, user_flow_name, nodeid,"
            " device_address, status, outcome, event_ts, event_time, duration)"
            " SELECT md5(r || '/' || t), 'run-' || r,"
            " CASE WHEN t %% 10 = 0 THEN %s ELSE 'flow-' || (t %% 10) END,"
            " 'Flow' || (t %% 10), 't.py::test_' || t, 'dev' || (t %% 4) || '@host',"
            " CASE WHEN (r + t) %% 17 = 0 THEN 'Failed' ELSE 'Passed' END,"
            " CASE WHEN (r + t) %% 34 = 0 THEN 'Failed' ELSE 'Passed' END,"
            " r * 100.0 + t * 0.01, to_char(to_timestamp(r * 100), 'YYYY-MM-DD HH24:MI:SS'), 0.1"
            " FROM generate_series(1, %s) r, generate_series(1, %s) t",
            (flow_id[0], runs, per_run),
        )
        admin.execute(
            "INSERT INTO measurement_rows (event, seq, key_name, real_value)"
            " SELECT e.id, k, 'k' || k, 100 + random() * 10"
            " FROM events e, generate_series(0, %s) k WHERE e.run_id <> 'seed'",
            (KEYS - 1,),
        )
        admin.execute("ANALYZE")
        loaded = time.monotonic() - started
        count = admin.execute("SELECT COUNT(*) FROM measurement_rows").fetchone()[0]

        def timed() -> list[float]:
            rng = random.Random(7)
            times = []
            for _ in range(500):
                t = rng.randrange(1, per_run + 1)
                began = time.perf_counter()
                values = history.recent_values(
                    f"Flow{t % 10}",
                    f"k{rng.randrange(KEYS)}",
                    10,
                    exclude_run="run-x",
                    nodeid=f"t.py::test_{t}",
                    device=f"dev{t % 4}@host",
                )
                times.append(time.perf_counter() - began)
                assert values, "the baseline query found no values"
            return sorted(times)

        times = timed()
        # An accept of every flow's every key from the middle run on: the baseline starts
        # there, with what only the gate failed before the accept (half the failures).
        for f in range(10):
            for k in range(KEYS):
                history.add_accept(
                    Accept(f"Flow{f}", f"k{k}", f"run-{runs // 2}", created_at=runs * 100.0)
                )
        accepted = timed()
        history.close()
        cli = {}
        for command in (["stats", "--flow", "Flow3"], ["changes", "--flow", "Flow3"]):
            began = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pytest_userflow", "--store", url, *command],
                env=env(),
                capture_output=True,
                text=True,
                check=False,
            )
            cli[" ".join(command)] = {
                "s": round(time.monotonic() - began, 2),
                "exit": done.returncode,
            }
        return {
            "values": count,
            "load s": round(loaded, 1),
            "baseline query p50 ms": round(statistics.median(times) * 1000, 2),
            "baseline query p95 ms": round(times[int(len(times) * 0.95)] * 1000, 2),
            "accepted baseline query p50 ms": round(statistics.median(accepted) * 1000, 2),
            "accepted baseline query p95 ms": round(accepted[int(len(accepted) * 0.95)] * 1000, 2),
            "cli": cli,
        }
    finally:
        admin.execute("SET search_path = public")
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--tests-per-run", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", choices=("writers", "baseline"))
    args = parser.parse_args()
    if args.smoke:
        args.processes, args.tests, args.runs, args.tests_per_run = 2, 5, 3, 10
        args.rounds = 1
    import psycopg

    with psycopg.connect(PG, autocommit=True) as admin:
        results: dict[str, Any] = {}
        if args.only in (None, "writers"):
            results[f"writers: {args.processes} processes x {args.tests} tests x 10 values"] = (
                writers(args.processes, args.tests, admin, args.rounds)
            )
        if args.only in (None, "baseline"):
            size = f"{args.runs} runs x {args.tests_per_run} tests x {KEYS} keys"
            results[f"baseline: {size}"] = baseline(args.runs, args.tests_per_run, admin)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
