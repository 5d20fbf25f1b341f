"""The PostgreSQL team store fed from each machine's outbox: real pytest runs (and the CLI)
against a real server, each test in a schema of its own (``pg_url``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from conftest import EVERY_ROW

from pytest_userflow.storage import open_store

TESTS = """
import pytest

@pytest.mark.userflow("Checkout")
@pytest.mark.parametrize("n", range({n}))
def test_pay(record_measurement, n):
    record_measurement("Pay Time", {base} + n, units="ms")
    record_measurement("Label", "m{machine}")
    assert n != {failing}, "the card was declined"
"""


def machine(root: Path, name: str, n: int = 6, base: int = 100, failing: int = -1) -> Path:
    """A folder with its own tests and, once run, its own outbox (.userflow/userflow.db)."""
    folder = root / name
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_pay.py").write_text(TESTS.format(n=n, base=base, machine=name, failing=failing))
    return folder


def pytest_in(folder: Path, *args: str) -> subprocess.Popen[str]:
    """pytest in *folder*, as a user (or a CI job) starts it there."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()  # not left running after the test
        process.communicate()
        raise
    return process.returncode, out


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_userflow", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def outbox_pending(folder: Path) -> int:
    store = open_store(folder / ".userflow" / "userflow.db")
    try:
        return store.count_deliveries()  # type: ignore[attr-defined]
    finally:
        store.close()


def values(url: str) -> Counter[tuple[str, object]]:
    history = open_store(url)
    try:
        return Counter((r["nodeid"], r["value"]) for r in history.measurements(EVERY_ROW))
    finally:
        history.close()


def expected(*machines: tuple[str, int, int]) -> Counter[tuple[str, object]]:
    want: Counter[tuple[str, object]] = Counter()
    for name, n, base in machines:
        for i in range(n):
            want[(f"test_pay.py::test_pay[{i}]", base + i)] += 1
            want[(f"test_pay.py::test_pay[{i}]", f"m{name}")] += 1
    return want


def test_three_machines_write_one_history_at_once(tmp_path: Path, pg_url: str) -> None:
    folders = [machine(tmp_path, str(i), base=100 * i) for i in range(1, 4)]
    runs = [
        pytest_in(folders[0], "--userflow-store", pg_url),
        pytest_in(folders[1], "--userflow-store", pg_url, "-n", "2"),
        pytest_in(folders[2], "--userflow-store", pg_url),
    ]
    for code, out in map(finished, runs):
        assert code == 0, out
        assert "6 test(s) delivered, 0 pending" in out
    assert values(pg_url) == expected(("1", 6, 100), ("2", 6, 200), ("3", 6, 300))
    assert all(outbox_pending(folder) == 0 for folder in folders)
    # Any machine's CLI reads the team's history from the URL alone.
    runs_listed = cli(folders[0], "--store", pg_url, "runs", "--format", "json")
    assert runs_listed.returncode == 0, runs_listed.stderr
    assert runs_listed.stdout.count('"run_id"') == 3
    flows = cli(tmp_path, "--store", pg_url, "flows")
    assert "Checkout" in flows.stdout and " 18 " in flows.stdout


def test_a_run_while_the_team_store_is_down_is_delivered_whole_by_push(
    tmp_path: Path, pg_url: str
) -> None:
    folder = machine(tmp_path, "1", n=5, failing=2)
    down = pg_url.replace(":5432/", ":1/")  # nothing listens there
    code, out = finished(pytest_in(folder, "--userflow-store", down, "--userflow-report", "r.json"))
    assert code == 1, out  # the tests' own: one failed
    assert "1 failed, 4 passed" in out
    assert out.count("Connection refused") == 1, out  # said once
    assert "0 test(s) delivered, 5 pending" in out
    assert outbox_pending(folder) == 5
    assert values(pg_url) == Counter()
    pushed = cli(folder, "--store", pg_url, "push")
    assert pushed.returncode == 0, pushed.stderr
    assert "delivered 5, still pending 0" in pushed.stdout
    again = cli(folder, "--store", pg_url, "push")
    assert again.returncode == 0 and "nothing to push" in again.stdout
    assert values(pg_url) == expected(("1", 5, 100))
    history = open_store(pg_url)
    try:
        assert [r["outcome"] for r in history.runs()] == ["failed"]
    finally:
        history.close()


