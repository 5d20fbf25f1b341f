"""The local store, the run's metadata, the JSON report and the terminal summary."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EVERY_ROW, pick, run_cli

SUITE = """
    import pytest
    pytestmark = pytest.mark.userflow("Checkout", description="cart to receipt")

    @pytest.mark.parametrize("items", [1, 3])
    def test_pay(record_measurement, items):
        record_measurement("Pay Time", 0.5 * items, units="seconds", type="Custom Metrics")
        record_measurement("Items", items)

    @pytest.mark.xfail(reason="coupon bug")
    def test_coupon(record_measurement):
        record_measurement("Pay Time", 9.0, units="seconds", type="Custom Metrics")
        assert 0
"""


def test_the_history_rows_are_the_api_listing_plus_run_test_and_worker(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile(SUITE)
    pytester.runpytest().assert_outcomes(passed=2, xfailed=1)
    # WAL is SQLite's own (so that xdist workers can write one file): read with plain sqlite3.
    with contextlib.closing(sqlite3.connect(store_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    columns = (
        "user_flow_name", "key_name", "key_type", "key_units", "value", "status", "nodeid",
        "worker", "run_id", "event_time", "perf_event_id", "user_flow_id",
    )  # fmt: skip
    rows = sorted(pick(history(store_path).measurements(EVERY_ROW), *columns), key=lambda r: r[4])
    node = "test_the_history_rows_are_the_api_listing_plus_run_test_and_worker.py::"
    assert [r[:8] for r in rows] == [
        (
            "Checkout",
            "Pay Time",
            "Custom Metrics",
            "seconds",
            0.5,
            "Passed",
            node + "test_pay[1]",
            None,
        ),
        ("Checkout", "Items", None, None, 1, "Passed", node + "test_pay[1]", None),
        (
            "Checkout",
            "Pay Time",
            "Custom Metrics",
            "seconds",
            1.5,
            "Passed",
            node + "test_pay[3]",
            None,
        ),
        ("Checkout", "Items", None, None, 3, "Passed", node + "test_pay[3]", None),
        (
            "Checkout",
            "Pay Time",
            "Custom Metrics",
            "seconds",
            9.0,
            "Excluded",
            node + "test_coupon",
            None,
        ),
    ]
    assert len({r[8] for r in rows}) == 1  # one run
    assert all(len(r[9]) == 19 and r[9][10] == " " for r in rows)  # "2022-03-30 16:48:22"
    assert len({r[10] for r in rows}) == 3  # one event per test
    assert len({r[11] for r in rows}) == 1
    assert pick(history(store_path).flows(), "name", "description") == [
        ("Checkout", "cart to receipt")
    ]
    # a second run adds to the same store, in the same flow
    pytester.runpytest()
    run_ids = pick(history(store_path).measurements(EVERY_ROW), "run_id")
    assert (len(set(run_ids)), len(run_ids)) == (2, 10)
    assert len(history(store_path).flows()) == 1


EVERY_OUTCOME = """
    import pytest

    @pytest.mark.userflow("Login", description="cold start")
    def test_pass(record_measurement, userflow):
        userflow.attach_session("9f527e3f-daa1-11ec-ac12-06c4c57ba6cd")
        record_measurement("Login Time", 1.5, units="seconds")
        record_measurement("Screen", "home")
        record_measurement("Login Time", 1.25, units="seconds")  # the last one counts

    def test_fail(record_measurement):
        record_measurement("Frames", 3, type="Video")
        assert 1 == 2, "slow"

    def test_skip(record_measurement):
        record_measurement("Frames", 4)
        pytest.skip("no device")

    @pytest.mark.xfail(reason="known")
    def test_xfail(record_measurement):
        record_measurement("Frames", 5)
        assert 0

    def test_override(record_measurement, userflow):
        record_measurement("Frames", 6)
        userflow.set_status("Excluded", "warm-up")

    @pytest.fixture
    def late(record_measurement):
        yield
        record_measurement("Teardown Time", 0.5)

    def test_recorded_in_teardown(late):
        pass
