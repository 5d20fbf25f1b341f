"""Exactly once on the wire: what lands in the stand-in is what the tests recorded, whatever
the network does to the requests and their answers. Each case is a real pytest run (and
``pytest-userflow push``), checked against the stand-in's final state."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import TOKEN, run_cli, upload_states

DEVICE = "R58M41@proxy-us-mvo-5.headspin.io"
SESSION = "9f527e3f-daa1-11ec-ac12-06c4c57ba6cd"
OTHER_SESSION = "bc744aef-b06a-11ec-9906-06c4c57ba6cd"
#: A short answer timeout for the run's client, so that a late answer is a timed-out one,
#: and more tries, so that random faults never outlast them. Set for the inner run only: the
#: client is made at its session start and its sender threads are joined at its unconfigure,
#: before its cleanup puts the defaults back for the tests after it (in this interpreter).
SHORT_TIMEOUT = """
import pytest
import pytest_userflow.client

def pytest_configure(config):
    patch = pytest.MonkeyPatch()
    config.add_cleanup(patch.undo)
    patch.setattr(pytest_userflow.client, "DEFAULT_TIMEOUT", 0.2)
    patch.setattr(pytest_userflow.client, "DEFAULT_RETRIES", 12)
    patch.setattr(pytest_userflow.client, "DEFAULT_BACKOFF", 0.02)
"""
DEVICE_TESTS = """
    import pytest
    pytestmark = pytest.mark.userflow("Scroll")

    @pytest.mark.parametrize("n", range({n}))
    def test_scroll(record_measurement, n):
        record_measurement("Frame Time", float(n), units="ms")
        assert n % 4 != 3, "jank"
"""


def run_push(pytester) -> subprocess.CompletedProcess[str]:
    return run_cli(pytester.path / ".userflow" / "userflow.db", "push", own_process=True)


def device_events(server, flow: str = "Scroll") -> list[dict]:
    flow_id = server.state.flow_by_name(flow)["user_flow_id"]
    return [e for e in server.state.events.values() if e["user_flow_id"] == flow_id]


def check_device_run(server, n: int) -> None:
    """One event per test, each with its status and its one value: none empty, none twice."""
    events = device_events(server)
    assert len(events) == n
    assert sorted(e["status"] for e in events) == sorted(
        "Failed" if i % 4 == 3 else "Passed" for i in range(n)
    )
    values = sorted(m["value"] for m in server.state.measurements_of("Scroll"))
    assert values == [float(i) for i in range(n)]


@pytest.mark.parametrize(
    "fault",
    ["lose", "late", "503", "drop"],
    ids=["answer lost", "answer late", "503", "connection dropped"],
)
def test_event_creation_is_never_doubled(pytester, hs_env, fault) -> None:
    """Every other event creation fails: done but unanswered (lost), answered after the
    client gave up (late), refused with a 503, or dropped before the work."""
    hs_env.faults.match = r"^POST /v0/userflows/[^/]+/events$"
    hs_env.faults.script = [fault, None] * 6
    hs_env.faults.late_delay = 0.4
    pytester.makeconftest(SHORT_TIMEOUT)
    pytester.makepyfile(DEVICE_TESTS.format(n=12))
    result = pytester.runpytest("--userflow-device", DEVICE, "-p", "no:randomly")
    result.assert_outcomes(passed=9, failed=3)
    assert hs_env.faults.injected == 6
    check_device_run(hs_env, 12)
    result.stdout.fnmatch_lines(["*flow 'Scroll': 12 tests (9 Passed, 3 Failed)*12 uploaded*"])


def test_random_faults_on_every_route_deliver_everything_once(pytester, hs_env, history) -> None:
    """A quarter of the answers lost after the work, and some 503s, on every route: the
    device's events and the sessions hold exactly what the tests recorded."""
    sessions = [f"00000000-0000-4000-8000-{n:012d}" for n in range(8)]
    for sid in sessions:
        hs_env.state.add_session(sid)
    hs_env.faults.lose_rate = 0.25
    hs_env.faults.error_rate = 0.05
    pytester.makeconftest(SHORT_TIMEOUT)
    pytester.makepyfile(
        DEVICE_TESTS.format(n=12)
        + f"""
    SESSIONS = {sessions!r}

    @pytest.mark.userflow("Login")
    @pytest.mark.parametrize("n", range(8))
    def test_login(userflow, record_measurement, n):
        userflow.attach_session(SESSIONS[n])
        record_measurement("Login Time", float(n))
    """
    )
    result = pytester.runpytest(
        "--userflow-device", DEVICE, "-p", "no:randomly", "--userflow-flush-timeout", "60"
    )
    result.assert_outcomes(passed=17, failed=3)
    assert hs_env.faults.injected > 10
    check_device_run(hs_env, 12)
    login = {m["session_id"]: m["value"] for m in hs_env.state.measurements_of("Login")}
    assert login == {sid: float(n) for n, sid in enumerate(sessions)}
    assert all(e["status"] == "Passed" for e in hs_env.state.events.values() if e["session_id"])
    path = pytester.path / ".userflow" / "userflow.db"
    assert upload_states(history(path)) == {"sent": 20}