def test_a_push_without_the_team_store_says_which_to_give(tmp_path: Path, pg_url: str) -> None:
    folder = machine(tmp_path, "1", n=2)
    down = pg_url.replace(":5432/", ":1/")
    assert finished(pytest_in(folder, "--userflow-store", down))[0] == 0
    pushed = cli(folder, "push")
    assert pushed.returncode == 1
    assert "2 test(s) wait for a PostgreSQL team store: pass --store postgresql://" in pushed.stderr


def test_a_server_that_keeps_the_tables_locked_costs_a_run_bounded_waits(
    tmp_path: Path, pg_url: str
) -> None:
    """A migration or a transaction left open holds the history's tables: the run's first
    read gives up after the lock timeout (no verdict, said once) and so does its delivery,
    its tests wait in the outbox, and push delivers them once the tables are free. Where only
    the reads wait, the tests are delivered, and the summary blames the reads."""
    import psycopg

    folder = machine(tmp_path, "1", n=3)
    assert finished(pytest_in(folder, "--userflow-store", pg_url))[0] == 0
    (folder / "conftest.py").write_text(
        "import pytest_userflow.storage.postgres as postgres\n\n"
        "def pytest_configure(config):\n"
        "    postgres.RUN_LOCK_TIMEOUT = 1.5\n"
    )

    def run_while_locked(table: str) -> str:
        """The run, gated on the team's history, while another transaction holds *table*."""
        with psycopg.connect(pg_url) as locker:
            locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            code, out = finished(
                pytest_in(folder, "--userflow-store", pg_url, "--userflow-baseline", "local")
            )
            locker.rollback()
        assert code == 0, out
        return out

    out = run_while_locked("events")
    assert "canceling statement due to lock timeout" in out
    assert "0 test(s) delivered, 3 pending" in out
    assert "too little history" not in out  # it was there, and could not be read
    assert "no regression verdict for 1 key(s): the team store's history could not" in out
    assert outbox_pending(folder) == 3
    pushed = cli(folder, "--store", pg_url, "push")
    assert pushed.returncode == 0 and "delivered 3, still pending 0" in pushed.stdout
    assert values(pg_url) == expected(("1", 3, 100), ("1", 3, 100))
    # The accepts alone held: the gate's reads give up, the deliveries go through.
    out = run_while_locked("accepts")
    assert "3 test(s) delivered, 0 pending" in out
    assert "did not take the tests" not in out
    assert "history could not be read (" in out and "due to lock timeout)" in out


def test_a_runs_statements_wait_for_locks_a_bounded_time_unless_told(pg_url: str) -> None:
    """The run's limit, unless the URL (or the role, the database, the server) set one, no
    limit included; the commands' connections have none."""
    from pytest_userflow.storage.postgres import PostgresStore

    def url(limit: str) -> str:
        return pg_url.replace("options=", f"options=-clock_timeout%3D{limit}%20")

    cases = [(pg_url, True, "10s"), (url("5min"), True, "5min"), (url("0"), True, "0")]
    for location, in_run, limit in [*cases, (pg_url, False, "0")]:
        store = PostgresStore(location, in_run=in_run)
        try:
            assert store.db.execute("SHOW lock_timeout").fetchone() == (limit,)
        finally:
            store.close()


def test_the_password_appears_in_no_output_and_no_file(tmp_path: Path, pg_url: str) -> None:
    secret = "pw-4c9d2e-not-to-be-seen"
    url = pg_url.replace("postgres@", f"postgres:{secret}@")  # trust: the server never asks
    folder = machine(tmp_path, "1", n=3)
    outputs = [
        finished(pytest_in(folder, "--userflow-store", url, "--userflow-report", "r.json"))[1]
    ]
    outputs.append(finished(pytest_in(folder, "--userflow-store", url.replace(":5432/", ":1/")))[1])
    for args in (("runs",), ("flows",), ("push",), ("copy", "--to", url), ("stats",)):
        done = cli(folder, "--store", url, *args)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    assert "delivered 3" in "".join(outputs)
    for text in outputs:
        assert secret not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_machine_with_no_history_is_gated_against_the_teams(tmp_path: Path, pg_url: str) -> None:
    seeded = machine(tmp_path, "seed", n=1, base=100)
    assert finished(pytest_in(seeded, "--userflow-store", pg_url))[0] == 0
    assert cli(seeded, "copy", "--to", pg_url, "--from", pg_url).returncode == 0
    for _ in range(4):  # four more runs of the same test in a SQLite history, copied in
        assert finished(pytest_in(seeded, "--userflow-store", "other.db"))[0] == 0
    assert "copied 4 test(s)" in cli(seeded, "copy", "--to", pg_url, "--from", "other.db").stdout
    fresh = machine(tmp_path, "fresh", n=1, base=300)
    code, out = finished(
        pytest_in(fresh, "--userflow-store", pg_url, "--userflow-baseline", "local")
    )
    assert code == 1, out
    assert "Pay Time" in out and "baseline 100" in out, out
    assert not (fresh / ".userflow" / "history.db").exists()