"""


def test_every_outcome_is_stored_once_with_its_hooks_applied(
    pytester: pytest.Pytester, history
) -> None:
    """Each test is one record: its status, message and measurements as the status and
    measurements hooks left them; the flushed hook sees the record that was stored."""
    pytester.makepyfile(EVERY_OUTCOME)
    pytester.makeconftest("""
        from pytest_userflow import Measurement

        def pytest_userflow_status(item, reports):
            if item.name == "test_skip":
                return ("Excluded", "no device today")

        def pytest_userflow_measurements(item, measurements):
            if item.name == "test_pass":
                measurements.append(Measurement.create("Battery", 90, units="%"))

        def pytest_userflow_flushed(item, result):
            print("FLUSHED", item.name, result.status, result.destination,
                  [m.key for m in result.measurements])
    """)
    result = pytester.runpytest("-s", "-p", "no:randomly", "--userflow-store", "one.db")
    result.assert_outcomes(passed=3, failed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*FLUSHED test_pass Passed local *'Login Time'*'Battery'*"])
    store = history(pytester.path / "one.db")
    descriptions = {f["name"]: f["description"] for f in store.flows()}
    no_measurement = {"key": None, "type": None, "units": None, "value": None}
    # each test with its flow's description, a row per measurement (one row if it has none)
    quick = [
        (t["nodeid"], t["flow"], descriptions[t["flow"]], t["status"], t["status_message"],
         t["session_id"], t["device"], t["worker"], t["duration"] > 0, m["key"], m["type"],
         m["units"], m["value"])
        for t in sorted(store.tests(), key=lambda t: t["nodeid"])
        for m in t["measurements"] or [no_measurement]
    ]  # fmt: skip
    assert [row[3:5] for row in quick] == [
        ("Failed", "AssertionError: slow"),
        ("Excluded", "warm-up"),
        ("Passed", None),
        ("Passed", None),  # the first Login Time was overwritten by the second
        ("Passed", None),
        ("Passed", None),  # Battery, from the measurements hook
        ("Excluded", "no device today"),
        ("Excluded", "xfail: known"),
    ]
    login = [row for row in quick if row[9] == "Login Time"]
    assert login == [
        (
            "test_every_outcome_is_stored_once_with_its_hooks_applied.py::test_pass",
            "Login",
            "cold start",
            "Passed",
            None,
            "9f527e3f-daa1-11ec-ac12-06c4c57ba6cd",
            None,
            None,
            1,
            "Login Time",
            None,
            "seconds",
            1.25,
        )
    ]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_run_metadata_names_git_commit_branch_and_ci_build(
    pytester: pytest.Pytester, store_path, history, monkeypatch
) -> None:
    for name in ("GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILD_ID", "BUILD_NUMBER", "BUILD_TAG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    pytester.makepyfile(SUITE)
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "perf-branch"], cwd=pytester.path, check=True)
    subprocess.run([*git, "add", "."], cwd=pytester.path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=pytester.path, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=pytester.path, capture_output=True, text=True, check=True
    ).stdout.strip()
    pytester.runpytest("--userflow-report", "report.json")
    [(run_id, host, got_commit, branch, build, backend, started, finished)] = pick(
        history(store_path).runs(),
        *("run_id", "host", "git_commit", "git_branch", "ci_build_id", "backend"),
        *("started_at", "finished_at"),
    )
    assert (got_commit, branch, build, backend) == (commit, "perf-branch", "4242", "local")
    assert host and started <= finished
    import json

    report = json.loads((pytester.path / "report.json").read_text())
    assert report["run"]["run_id"] == run_id
    assert report["run"]["git_commit"] == commit and report["run"]["ci_build_id"] == "4242"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_and_branch_are_read_as_git_reads_them(tmp_path) -> None:
    """Read from .git's files (no git process per run): loose and packed refs, a linked
    worktree, a detached HEAD, a folder below the root, and no repository at all."""
    from pytest_userflow.runinfo import git_head

    def git(*args: str, cwd=tmp_path / "repo") -> str:
        config = ["-c", "user.email=t@example.invalid", "-c", "user.name=t"]
        done = subprocess.run(
            ["git", *config, *args], cwd=cwd, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "f.txt").write_text("x")
    assert git_head(tmp_path) == (None, None)
    git("init", "-q", "-b", "perf")
    git("add", ".")
    git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD")
    assert git_head(repo / "sub") == (first, "perf")
    git("pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "perf").exists()
    assert git_head(repo) == (first, "perf")
    git("worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"))
    (tmp_path / "wt" / "g.txt").write_text("y")
    git("add", ".", cwd=tmp_path / "wt")
    git("commit", "-qm", "two", cwd=tmp_path / "wt")
    assert git_head(tmp_path / "wt") == (git("rev-parse", "HEAD", cwd=tmp_path / "wt"), "side")
    git("checkout", "-q", "--detach", first)
    assert git_head(repo) == (first, None)


def test_report_lists_every_test_with_where_it_went(pytester: pytest.Pytester, read_report) -> None:
    pytester.makepyfile(SUITE)
    (pytester.path / "out").mkdir()  # an output folder is not made for you
    pytester.runpytest("--userflow-report", "out/report.json").assert_outcomes(passed=2, xfailed=1)
    report = read_report("out/report.json")
    assert report["backend"] == "local" and report["store"].endswith(".userflow/userflow.db")
    tests = {t["nodeid"].split("::")[1]: t for t in report["tests"]}
    assert set(tests) == {"test_pay[1]", "test_pay[3]", "test_coupon"}
    coupon = tests["test_coupon"]
    assert (coupon["flow"], coupon["status"], coupon["status_message"], coupon["destination"]) == (
        "Checkout",
        "Excluded",
        "xfail: coupon bug",
        "local",
    )
    assert coupon["measurements"] == [
        {"key": "Pay Time", "value": 9.0, "type": "Custom Metrics", "units": "seconds"}
    ]
    assert tests["test_pay[3]"]["session_id"] is None and tests["test_pay[3]"]["device"] is None
    assert report["warnings"]["crashed_workers"] == []


def test_terminal_summary_shows_flows_statuses_and_key_statistics(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*= userflow =*",
            "local store */.userflow/userflow.db (run *)",
            "flow 'Checkout': 3 tests (2 Passed, 1 Excluded); 5 measurements: 5 stored locally",
            "  key       type            n  min  median  max  units",
            "  Items     -               2  1    2       3    -",
            "  Pay Time  Custom Metrics  2  0.5  1       1.5  seconds",
            # the xfail test's 9 is left out, as stats leaves it out, and that is said
            "  (n: values of passed and failed tests, as 'pytest-userflow stats' counts them; "
            "1 value(s) of excluded tests left out)",
        ]
    )


def test_large_statistics_are_written_out_in_the_summary_and_stats(
    pytester: pytest.Pytester, store_path: Path
) -> None:
    """A median of 40000 ms reads 40000, not 4e+04; without a fraction where four digits
    would need a power of ten."""
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Sync")
        @pytest.mark.parametrize("sync, upload", [(40000.0, 12345.2), (40000.0, 12345.6)])
        def test_sync(record_measurement, sync, upload):
            record_measurement("Sync Time", sync, units="ms")
            record_measurement("Upload Time", upload, units="ms")
            record_measurement("Wait Time", 9999.6, units="ms")
    """)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "  key          n  min    median  max    units",
            "  Sync Time    2  40000  40000   40000  ms",
            "  Upload Time  2  12345  12345   12346  ms",
            "  Wait Time    2  10000  10000   10000  ms",
        ]
    )
    header, row = run_cli(store_path, "stats", "--key", "Upload Time").stdout.splitlines()
    assert header.split()[4:] == ["min", "mean", "p50", "p95", "max", "units"]
    assert row.split()[5:] == ["12345", "12345", "12345", "12346", "12346", "ms"]


