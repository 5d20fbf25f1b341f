"""Uploads to HeadSpin through real pytest runs against the strict stand-in server."""

from __future__ import annotations

import subprocess
import sys

from conftest import EVERY_ROW, TOKEN, pick, upload_states

SESSION_A = "9f527e3f-daa1-11ec-ac12-06c4c57ba6cd"
SESSION_B = "bc744aef-b06a-11ec-9906-06c4c57ba6cd"

TWO_SESSION_TESTS = f"""
    import pytest
    pytestmark = pytest.mark.userflow("Login", description="cold start to home")

    def test_ok(userflow, record_measurement):
        userflow.attach_session("{SESSION_A}")
        record_measurement("Login Time", 1.5, units="seconds", type="Custom Metrics")
        record_measurement("Screen", "home")

    def test_bad(userflow, record_measurement):
        userflow.attach_session("{SESSION_B}")
        record_measurement("Login Time", 9.0, units="seconds", type="Custom Metrics")
        assert 1 == 2, "too slow"
"""


def routes(server) -> list[tuple[str, str]]:
    """The requests the stand-in got, with ids replaced by placeholders."""
    import re

    return [(m, re.sub(r"[0-9a-f-]{36}", "<id>", p)) for m, p, _, _ in server.state.requests]


def test_sessions_are_attached_with_status_and_measurements(
    pytester, hs_env, store_path, history
) -> None:
    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    pytester.makepyfile(TWO_SESSION_TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)

    assert sorted(routes(hs_env)) == sorted(
        [("PUT", "/v0/userflows")]
        + [
            ("POST", "/v0/userflows/<id>/sessions"),
            ("POST", "/v0/userflows/<id>/sessions/<id>/measurements"),
        ]
        * 2
    )
    flow = hs_env.state.flow_by_name("Login")
    assert flow["description"] == "cold start to home"
    events = {e["session_id"]: e for e in hs_env.state.events.values()}
    assert events[SESSION_A]["status"] == "Passed"
    assert events[SESSION_B]["status"] == "Failed"
    assert events[SESSION_B]["status_message"].startswith("AssertionError: too slow")
    values = {(m["session_id"], m["key_name"]): m for m in hs_env.state.measurements_of("Login")}
    assert values[(SESSION_A, "Login Time")]["value"] == 1.5
    assert values[(SESSION_A, "Login Time")]["key_type"] == "Custom Metrics"
    assert values[(SESSION_A, "Login Time")]["key_units"] == "seconds"
    assert values[(SESSION_A, "Screen")]["value"] == "home"
    assert upload_states(history(store_path)) == {"sent": 2}
    result.stdout.fnmatch_lines(
        ["*flow 'Login': 2 tests (1 Passed, 1 Failed); 3 measurements: 3 uploaded"]
    )