def test_copy_brings_a_machines_history_along_once(tmp_path: Path, pg_url: str) -> None:
    folder = machine(tmp_path, "1", n=4)
    assert finished(pytest_in(folder))[0] == 0  # the local SQLite store
    assert finished(pytest_in(folder))[0] == 0
    first = cli(folder, "copy", "--to", pg_url)
    assert first.returncode == 0, first.stderr
    assert "copied 8 test(s)" in first.stdout and "0 were there already" in first.stdout
    second = cli(folder, "copy", "--to", pg_url, "--from", ".userflow/userflow.db")
    assert "copied 0 test(s)" in second.stdout and "8 were there already" in second.stdout
    assert values(pg_url) == expected(("1", 4, 100)) + expected(("1", 4, 100))
    local = cli(folder, "runs", "--format", "json").stdout
    team = cli(folder, "--store", pg_url, "runs", "--format", "json").stdout
    assert local == team
    refused = cli(folder, "copy", "--to", str(tmp_path / "other.db"))
    assert refused.returncode == 2 and "give a postgresql://" in refused.stderr


def test_without_psycopg_one_line_says_what_to_install(tmp_path: Path, pg_url: str) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "psycopg.py").write_text("raise ImportError('blocked for this test')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest_userflow", "--store", pg_url, "runs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert 'pip install "pytest-userflow[postgres]"' in done.stderr


def test_a_role_with_select_insert_update_is_enough_and_a_read_only_one_waits(
    tmp_path: Path, pg_url: str
) -> None:
    import urllib.parse
    import uuid

    import psycopg

    first = machine(tmp_path, "admin", n=1)
    assert finished(pytest_in(first, "--userflow-store", pg_url))[0] == 0  # makes the schema
    schema = urllib.parse.parse_qs(urllib.parse.urlsplit(pg_url).query)["options"][0].split("=")[1]
    writer, reader = (f"userflow_{what}_{uuid.uuid4().hex[:8]}" for what in ("ci", "ro"))
    tables = "runs, flows, events, measurement_rows, checks, accepts, userflow_schema"
    admin = psycopg.connect(pg_url, autocommit=True)
    try:
        for role, rights in ((writer, "SELECT, INSERT, UPDATE"), (reader, "SELECT")):
            admin.execute(f"CREATE ROLE {role} LOGIN")
            admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            admin.execute(f"GRANT {rights} ON {tables} TO {role}")
        as_writer = pg_url.replace("postgres@", f"{writer}@")
        as_reader = pg_url.replace("postgres@", f"{reader}@")
        ci = machine(tmp_path, "ci", n=3, base=200)
        code, out = finished(
            pytest_in(ci, "--userflow-store", as_writer, "--userflow-baseline", "local")
        )
        assert code == 0 and "3 test(s) delivered, 0 pending" in out, out
        assert "permission denied" not in out, out
        # the gate reads the accepts, and accept keeps one
        (run,) = [
            r["run_id"] for r in json.loads(cli(ci, "runs", "--format", "json").stdout)["runs"]
        ]
        made = cli(ci, "--store", as_writer, "accept", "--flow", "Checkout", "--key", "Pay Time",
                   "--run", run)  # fmt: skip
        assert made.returncode == 0 and made.stdout.startswith("accepted #1: "), made.stderr
        ro = machine(tmp_path, "ro", n=2, base=300)
        code, out = finished(pytest_in(ro, "--userflow-store", as_reader))
        assert code == 0, out
        assert "permission denied" in out and "0 test(s) delivered, 2 pending" in out, out
        pushed = cli(ro, "--store", as_writer, "push")
        assert pushed.returncode == 0 and "delivered 2, still pending 0" in pushed.stdout
        assert values(pg_url) == expected(("admin", 1, 100), ("ci", 3, 200), ("ro", 2, 300))
    finally:
        for role in (writer, reader):
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
        admin.close()


SESSIONS = ("9f527e3f-daa1-11ec-ac12-06c4c57ba6cd", "bc744aef-b06a-11ec-9906-06c4c57ba6cd")


def test_with_headspin_as_well_each_test_goes_to_both_once(
    tmp_path: Path, pg_url: str, hs_env
) -> None:
    for session in SESSIONS:
        hs_env.state.add_session(session)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "test_login.py").write_text(
        "import pytest\n"
        "@pytest.mark.userflow('Login')\n"
        f"@pytest.mark.parametrize('session', {list(SESSIONS)!r})\n"
        "def test_login(userflow, record_measurement, session):\n"
        "    userflow.attach_session(session)\n"
        "    record_measurement('Login Time', 1.5)\n"
    )
    code, out = finished(pytest_in(folder, "--userflow-store", pg_url))
    assert code == 0, out
    assert "2 test(s) delivered, 0 pending" in out
    assert len(hs_env.state.measurements_of("Login")) == 2
    # HeadSpin up, PostgreSQL down: HeadSpin gets the run, push brings PostgreSQL the rest.
    code, out = finished(pytest_in(folder, "--userflow-store", pg_url.replace(":5432/", ":1/")))
    assert code == 0 and "0 test(s) delivered, 2 pending" in out, out
    sent = [path for method, path, _, _ in hs_env.state.requests if path.endswith("/measurements")]
    assert len(sent) == 4  # both runs' tests reached HeadSpin, each once
    before = len(hs_env.state.requests)
    pushed = cli(folder, "--store", pg_url, "push")
    assert pushed.returncode == 0 and "delivered 2, still pending 0" in pushed.stdout
    assert len(hs_env.state.requests) == before  # HeadSpin had them all: nothing sent again
    history = open_store(pg_url)
    try:
        assert [r["tests"] for r in history.runs()] == [2, 2]
    finally:
        history.close()


