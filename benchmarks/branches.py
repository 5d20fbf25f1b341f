"""What branch-aware baselines cost a run (seeded; ``python benchmarks/branches.py``).

A SQLite history of RUNS runs, every third one on main and the others on 20 feature branches,
each run TESTS tests of KEYS keys, written as the plugin writes (a test a transaction). Then:

- the baseline query (``History.recent_values``, the last 10 values of one test's key) as the
  gate makes it, of every run's history (a run whose branch is unknown) and of main's up to a
  fork point (a run on a branch), each the median of 500 queries;
- the fork point: ``gate.lineage`` of a run on a branch, which asks git for the run's line of
  commits (``git rev-list``, one process) in a repository of COMMITS commits and looks for
  main's newest run on it among main's newest 200; the median of 20.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_userflow.gate import lineage
from pytest_userflow.model import Measurement, RunInfo, TestRecord
from pytest_userflow.runinfo import git_ancestors, git_head
from pytest_userflow.storage.sqlite import SQLiteStore

RUNS, TESTS, KEYS, COMMITS = 1_500, 20, 10, 2_000


def median_ms(call: Callable[[], Any], times: int) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent) * 1000


def history(path: Path, commits: list[str]) -> list[RunInfo]:
    rng = random.Random(34)
    store = SQLiteStore(path)
    runs = []
    start = time.time() - RUNS * 600
    for r in range(RUNS):
        main = r % 3 == 0
        run = RunInfo(
            run_id=f"{r:06d}" + "0" * 10,
            started_at=start + r * 600,
            host="bench",
            git_commit=commits[min(r * len(commits) // RUNS, len(commits) - 1)],
            git_branch="main" if main else f"feature-{r % 20}",
        )
        for t in range(TESTS):
            record = TestRecord(f"tests/test_app.py::test_{t}", "App")
            record.measurements = [
                Measurement(f"Key {k}", 100 * rng.lognormvariate(0, 0.05), None, "ms")
                for k in range(KEYS)
            ]
            record.end("Passed", None)
            record.event_ts = run.started_at + t
            store.add_test(record, run)
        runs.append(run)
    store.close()
    return runs


def repository(folder: Path) -> list[str]:
    """A repository of COMMITS commits on main (oldest first), checked out at its head."""
    folder.mkdir()
    git = ["git", "-c", "user.email=b@example.invalid", "-c", "user.name=b"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=folder, check=True)
    script = "".join(
        f"commit refs/heads/main\nmark :{i + 1}\n"
        f"committer b <b@example.invalid> {1_700_000_000 + i} +0000\ndata 2\nc\n"
        + (f"from :{i}\n" if i else "")
        + "\n"
        for i in range(COMMITS)
    )
    subprocess.run([*git, "fast-import", "--quiet"], cwd=folder, input=script.encode(), check=True)
    subprocess.run([*git, "checkout", "-q", "-b", "topic", "main"], cwd=folder, check=True)
    listed = subprocess.run(
        ["git", "rev-list", "--reverse", "main"], cwd=folder, capture_output=True, text=True
    )
    return listed.stdout.split()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="userflow-branches-"))
    try:
        commits = repository(work / "repo")
        started = time.perf_counter()
        runs = history(work / "store.db", commits)
        built = time.perf_counter() - started
        store = SQLiteStore(work / "store.db")
        newest = runs[-1]._replace(run_id="new", git_branch="topic")
        gated = lineage(store, newest, None, lambda: git_ancestors(work / "repo"))
        test = "tests/test_app.py::test_7"

        def every() -> None:
            store.recent_values("App", "Key 3", 10, exclude_run="new", nodeid=test)

        def branch() -> None:
            store.recent_values(
                "App", "Key 3", 10, exclude_run="new", nodeid=test, branch="main",
                until=gated.fork_run,
            )  # fmt: skip

        print(f"history: {RUNS} runs x {TESTS} tests x {KEYS} keys, built in {built:.0f} s")
        print(f"fork point of a run on topic: {gated.fork_run} (main's newest run)")
        print(f"baseline query, every run's history: {median_ms(every, 500):.2f} ms")
        print(f"baseline query, main's up to the fork point: {median_ms(branch, 500):.2f} ms")
        print(f"git rev-parse of commit and branch (every run): "
              f"{median_ms(lambda: git_head(work / 'repo'), 20):.1f} ms")  # fmt: skip
        print(f"git rev-list of {COMMITS} commits: "
              f"{median_ms(lambda: git_ancestors(work / 'repo'), 20):.1f} ms")  # fmt: skip
        fork = median_ms(
            lambda: lineage(store, newest, None, lambda: git_ancestors(work / "repo")), 20
        )
        print(f"the fork point (gate.lineage, git included): {fork:.1f} ms")
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