def test_device_events_are_created_patched_and_filled(pytester, hs_env) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Search")
        def test_search(userflow, record_measurement, userflow_device):
            assert userflow.device == userflow_device == "R58M41@proxy-us-mvo-5.headspin.io"
            record_measurement("Search Time", 812, units="ms")

        @pytest.mark.userflow("Search")
        def test_skip(record_measurement):
            pytest.skip("feature flag off")
    """)
    pytester.runpytest("--userflow-device", "R58M41@proxy-us-mvo-5.headspin.io").assert_outcomes(
        passed=1, skipped=1
    )
    assert sorted(routes(hs_env)) == sorted(
        [("PUT", "/v0/userflows")]
        + [
            ("GET", "/v0/userflows/<id>/events"),  # the device's events with no status yet
            ("POST", "/v0/userflows/<id>/events"),
            ("PATCH", "/v0/userflows/<id>/events/<id>"),
        ]
        * 2
        + [("POST", "/v0/userflows/<id>/events/<id>/measurements")]
    )
    events = sorted(hs_env.state.events.values(), key=lambda e: e["status"])
    assert [(e["status"], e["status_message"], e["device_id"], e["host"]) for e in events] == [
        ("Excluded", "skipped: feature flag off", "R58M41", "proxy-us-mvo-5.headspin.io"),
        ("Passed", None, "R58M41", "proxy-us-mvo-5.headspin.io"),
    ]
    assert [m["value"] for m in hs_env.state.measurements_of("Search")] == [812]


def test_legacy_api_sends_one_upload_per_test(pytester, hs_env) -> None:
    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    pytester.makepyfile(TWO_SESSION_TESTS)
    result = pytester.runpytest("--userflow-api", "legacy")
    result.assert_outcomes(passed=1, failed=1)
    assert result.stdout.str().count("legacy API: the upload route carries no status message") == 1
    assert routes(hs_env) == [("POST", "/v0/perftests/upload")] * 2
    bodies = sorted((body for _, _, _, body in hs_env.state.requests), key=lambda b: b["status"])
    assert [(b["test_name"], b["status"]) for b in bodies] == [
        ("Login", "failed"),
        ("Login", "passed"),
    ]
    assert {m["key_name"] for m in hs_env.state.measurements_of("Login")} == {
        "Login Time",
        "Screen",
    }


def test_tests_with_neither_session_nor_device_stay_local_with_one_warning(
    pytester, hs_env, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Checkout")
        @pytest.mark.parametrize("n", range(3))
        def test_pay(record_measurement, n):
            record_measurement("Pay Time", n)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    assert hs_env.state.requests == []
    warnings = [line for line in result.stdout.lines if "no HeadSpin session" in line]
    assert len(warnings) == 1
    assert (
        "3 test(s)" in warnings[0] and "test_pay[0]" in warnings[0] and "test_pay[2]" in warnings[0]
    )
    assert len(list(history(store_path).measurements(EVERY_ROW))) == 3
    assert list(upload_states(history(store_path))) == ["local-only"]


def test_dry_run_prints_the_requests_and_sends_nothing(
    pytester, hs_env, store_path, history
) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Login")
        def test_ok(userflow, record_measurement):
            userflow.attach_session("{SESSION_A}")
            record_measurement("Login Time", 1.5, units="seconds")
    """)
    result = pytester.runpytest("--userflow-dry-run")
    result.assert_outcomes(passed=1)
    assert hs_env.state.requests == []
    result.stdout.fnmatch_lines(
        [
            "dry run: the requests that would be sent",
            "*test_ok (Passed):",
            '*PUT /v0/userflows {"name": "Login"}',
            "*POST /v0/userflows/<user_flow_id>/sessions "
            f'{{"session_id": "{SESSION_A}", "status": "Passed"}}',
        ]
    )
    assert (
        f"    POST /v0/userflows/<user_flow_id>/sessions/{SESSION_A}/measurements "
        '{"data": [{"key": "Login Time", "units": "seconds", "value": 1.5}]}'
    ) in result.stdout.lines
    assert upload_states(history(store_path)) == {}
    assert pick(history(store_path).measurements(EVERY_ROW), "value") == [(1.5,)]


def test_flow_is_put_once_per_process(pytester, hs_env) -> None:
    for sid in (SESSION_A, SESSION_B):
        hs_env.state.add_session(sid)
    pytester.makepyfile(f"""
        import pytest
        pytestmark = pytest.mark.userflow("Login")

        @pytest.mark.parametrize("sid", ["{SESSION_A}", "{SESSION_B}"])
        def test_it(userflow, record_measurement, sid):
            userflow.attach_session(sid)
            record_measurement("t", 1)
    """)
    pytester.runpytest().assert_outcomes(passed=2)
    assert routes(hs_env).count(("PUT", "/v0/userflows")) == 1
    assert len(hs_env.state.requests) == 5  # 1 PUT + 2 requests per test


def test_a_refused_upload_is_reported_and_does_not_stop_the_others(
    pytester, hs_env, store_path, history
) -> None:
    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    other = hs_env.state.create_flow(None, {"name": "Elsewhere"})[1]
    hs_env.state.attach_session(None, {"session_id": SESSION_B}, other["user_flow_id"])
    pytester.makepyfile(TWO_SESSION_TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*upload refused: HeadSpin answered 400*Session already belongs to another user flow*"]
    )
    rows = dict(pick(history(store_path).tests(), "nodeid", "upload_state"))
    assert rows == {
        "test_a_refused_upload_is_reported_and_does_not_stop_the_others.py::test_ok": "sent",
        "test_a_refused_upload_is_reported_and_does_not_stop_the_others.py::test_bad": "failed",
    }


