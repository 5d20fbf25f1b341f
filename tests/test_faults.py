"""Reliability: whatever HeadSpin does, every measurement arrives (now or with ``push``),
nothing arrives twice, and the run's exit code is the tests' own.

Each row of the fault matrix runs the same suite against the stand-in with faults injected,
then counts what was recorded (the local store), delivered (the stand-in) and pending.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid

import pytest
from conftest import EVERY_ROW, pick, run_cli, upload_states

SESSIONS = [str(uuid.UUID(int=i + 1)) for i in range(6)]
SUITE = f"""
    import pytest
    pytestmark = pytest.mark.userflow("Resilience")
    SESSIONS = {SESSIONS!r}

    @pytest.mark.parametrize("n", range(12))
    def test_step(userflow, record_measurement, n):
        if n < 6:
            userflow.attach_session(SESSIONS[n])  # the others go through device events
        for k in range(3):
            record_measurement(f"k{{k}}", n * 10 + k, units="ms")
        assert n != 11, "the last one fails"
"""

MATRIX = {
    "healthy": {},
    "503 for a third": {"error_rate": 0.33},
    "429 every 4th": {"every_429": 4},
    "slow (40 ms)": {"latency": 0.04},
    "drops 15%": {"drop_rate": 0.15},
    "all at once": {"error_rate": 0.2, "every_429": 5, "latency": 0.01, "drop_rate": 0.1},
}


def counts(server, store) -> tuple[int, int, int]:
    """The measurements recorded (in the history), delivered (to the stand-in) and pending
    (of the tests whose upload is still to go)."""
    tests = store.tests()
    recorded = sum(len(t["measurements"]) for t in tests)
    delivered = len(server.state.measurements_of("Resilience"))
    pending = sum(len(t["measurements"]) for t in tests if t["upload_state"] == "pending")
    return recorded, delivered, pending


def push(store_path) -> subprocess.CompletedProcess[str]:
    return run_cli(store_path, "push")


def assert_delivered_once(server) -> None:
    events = list(server.state.events.values())
    assert len(events) == 12, "one event per test, none twice"
    statuses = sorted(e["status"] for e in events)
    assert statuses == ["Failed"] + ["Passed"] * 11
    values = sorted(m["value"] for m in server.state.measurements_of("Resilience"))
    assert values == sorted(n * 10 + k for n in range(12) for k in range(3))


@pytest.mark.parametrize("row", list(MATRIX))
def test_fault_matrix(pytester: pytest.Pytester, hs_env, store_path, history, row: str) -> None:
    for sid in SESSIONS:
        hs_env.state.add_session(sid)
    for name, value in MATRIX[row].items():
        setattr(hs_env.faults, name, value)
    # short waits between retries: the faults are the same, the test is quicker (for this
    # run only: its cleanup puts the default back for the tests after it)
    pytester.makeconftest("""
        import pytest
        import pytest_userflow.client

        def pytest_configure(config):
            patch = pytest.MonkeyPatch()
            config.add_cleanup(patch.undo)
            patch.setattr(pytest_userflow.client, "DEFAULT_BACKOFF", 0.02)
    """)
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        "--userflow-device", "R58M41@host-a", "--userflow-flush-timeout", "20"
    )
    result.assert_outcomes(passed=11, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the tests' own outcome
    recorded, delivered, pending = counts(hs_env, history(store_path))
    print(f"\nFAULT ROW {row!r}: recorded {recorded}, delivered {delivered}, pending {pending}")
    assert recorded == 36 and delivered + pending == recorded
    if pending:  # retries can run out under heavy faults: push finishes the job
        assert push(store_path).returncode == 0
    assert_delivered_once(hs_env)
    assert list(upload_states(history(store_path))) == ["sent"]


def test_server_down_then_push_twice(
    pytester: pytest.Pytester, hs_env, store_path, history
) -> None:
    for sid in SESSIONS:
        hs_env.state.add_session(sid)
    hs_env.faults.down = True
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        "--userflow-device", "R58M41@host-a", "--userflow-flush-timeout", "1"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    pending_lines = [line for line in result.stdout.lines if "still pending" in line]
    assert pending_lines == [
        "12 test(s) with 36 measurement(s) are still pending in the local store: "
        "run 'pytest-userflow push' to send them"
    ]
    assert counts(hs_env, history(store_path)) == (36, 0, 36)
    hs_env.faults.down = False
    first = push(store_path)
    assert first.returncode == 0 and "sent 12, refused 0, still pending 0" in first.stdout
    assert_delivered_once(hs_env)
    requests = len(hs_env.state.requests)
    second = push(store_path)
    assert second.returncode == 0 and "nothing to push" in second.stdout
    assert len(hs_env.state.requests) == requests
    assert_delivered_once(hs_env)


def test_push_with_the_server_still_down_keeps_everything_and_exits_1(
    pytester, hs_env, store_path, history
) -> None:
    hs_env.faults.down = True
    pytester.makepyfile(SUITE)
    pytester.runpytest("--userflow-device", "R58M41@host-a", "--userflow-flush-timeout", "0")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_userflow",
            "--store",
            str(store_path),
            "push",
            "--timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "still pending 12" in result.stdout
    assert counts(hs_env, history(store_path)) == (36, 0, 36)


@pytest.mark.parametrize(
    ("args", "body"),
    [
        (["-x"], "assert n < 4"),
        (["--maxfail", "2"], "assert n % 3"),
        ([], "if n == 5: raise KeyboardInterrupt"),
    ],
    ids=["-x", "--maxfail", "ctrl-c"],
)
def test_stopping_early_keeps_every_finished_test_for_push(
    pytester, hs_env, store_path, history, args, body
) -> None:
    hs_env.faults.down = True
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Resilience")
        @pytest.mark.parametrize("n", range(12))
        def test_step(record_measurement, n):
            record_measurement("n", n)
            {body}
    """)
    result = pytester.runpytest(
        "--userflow-device",
        "R58M41@host-a",
        "--userflow-flush-timeout",
        "1",
        *args,
        no_reraise_ctrlc=True,
    )
    finished = result.parseoutcomes()
    ran = finished.get("passed", 0) + finished.get("failed", 0)
    assert 0 < ran < 12
    assert len(history(store_path).tests()) == ran
    hs_env.faults.down = False
    assert push(store_path).returncode == 0
    assert len(hs_env.state.measurements_of("Resilience")) == ran