def test_a_lost_answer_then_a_dead_server_is_resolved_by_push(pytester, hs_env) -> None:
    """The event was made, its answer lost, and the server died: push finds the event
    HeadSpin made and goes on with it, instead of making another."""
    hs_env.faults.match = r"^POST /v0/userflows/[^/]+/events$"
    hs_env.faults.script = [None, "lose"]
    hs_env.faults.down_after_lose = True
    pytester.makeconftest(SHORT_TIMEOUT)
    pytester.makepyfile(DEVICE_TESTS.format(n=4))
    result = pytester.runpytest("--userflow-device", DEVICE, "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1)
    # the first test went whole; the second's creation was done and lost; then every request
    # got 503 (down), and the tests after it were held back behind it
    assert sorted(e["status"] for e in device_events(hs_env)) == ["Not Set", "Passed"]
    hs_env.faults.down = False
    push = run_push(pytester)
    assert push.returncode == 0, push.stdout + push.stderr
    check_device_run(hs_env, 4)


def test_a_shared_session_ends_the_same_way_every_run(pytester, hs_env) -> None:
    """A session-scoped driver: three tests on one HeadSpin session, the first passing with
    1.0, the second failing with 2.0, the third passing. The session is Failed, names the
    failing test, and keeps 2.0, run after run."""
    pytester.makepyfile(f"""
        import pytest
        pytestmark = pytest.mark.userflow("Checkout")

        def test_a_pay(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("Pay Time", 1.0)

        def test_b_confirm(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("Pay Time", 2.0)
            assert False, "no receipt"

        def test_c_back(userflow):
            userflow.attach_session("{SESSION}")
    """)
    hs_env.faults.latency = 0.02  # answers that take a while: a race would show
    for _ in range(3):
        hs_env.state.events.clear()
        hs_env.state.add_session(SESSION)
        result = pytester.runpytest("-p", "no:randomly")
        result.assert_outcomes(passed=2, failed=1)
        (event,) = hs_env.state.events.values()
        assert event["status"] == "Failed"
        assert event["status_message"].startswith(
            "test_a_shared_session_ends_the_same_way_every_run.py::test_b_confirm: "
            "AssertionError: no receipt"
        )
        assert [m["value"] for m in hs_env.state.measurements_of("Checkout")] == [2.0]
        result.stdout.fnmatch_lines(
            [f"session {SESSION} in flow 'Checkout': shared by 3 tests, sent as Failed"]
        )


def test_a_session_attached_to_two_flows_is_refused_with_one_warning(
    pytester, hs_env, store_path, history
) -> None:
    hs_env.state.add_session(SESSION)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Login")
        def test_a(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("t", 1.0)

        @pytest.mark.userflow("Search")
        def test_b(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("t", 2.0)
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"upload refused: *::test_b attached the HeadSpin session {SESSION} to the flow "
            "'Search', but this run attached it to the flow 'Login' before*"
        ]
    )
    assert [m["value"] for m in hs_env.state.measurements_of("Login")] == [1.0]
    assert hs_env.state.flow_by_name("Search") is None
    assert upload_states(history(store_path)) == {"failed": 1, "sent": 1}


def test_a_flow_deleted_mid_run_is_made_again(pytester, hs_env) -> None:
    """The third test deletes the flow on HeadSpin once the first two are in it; the tests
    after it land in the flow made again, and nothing is refused."""
    pytester.makepyfile(f"""
        import time
        import pytest
        import requests

        pytestmark = pytest.mark.userflow("Scroll")
        URL, AUTH = "{hs_env.url}", {{"Authorization": "Bearer {TOKEN}"}}

        @pytest.mark.parametrize("n", range(5))
        def test_scroll(record_measurement, n):
            record_measurement("Frame Time", float(n))
            if n == 2:  # once the first two are on HeadSpin, delete their flow
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    flows = requests.get(URL + "/v0/userflows", headers=AUTH).json()["user_flows"]
                    flow = next((f for f in flows if f["name"] == "Scroll"), None)
                    if flow:
                        rows = requests.get(
                            URL + f"/v0/userflows/{{flow['user_flow_id']}}/measurements",
                            headers=AUTH,
                        ).json()["measurements"]
                        if len(rows) == 2:
                            break
                    time.sleep(0.02)
                requests.delete(URL + f"/v0/userflows/{{flow['user_flow_id']}}", headers=AUTH)
    """)
    result = pytester.runpytest("--userflow-device", DEVICE, "-p", "no:randomly")
    result.assert_outcomes(passed=5)
    assert "refused" not in result.stdout.str()
    values = sorted(m["value"] for m in hs_env.state.measurements_of("Scroll"))
    assert values == [2.0, 3.0, 4.0]  # the first two went with the deleted flow
    assert all(e["status"] == "Passed" for e in device_events(hs_env))


def test_push_sends_to_the_url_given_now(pytester, hs_env, monkeypatch) -> None:
    """The run's server was unreachable; push sends to HEADSPIN_API_URL as it is now, not to
    the URL stored with the uploads."""
    hs_env.state.add_session(SESSION)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Login")
        def test_login(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("Login Time", 1.5)
    """)
    result = pytester.runpytest(
        "--headspin-url", "http://127.0.0.1:9", "--userflow-flush-timeout", "0.5"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 test(s) with 1 measurement(s) are still pending*"])
    push = run_push(pytester)
    assert push.returncode == 0, push.stdout + push.stderr
    assert f"pushing 1 upload(s) to {hs_env.url}" in push.stdout
    assert [m["value"] for m in hs_env.state.measurements_of("Login")] == [1.5]


def test_push_gives_up_on_a_server_it_cannot_reach(pytester, hs_env, monkeypatch) -> None:
    hs_env.state.add_session(SESSION)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Login")
        @pytest.mark.parametrize("n", range(6))
        def test_login(userflow, record_measurement, n):
            userflow.attach_session("{SESSION}")
            record_measurement("Login Time", 1.5)
    """)
    monkeypatch.setenv("HEADSPIN_API_URL", "http://127.0.0.1:9")
    pytester.runpytest("--userflow-flush-timeout", "0.5").assert_outcomes(passed=6)
    push = run_push(pytester)
    assert push.returncode == 1
    assert "could not reach http://127.0.0.1:9" in push.stderr
    assert "still pending 6" in push.stdout


def _push_process(pytester) -> subprocess.Popen[str]:
    store = pytester.path / ".userflow" / "userflow.db"
    command = [sys.executable, "-m", "pytest_userflow", "--store", str(store), "push"]
    return subprocess.Popen(
        command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_pushes_at_once_send_each_test_once(pytester, hs_env, history, store_path) -> None:
    """Each push claims an upload before it sends it: the other leaves it alone."""
    hs_env.faults.down = True
    pytester.makepyfile(DEVICE_TESTS.format(n=30))
    pytester.runpytest("--userflow-device", DEVICE, "--userflow-flush-timeout", "0")
    hs_env.faults.down = False
    hs_env.faults.latency = 0.01
    pushes = [_push_process(pytester), _push_process(pytester)]
    outputs = [push.communicate(timeout=40)[0] for push in pushes]
    assert all(push.returncode in (0, 1) for push in pushes), outputs
    check_device_run(hs_env, 30)
    assert upload_states(history(store_path)) == {"sent": 30}, outputs


def test_a_push_while_a_run_sends_sends_each_test_once(
    pytester, hs_env, history, store_path
) -> None:
    """The run's sender and the push claim uploads: none is sent by both."""
    import time

    hs_env.faults.latency = 0.02
    pytester.makepyfile(DEVICE_TESTS.format(n=40))
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--userflow-device", DEVICE],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    store = pytester.path / ".userflow" / "userflow.db"
    deadline = time.monotonic() + 30
    while not (store.exists() and hs_env.state.events) and time.monotonic() < deadline:
        time.sleep(0.05)  # the run has begun to send
    pushed = _push_process(pytester).communicate(timeout=120)[0]
    out = run.communicate(timeout=120)[0]
    assert run.returncode == 1, out  # the suite's own failures
    run_push(pytester)  # whatever the run left pending
    check_device_run(hs_env, 40)
    assert upload_states(history(store_path)) == {"sent": 40}, pushed + out


def test_a_sender_goes_on_from_where_the_store_says_not_from_its_listing(
    pytester, hs_env, history, store_path
) -> None:
    """A push lists the pending uploads, then waits while a run's sender holds one; that sender
    makes the device's event, saves how far it got and lets go. The push then sends the test
    from there: its own listing is out of date, and must not make a second event."""
    from pytest_userflow.client import HeadSpinClient
    from pytest_userflow.storage import Progress
    from pytest_userflow.upload import Sender

    hs_env.faults.down = True
    pytester.makepyfile(DEVICE_TESTS.format(n=1))
    pytester.runpytest("--userflow-device", DEVICE, "--userflow-flush-timeout", "0")
    hs_env.faults.down = False
    outbox = history(store_path)
    [listed] = outbox.uploads()  # the push's listing: nothing made yet
    with HeadSpinClient(TOKEN, base_url=hs_env.url) as other:  # the other sender's work
        flow_id = other.create_user_flow("Scroll")["user_flow_id"]
        event_id = other.create_event(flow_id, DEVICE)["perf_event_id"]
    outbox.save_progress(listed.perf_event_id, Progress(flow_id, event_id))
    sender = Sender(HeadSpinClient(TOKEN, base_url=hs_env.url), outbox)
    sender.submit(listed)
    assert sender.drain(10)
    sender.close()
    [event] = device_events(hs_env)
    assert event["perf_event_id"] == event_id and event["status"] == "Passed"
    assert upload_states(outbox) == {"sent": 1}


EVENTS_ROUTE = r"^POST /v0/userflows/[^/]+/events$"


@pytest.mark.parametrize("slow", ["work_delay", "answer_delay"], ids=["made late", "answered late"])
def test_a_slow_event_creation_makes_one_event(pytester, hs_env, slow) -> None:
    """HeadSpin makes the event after the client gave up on the answer, or makes it at once
    and answers too late: the client waits for it to show in the listing, not making another."""
    getattr(hs_env.faults, slow)[EVENTS_ROUTE] = 0.3
    pytester.makeconftest(SHORT_TIMEOUT)
    pytester.makepyfile(DEVICE_TESTS.format(n=1))
    result = pytester.runpytest("--userflow-device", DEVICE, "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert hs_env.faults.slowed == 1  # one creation asked for, not a second one
    check_device_run(hs_env, 1)


def test_a_fault_mix_with_slow_creations_delivers_each_test_once(pytester, hs_env) -> None:
    """A 0.5 s client timeout, every event made after it, and lost answers and 503s on every
    route: N tests, N events."""
    hs_env.faults.work_delay[EVENTS_ROUTE] = 0.75
    hs_env.faults.lose_rate = 0.15
    hs_env.faults.error_rate = 0.05
    pytester.makeconftest(SHORT_TIMEOUT.replace('"DEFAULT_TIMEOUT", 0.2', '"DEFAULT_TIMEOUT", 0.5'))
    pytester.makepyfile(DEVICE_TESTS.format(n=4))
    result = pytester.runpytest(
        "--userflow-device", DEVICE, "-p", "no:randomly", "--userflow-flush-timeout", "120"
    )
    result.assert_outcomes(passed=3, failed=1)
    assert hs_env.faults.slowed >= 4
    check_device_run(hs_env, 4)


def test_push_after_runs_killed_while_making_events_delivers_everything(
    pytester, hs_env, history
) -> None:
    """Three runs killed while HeadSpin makes their first event (it finishes each one late,
    the last after push started): one push adopts each orphan for one upload, and delivers
    every test once, refusing none."""
    hs_env.faults.work_delay[EVENTS_ROUTE] = 1.0
    pytester.makepyfile(DEVICE_TESTS.format(n=2))
    command = [sys.executable, "-m", "pytest", "-p", "no:randomly", "--userflow-device", DEVICE]
    for run in range(1, 4):
        with subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.DEVNULL) as proc:
            while hs_env.faults.slowed < run:  # its first creation reached HeadSpin
                assert proc.poll() is None, "the run ended before it was killed"
                time.sleep(0.01)
            proc.kill()
    assert len(device_events(hs_env)) < 3  # the last run's event is still being made
    push = run_push(pytester)
    assert push.returncode == 0, push.stdout + push.stderr
    assert "sent 6, refused 0, still pending 0" in push.stdout
    events = device_events(hs_env)
    assert sorted(e["status"] for e in events) == ["Passed", "Passed", "Passed"] * 2
    values = sorted(m["value"] for m in hs_env.state.measurements_of("Scroll"))
    assert values == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert upload_states(history(pytester.path / ".userflow" / "userflow.db")) == {"sent": 6}


def test_push_refuses_events_another_program_made_meanwhile(pytester, hs_env) -> None:
    """A run killed while its event is made; meanwhile another program makes two events on
    the device: more new events than the store was making, so push adopts none of them."""
    hs_env.faults.work_delay[EVENTS_ROUTE] = 0.3
    pytester.makepyfile(DEVICE_TESTS.format(n=1))
    command = [sys.executable, "-m", "pytest", "-p", "no:randomly", "--userflow-device", DEVICE]
    with subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.DEVNULL) as proc:
        while hs_env.faults.slowed < 1:
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.01)
        proc.kill()
    flow_id = hs_env.state.flow_by_name("Scroll")["user_flow_id"]
    device_id, _, host = DEVICE.partition("@")
    for _ in range(2):
        hs_env.state._new_event(flow_id, None, host, device_id)
    push = run_push(pytester)
    said = push.stdout + push.stderr
    # 2 or 3 appeared, as the killed run's late event is made before push looks or after
    assert "sent 0, refused 1" in said and "events with no status appeared" in said, said
    assert "another program creates events" in said
    deadline = time.monotonic() + 5
    while len(device_events(hs_env)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed run's creation, which HeadSpin finishes late
    assert [e["status"] for e in device_events(hs_env)] == ["Not Set"] * 3