def test_a_wrong_token_gives_one_error_and_push_sends_later(
    pytester, hs_env, monkeypatch, store_path, history
) -> None:
    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    pytester.makepyfile(TWO_SESSION_TESTS)
    result = pytester.runpytest("--headspin-token", "not-the-token")
    result.assert_outcomes(passed=1, failed=1)
    errors = [line for line in result.stdout.lines if "HEADSPIN_API_TOKEN" in line]
    assert len(errors) == 1 and "refused the API token" in errors[0]
    assert "answered 401 to PUT /v0/userflows: Unauthorized (check HEADSPIN_API_TOKEN)" in errors[0]
    assert errors[0].count("HEADSPIN_API_TOKEN") == 1
    assert "not-the-token" not in result.stdout.str()
    assert upload_states(history(store_path)) == {"pending": 2}

    wrong = [sys.executable, "-m", "pytest_userflow", "push", "--headspin-token", "not-the-token"]
    refused = subprocess.run(wrong, capture_output=True, text=True, cwd=pytester.path, check=False)
    assert refused.returncode == 1 and refused.stderr.count("HEADSPIN_API_TOKEN") == 1
    assert "still pending 2" in refused.stdout and "not-the-token" not in refused.stderr

    push = [sys.executable, "-m", "pytest_userflow", "--store", str(store_path), "push"]
    first = subprocess.run(push, capture_output=True, text=True, cwd=pytester.path, check=False)
    assert first.returncode == 0, first.stderr
    assert "sent 2, refused 0, still pending 0" in first.stdout
    assert {m["value"] for m in hs_env.state.measurements_of("Login")} == {1.5, 9.0, "home"}
    count = len(hs_env.state.requests)
    second = subprocess.run(push, capture_output=True, text=True, cwd=pytester.path, check=False)
    assert second.returncode == 0 and "nothing to push" in second.stdout
    assert len(hs_env.state.requests) == count


def test_a_server_that_echoes_the_token_never_gets_it_shown_or_kept(
    pytester, hs_env, monkeypatch, store_path
) -> None:
    hs_env.faults.echo_token = True
    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    pytester.makepyfile(TWO_SESSION_TESTS)
    secret = "not-the-t0ken-s3cret"
    result = pytester.runpytest("--headspin-token", secret, "--userflow-report", "r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*answered 401*bad credentials: Bearer <token>*"])
    monkeypatch.setenv("HEADSPIN_API_TOKEN", secret)
    push = [sys.executable, "-m", "pytest_userflow", "--store", str(store_path), "push"]
    pushed = subprocess.run(push, capture_output=True, text=True, cwd=pytester.path, check=False)
    assert "bad credentials: Bearer <token>" in pushed.stdout + pushed.stderr
    shown = result.stdout.str() + result.stderr.str() + pushed.stdout + pushed.stderr
    assert secret not in shown
    kept = [
        p for p in pytester.path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
    ]
    assert kept == []


def test_server_down_finishes_within_the_flush_timeout_and_push_delivers(
    pytester, hs_env, store_path
) -> None:
    import time

    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    hs_env.faults.down = True
    pytester.makepyfile(TWO_SESSION_TESTS)
    start = time.monotonic()
    result = pytester.runpytest("--userflow-flush-timeout", "1")
    elapsed = time.monotonic() - start
    assert result.ret == 1  # the tests' own outcome, whatever HeadSpin does
    assert elapsed < 6
    result.stdout.fnmatch_lines(
        ["*2 test(s) with 3 measurement(s) are still pending*pytest-userflow push*"]
    )
    hs_env.faults.down = False
    push = subprocess.run(
        [sys.executable, "-m", "pytest_userflow", "--store", str(store_path), "push"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert push.returncode == 0, push.stdout + push.stderr
    assert len(hs_env.state.measurements_of("Login")) == 3


def test_the_token_is_never_written_anywhere(pytester, hs_env, store_path) -> None:
    hs_env.state.add_session(SESSION_A)
    hs_env.state.add_session(SESSION_B)
    pytester.makepyfile(TWO_SESSION_TESTS)
    logging = [
        "-o",
        "log_cli=true",
        "--log-cli-level=DEBUG",
        "--log-file=debug.log",
        "--log-file-level=DEBUG",
    ]
    result = pytester.runpytest_subprocess(
        "--userflow-report",
        "report.json",
        "--junitxml",
        "junit.xml",
        "-v",
        "--headspin-token",
        TOKEN,
        *logging,
    )
    result.assert_outcomes(passed=1, failed=1)
    debug_log = (pytester.path / "debug.log").read_text()
    assert (
        "connectionpool" in debug_log
    )  # the HTTP traffic was logged at DEBUG, so this looks at it
    written = [
        result.stdout.str(),
        result.stderr.str(),
        debug_log,
        (pytester.path / "report.json").read_text(),
        (pytester.path / "junit.xml").read_text(),
        store_path.read_bytes().decode("latin-1"),
    ]
    for wal in store_path.parent.glob("*-wal"):
        written.append(wal.read_bytes().decode("latin-1"))
    assert all(TOKEN not in text for text in written)