def test_push_shows_progress_and_retries_refused_uploads_on_request(
    pytester, hs_env, store_path
) -> None:
    for sid in SESSIONS[:5]:  # the 6th session is unknown to HeadSpin: that upload is refused
        hs_env.state.add_session(sid)
    hs_env.faults.down = True
    pytester.makepyfile(SUITE)
    pytester.runpytest("--userflow-device", "R58M41@host-a", "--userflow-flush-timeout", "0")
    hs_env.faults.down = False
    hs_env.faults.latency = 0.05  # slow enough for the bar to be drawn while waiting
    again = [sys.executable, "-m", "pytest_userflow", "--store", str(store_path), "push"]
    result = subprocess.run([*again, "--progress"], capture_output=True, text=True, check=False)
    assert result.returncode == 1  # one upload was refused
    assert "[" + "#" * 30 + "] 12/12  sent 11  refused 1" in result.stderr
    assert "refused: HeadSpin answered 404 to POST /v0/userflows/" in result.stderr
    assert "pushing 12 upload(s) to http://127.0.0.1:" in result.stdout
    assert "sent 11, refused 1, still pending 0" in result.stdout
    plain = subprocess.run(again, capture_output=True, text=True, check=False)
    assert plain.returncode == 0 and "nothing to push" in plain.stdout  # refused is not pending
    hs_env.state.add_session(SESSIONS[5])  # fixed on HeadSpin's side: retry it
    retried = subprocess.run(
        [*again, "--retry-failed"], capture_output=True, text=True, check=False
    )
    assert retried.returncode == 0 and "sent 1, refused 0, still pending 0" in retried.stdout
    # stderr is not a terminal here: progress comes as lines, not a bar redrawn in place
    assert retried.stderr == "[" + "#" * 30 + "] 1/1  sent 1  refused 0\n"
    assert_delivered_once(hs_env)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_test_whose_record_cannot_be_written_is_reported_and_the_run_goes_on(
    pytester: pytest.Pytester, store_path, history
) -> None:
    # A file size limit during test_b's teardown: the store's writes fail as on a full disk.
    pytester.makeconftest("""
        import resource, signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        LIMIT = resource.getrlimit(resource.RLIMIT_FSIZE)

        def pytest_runtest_teardown(item):
            if item.name == "test_b":
                wal = item.config.rootpath / ".userflow" / "userflow.db-wal"
                resource.setrlimit(resource.RLIMIT_FSIZE, (wal.stat().st_size, LIMIT[1]))

        def pytest_runtest_setup(item):
            resource.setrlimit(resource.RLIMIT_FSIZE, LIMIT)
    """)
    pytester.makepyfile("""
        def test_a(record_measurement):
            record_measurement("k", 1)

        def test_b(record_measurement):
            record_measurement("k", 2)

        def test_c(record_measurement):
            record_measurement("k", 3)
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*ERROR: the local store */userflow.db could not take 1 test(s), whose records are "
            "lost (their outcomes are not); the first: *::test_b: *"
        ]
    )
    rows = pick(history(store_path).measurements(EVERY_ROW), "nodeid", "value")
    assert [(nodeid.split("::")[1], value) for nodeid, value in rows] == [
        ("test_a", 1),
        ("test_c", 3),
    ]


def test_an_unforeseen_failure_never_ends_the_sender_nor_fails_a_test(
    pytester, hs_env, store_path, history
) -> None:
    """An answer of the wrong shape (a broken proxy) raises what no rule foresaw in the sender
    thread: under -W error too, no test fails, the run does not wait out its flush timeout,
    the other device's tests are delivered, and push delivers the rest once."""
    hs_env.faults.match = r"POST /v0/userflows/[^/]+/events$"
    hs_env.faults.script = ["garbage"]
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Resilience")
        @pytest.mark.parametrize("n", range(6))
        def test_step(record_measurement, n):
            record_measurement("n", n)
    """)
    result = pytester.runpytest_subprocess(
        "-W", "error", "-n", "2", "-p", "no:randomly",
        "--userflow-device", "R1@host-a", "--userflow-device", "R2@host-b",
        "--userflow-flush-timeout", "30",
    )  # fmt: skip
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    assert result.duration < 20
    result.stdout.fnmatch_lines(["*a delivery stopped by *Error*stay pending*"])
    states = upload_states(history(store_path))
    assert states.get("pending", 0) >= 1 and states.get("sent", 0) >= 1, states
    assert push(store_path).returncode == 0
    assert len(hs_env.state.measurements_of("Resilience")) == 6
    assert len(hs_env.state.events) == 6  # the broken answer made nothing: none twice


def test_ctrl_c_in_the_final_wait_ends_it_with_the_summary(
    pytester, hs_env, store_path, history
) -> None:
    """A slow HeadSpin makes the run wait at its end; it says so, and Ctrl-C ends the wait at
    once: no traceback, the summary, the run's end noted, and push delivers what was left."""
    import time

    hs_env.faults.latency = 0.5
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Resilience")
        @pytest.mark.parametrize("n", range(8))
        def test_step(record_measurement, n):
            record_measurement("n", n)
    """)
    command = [
        sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
        "--userflow-device", "R1@host-a", "--userflow-flush-timeout", "60",
    ]  # fmt: skip
    run = subprocess.Popen(
        command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "waiting for" in line:
            break
    started = time.monotonic()
    run.send_signal(signal.SIGINT)
    rest, _ = run.communicate(timeout=30)
    output = "".join(lines) + rest
    assert time.monotonic() - started < 5, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "(Ctrl-C leaves them pending for pytest-userflow push)" in output
    assert "== userflow ==" in output and "still pending" in output, output
    assert run.returncode in (0, pytest.ExitCode.INTERRUPTED), output
    [run_row] = history(store_path).runs()
    assert run_row["finished_at"] is not None
    hs_env.faults.latency = 0
    assert push(store_path).returncode == 0
    assert len(hs_env.state.measurements_of("Resilience")) == 8