def test_nothing_recorded_means_no_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert "userflow ==" not in result.stdout.str()


def _corrupt(path) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"this is not a database, it is someone's notes" * 100)


def _other_program(path) -> None:
    path.parent.mkdir(exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:  # another program's, plain sqlite3
        db.execute("CREATE TABLE customers (id INTEGER)")
        db.commit()


def _other_version(path) -> None:
    path.parent.mkdir(exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:  # SQLite's user_version
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
        db.execute("PRAGMA user_version = 99")
        db.commit()


def _empty(path) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"")  # a store is never empty, even for an instant: one was cut short


def _blocked(path) -> None:
    path.parent.parent.mkdir(exist_ok=True)
    path.parent.write_text("a file where a folder should be")


@pytest.mark.parametrize(
    ("spoil", "cause"),
    [
        (_corrupt, "is not a usable pytest-userflow store (file is not a database)"),
        (
            _other_program,
            "is not a usable pytest-userflow store (it holds other tables (customers))",
        ),
        (_other_version, "is not a usable pytest-userflow store (schema version 99, *"),
        (_empty, "is not a usable pytest-userflow store (it is empty*"),
        (_blocked, "cannot create the userflow store */blocker/flows.db*"),
    ],
    ids=["corrupt", "another program's", "another version", "empty", "cannot be made"],
)
def test_a_store_that_cannot_take_the_tests_is_one_line_and_is_left_alone(
    pytester: pytest.Pytester, spoil, cause
) -> None:
    """Nothing is checked before a test records: a run that records nothing never minds the
    store; one that records says in one line why its tests were not kept, its exit code the
    tests' own, and the file as it was."""
    store = pytester.path / "blocker" / "flows.db"
    spoil(store)
    before = store.read_bytes() if store.is_file() else None
    pytester.makepyfile(test_quiet="def test_nothing():\n    pass\n")
    quiet = pytester.runpytest("--userflow-store", str(store), "test_quiet.py")
    quiet.assert_outcomes(passed=1)
    assert quiet.ret == 0 and "ERROR" not in quiet.stdout.str() + quiet.stderr.str()
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--userflow-store", str(store), "test_suite.py")
    result.assert_outcomes(passed=2, xfailed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"ERROR: the local store * could not take 3 test(s)*{cause}*"])
    assert len([line for line in result.outlines if line.startswith("ERROR")]) == 1
    assert (store.read_bytes() if store.is_file() else None) == before