KILLED = """
import os, psycopg, pytest, time

@pytest.mark.userflow("Crash")
@pytest.mark.parametrize("n", range(4))
def test_a(record_measurement, n):
    record_measurement("n", n)

def test_b_the_server_drops_us(record_measurement):
    record_measurement("n", 4)
    with psycopg.connect(os.environ["ADMIN_URL"], autocommit=True) as db:
        for _ in range(100):  # the sender's connection, once it has made it
            dropped = db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s", (os.environ["APP"],)
            ).fetchall()
            if dropped:
                break
            time.sleep(0.05)
        assert dropped

@pytest.mark.parametrize("n", range(5, 8))
def test_c(record_measurement, n):
    record_measurement("n", n)

def test_d_dies(record_measurement):
    record_measurement("n", 8)
    if os.environ.get("DIE"):
        os._exit(9)
"""


def test_a_dropped_connection_or_a_killed_run_is_complete_after_push(
    tmp_path: Path, pg_url: str, monkeypatch
) -> None:
    app = f"userflow-{uuid.uuid4().hex[:8]}"  # this test's connections, and no other's
    monkeypatch.setenv("ADMIN_URL", pg_url)
    monkeypatch.setenv("APP", app)
    url = f"{pg_url}&application_name={app}"
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "test_crash.py").write_text(KILLED)
    code, out = finished(pytest_in(folder, "--userflow-store", url))
    assert code == 0, out
    assert out.count("the team store did not take the tests") == 1, out
    assert "pending in the outbox" in out
    monkeypatch.setenv("DIE", "1")
    code, out = finished(pytest_in(folder, "--userflow-store", url))
    assert code == 9, out
    assert outbox_pending(folder) > 0
    pushed = cli(folder, "--store", pg_url, "push")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    history = open_store(pg_url)
    try:
        rows = Counter(r["value"] for r in history.measurements(EVERY_ROW))
        # The first run's 9 tests and the killed run's 8 finished ones, each once.
        assert rows == Counter(list(range(9)) + list(range(8)))
        assert [r["tests"] for r in history.runs()] == [8, 9]
    finally:
        history.close()


def test_a_server_that_never_answers_costs_the_tests_nothing(tmp_path: Path) -> None:
    import json
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel and never answered
    url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
    folder = machine(tmp_path, "1", n=3)
    try:
        started = time.monotonic()
        code, out = finished(
            pytest_in(
                folder,
                "--userflow-store",
                url,
                "--userflow-flush-timeout",
                "0.5",
                "--userflow-report",
                "r.json",
            )
        )
        took = time.monotonic() - started
    finally:
        silent.close()
    assert code == 0, out
    assert "0 test(s) delivered, 3 pending" in out
    assert took < 8, out  # the flush timeout and the sender's close, not the connect timeout
    report = json.loads((folder / "r.json").read_text())
    assert [t["team_store"] for t in report["tests"]] == ["pending"] * 3
    assert all(t["duration"] < 1 for t in report["tests"])
    assert outbox_pending(folder) == 3