def test_a_killed_process_keeps_every_finished_test(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import os, pytest
        pytestmark = pytest.mark.userflow("Crash")

        @pytest.mark.parametrize("n", range(5))
        def test_ok(record_measurement, n):
            record_measurement("n", n)

        def test_zz_dies(record_measurement):
            record_measurement("lost", 1)
            os._exit(9)
    """)
    result = pytester.runpytest_subprocess()
    assert result.ret == 9
    # Each finished test was committed at its teardown: the store has them all as it is.
    assert len(history(store_path).tests()) == 5
    command = [sys.executable, "-m", "pytest_userflow", "--store", str(store_path)]
    listing = subprocess.run(
        [*command, "measurements", "--format", "json"], capture_output=True, text=True, check=True
    )
    assert sorted(m["value"] for m in json.loads(listing.stdout)["measurements"]) == list(range(5))
    rows = sorted(pick(history(store_path).measurements(EVERY_ROW), "value"))
    assert rows == [(n,) for n in range(5)]


def test_a_long_run_summarizes_what_the_store_holds(pytester: pytest.Pytester, history) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Long")
        @pytest.mark.parametrize("n", range(301))
        def test_n(record_measurement, n):
            record_measurement("N", n, units="ms")
            record_measurement("Half", n / 2 if n % 3 else "none")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=301)
    result.stdout.fnmatch_lines(
        [
            "flow 'Long': 301 tests (301 Passed); 602 measurements: 602 stored locally",
            "  key   n    min  median  max    units",
            "  Half  301  0.5  75      149.5  -",  # 200 numbers (n / 2 where n % 3), 101 texts
            "  N     301  0    150     300    ms",
        ]
    )
    path = pytester.path / ".userflow" / "userflow.db"
    assert len(list(history(path).measurements(EVERY_ROW))) == 602


def test_tests_that_record_other_keys_in_other_orders_are_summarized_key_by_key(
    pytester: pytest.Pytester,
) -> None:
    # The summary reads tests that share their labels together, a column a key: tests whose
    # labels differ in order, in number or in units must each land in their own keys.
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.userflow("Mixed")

        def test_1(record_measurement):
            record_measurement("A", 1)
            record_measurement("B", 10, units="s")

        def test_2(record_measurement):
            record_measurement("B", 20, units="s")
            record_measurement("A", 2)

        def test_3(record_measurement):
            record_measurement("A", 3)

        def test_4(record_measurement):
            record_measurement("C", "text")
            record_measurement("B", 30, units="s")
            record_measurement("A", 4)

        def test_5(record_measurement):
            record_measurement("B", 400, units="ms")
            record_measurement("A", 1000)
            assert False

        def test_6(record_measurement):
            record_measurement("A", 2)
            record_measurement("B", 10, units="s")
            pytest.skip("left out")
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    result.stdout.re_match_lines(
        [
            r"flow 'Mixed': 6 tests \(4 Passed, 1 Failed, 1 Excluded\); "
            r"12 measurements: 12 stored locally",
            r"  key +n +min +median +max +units$",
            r"  A +5 +1 +3 +1000 +-$",
            r"  B +1 +400 +400 +400 +ms$",
            r"  B +3 +10 +20 +30 +s$",
            r"  C +1 +- +- +- +-$",
        ]
    )


def test_runs_at_once_on_a_new_store_beside_a_reader_lose_nothing(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """Four runs start at once on a store that does not exist yet, while another program
    opens it and reads it in a loop: every finished test of every run is in it, once."""
    import threading

    from pytest_userflow.storage import open_store

    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Busy")
        @pytest.mark.parametrize("n", range(40))
        def test_n(record_measurement, n):
            record_measurement("n", n)
        """
    )
    stop = threading.Event()
    reads = []

    def reader() -> None:
        while not stop.is_set():
            if store_path.exists():
                store = open_store(store_path)
                reads.append(len(store.runs()))
                store.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"],
                cwd=pytester.path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [run.communicate(timeout=120)[0] for run in runs]
    finally:
        stop.set()
        thread.join()
    assert all(run.returncode == 0 for run in runs), outputs
    assert not any("could not take" in out for out in outputs), outputs
    assert reads  # the reader did open the store while the runs wrote it
    tests_per_run = collections.Counter(t["run_id"] for t in history(store_path).tests())
    assert sorted(tests_per_run.values()) == [40] * 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_by_a_test_does_not_hold_the_run(pytester: pytest.Pytester, history) -> None:
    """Nothing of the plugin's waits on a process: a test's forked child that lives on does
    not keep the run from ending, and the run's records are all there."""
    import signal
    import time

    pytester.makepyfile(
        """
        import os, time

        def test_forks(record_measurement, tmp_path_factory):
            record_measurement("before", 1)
            pid = os.fork()
            if pid == 0:  # the child: no terminal, no pipes, just a long life
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                time.sleep(60)
                os._exit(0)
            (tmp_path_factory.getbasetemp().parent / "child.pid").write_text(str(pid))

        def test_after(record_measurement):
            record_measurement("after", 2)
        """
    )
    start = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    took = time.monotonic() - start
    for pid_file in pytester.path.parent.rglob("child.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    result.assert_outcomes(passed=2)
    assert took < 20
    path = pytester.path / ".userflow" / "userflow.db"
    rows = pick(history(path).measurements(EVERY_ROW), "key_name")
    assert sorted(rows) == [("after",), ("before",)]


def test_a_store_damaged_in_the_middle_never_changes_the_outcome(
    pytester: pytest.Pytester, store_path
) -> None:
    """A store whose header is sound and whose middle is garbage: the run's outcome is the
    tests' own, the store is named as damaged in the summary (no traceback), and it is left
    as it is."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Big")
        @pytest.mark.parametrize("n", range(300))
        def test_n(record_measurement, n):
            record_measurement("n", n)
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=300)
    data = bytearray(store_path.read_bytes())
    for at in range(4096 * 2, len(data) - 4096, 4096):
        data[at : at + 1024] = b"\xa5" * 1024
    store_path.write_bytes(bytes(data))
    before = store_path.read_bytes()
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=300)
    out = result.stdout.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out
    result.stdout.fnmatch_lines(["*ERROR: *userflow.db*damaged*"])
    assert store_path.read_bytes() == before


def test_a_long_key_is_shortened_in_the_summary_and_kept_whole(
    pytester: pytest.Pytester, store_path, history
) -> None:
    key = "Time to " + "very " * 40 + "interactive"  # 213 characters
    pytester.makepyfile(
        f"""
        def test_long(record_measurement):
            record_measurement({key!r}, 1.5)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    (row,) = [line for line in result.stdout.lines if line.startswith("  Time to very")]
    assert len(row) < 100 and "very..." in row and "1.5" in row
    assert pick(history(store_path).measurements(EVERY_ROW), "key_name") == [(key,)]


def test_a_suite_that_seeds_random_still_gets_one_event_a_test(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """Suites seed the global ``random`` before each test (pytest-randomly does): the local
    event ids must not repeat, or one test's record would take another's place."""
    pytester.makeconftest(
        """
        import random, pytest

        @pytest.fixture(autouse=True)
        def seeded():
            random.seed(42)
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Seeded")
        @pytest.mark.parametrize("n", range(3))
        def test_n(record_measurement, n):
            record_measurement("n", n)
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)
    tests = history(store_path).tests()
    assert len(tests) == 3 and len({t["local_event_id"] for t in tests}) == 3


@pytest.mark.parametrize(
    "option, name", [("--userflow-report", "r.json"), ("--userflow-html", "r.html")]
)
def test_report_files_follow_no_planted_link(pytester: pytest.Pytester, option, name) -> None:
    """A link planted where the old code put its temporary file, and the report itself a link:
    neither target is written, and the report becomes a file of its own."""
    if option == "--userflow-html":
        pytest.importorskip("vl_convert", reason="the [html] extra is not installed")
    pytester.makepyfile(SUITE)
    victims = [pytester.path / "victim-tmp.txt", pytester.path / "victim.txt"]
    for victim in victims:
        victim.write_text("keep me")
    for planted in (f".{name}.tmp", f"{name}.tmp"):
        (pytester.path / planted).symlink_to(victims[0])
    (pytester.path / name).symlink_to(victims[1])
    pytester.runpytest(option, name).assert_outcomes(passed=2, xfailed=1)
    assert [victim.read_text() for victim in victims] == ["keep me", "keep me"]
    report = pytester.path / name
    assert not report.is_symlink() and report.stat().st_size > 100
    assert "Checkout" in report.read_text()


# Text that JSON must escape, and keys that look like a test's JSON text themselves.
TRICKY = """
import pytest

@pytest.mark.userflow("Tricky")
def test_tricky(record_measurement):
    record_measurement('say "hi"', 'a ["b",] \\\\ c\\n\u00e9\U0001f600')
    record_measurement("Sum", 0.1 + 0.2, type="Custom Metrics", units="s")
    record_measurement('["Sum",', 2**63 - 1)
    record_measurement("Sum", 7)
"""


def _listed(store, *args: str) -> list[dict]:
    """``pytest-userflow measurements ARGS --format json``: the rows it lists."""
    listed = run_cli(store, "measurements", *args, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["measurements"]


def test_values_come_back_exactly_and_a_key_is_found_only_as_a_key(
    pytester: pytest.Pytester, store_path
) -> None:
    pytester.makepyfile(TRICKY)
    pytester.runpytest().assert_outcomes(passed=1)
    rows = pick(_listed(store_path), "key_name", "value", "key_type", "key_units")
    assert rows == [
        ('say "hi"', 'a ["b",] \\ c\n\u00e9\U0001f600', None, None),
        ("Sum", 0.30000000000000004, "Custom Metrics", "s"),
        ('["Sum",', 2**63 - 1, None, None),
        ("Sum", 7, None, None),
    ]
    for key, expected in [("Sum", [rows[1], rows[3]]), ('["Sum",', [rows[2]]), ("hi", [])]:
        found = pick(
            _listed(store_path, "--key", key), "key_name", "value", "key_type", "key_units"
        )
        assert found == expected, key


def _to_schema_7(path) -> None:
    """Give a store the layout of schema 7, a row a measurement, as earlier releases made it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        rows = [
            (event, seq, key, value, kind, units)
            for event, labels, values in db.execute("SELECT id, labels, vals FROM events")
            for seq, ((key, kind, units), value) in enumerate(
                zip(json.loads(labels), json.loads(values), strict=True)
            )
        ]
        db.executescript(
            """
            BEGIN;
            DROP VIEW measurements;
            DROP VIEW measurement_rows;
            ALTER TABLE events DROP COLUMN labels;
            ALTER TABLE events DROP COLUMN vals;
            CREATE TABLE measurement_rows (
                event INTEGER NOT NULL, seq INTEGER NOT NULL, key_name TEXT NOT NULL,
                key_type TEXT, key_units TEXT, value, PRIMARY KEY (event, seq)
            ) WITHOUT ROWID;
            CREATE VIEW measurements AS SELECT e.id AS event, m.seq AS seq, e.perf_event_id,
                e.run_id, e.user_flow_id, e.user_flow_name, e.event_time, e.event_ts,
                e.session_id, e.status, e.outcome, m.key_name, m.key_type, m.key_units, m.value,
                e.nodeid, e.worker, e.device_address
                FROM measurement_rows m JOIN events e ON e.id = m.event;
            PRAGMA user_version = 7;
            COMMIT;
            """
        )
        db.executemany(
            "INSERT INTO measurement_rows (event, seq, key_name, value, key_type, key_units)"
            " VALUES (?,?,?,?,?,?)",
            rows,
        )


def test_a_store_of_the_earlier_layout_is_brought_up_to_date_with_every_value(
    pytester: pytest.Pytester, store_path
) -> None:
    """A store that an earlier release wrote (a row a measurement) is upgraded in place the
    first time this one opens it: its history keeps every value, in order, and runs go on."""
    pytester.makepyfile(TRICKY)
    pytester.runpytest().assert_outcomes(passed=1)
    before = _listed(store_path)
    _to_schema_7(store_path)
    with contextlib.closing(sqlite3.connect(store_path)) as db:
        assert db.execute("SELECT COUNT(*) FROM measurement_rows").fetchone() == (4,)
    assert _listed(store_path) == before
    pytester.runpytest().assert_outcomes(passed=1)
    after = _listed(store_path)
    assert after[:4] == before
    assert pick(after[4:], "key_name", "value") == pick(after[:4], "key_name", "value")
    assert len({row["run_id"] for row in after}) == 2


def test_a_key_recorded_again_keeps_its_last_value_as_the_api_would(
    pytester: pytest.Pytester, store_path
) -> None:
    """HeadSpin keeps one value a key and type: the store keeps the last, in the order of the
    last values, and a key of another type apart."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Again")
        def test_again(record_measurement):
            record_measurement("A", 1)
            record_measurement("B", 2)
            record_measurement("A", 3)
            record_measurement("A", 4, type="Other")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    assert pick(_listed(store_path), "key_name", "key_type", "value") == [
        ("B", None, 2),
        ("A", None, 3),
        ("A", "Other", 4),
    ]


def test_an_earlier_store_that_cannot_be_written_now_is_said_so_and_left_as_it_is(
    pytester: pytest.Pytester, store_path
) -> None:
    """Bringing an earlier store up to date writes it: where it is read-only the listing says
    why it cannot read it yet and how it will, and the file stays the earlier release's."""
    pytester.makepyfile(TRICKY)
    pytester.runpytest().assert_outcomes(passed=1)
    _to_schema_7(store_path)
    before = store_path.read_bytes()
    store_path.chmod(0o444)
    try:
        # root writes whatever the modes say, unless it gives up overriding them
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
        command = [sys.executable, "-m", "pytest_userflow", "--store", str(store_path), "runs"]
        listed = subprocess.run(
            [*drop, *command] if os.geteuid() == 0 else command,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        store_path.chmod(0o644)
    assert listed.returncode != 0
    assert "was written by the previous release of pytest-userflow" in listed.stderr
    assert "the first time the store is opened where it can be written" in listed.stderr
    assert "move it away" not in listed.stderr
    assert store_path.read_bytes() == before
