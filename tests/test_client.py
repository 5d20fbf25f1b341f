"""The HeadSpin client, route by route, replayed from vcrpy cassettes.

The cassettes were recorded against the strict stand-in (tests/headspin_server.py).
They replay offline: under CI (``CI`` set) with ``record_mode="none"``, so a request
that is not in its cassette fails the test. Delete a cassette, or set
``USERFLOW_RECORD=1``, to record it again from the stand-in. The Authorization
header is filtered out: no cassette holds a token.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TOKEN
from headspin_server import MEASUREMENT_FIELDS

from pytest_userflow.client import AuthError, BadRequest, HeadSpinClient, NotFound
from pytest_userflow.model import Measurement, MeasurementError

vcr = pytest.importorskip("vcr")

CASSETTES = Path(__file__).parent / "cassettes"
SESSION_1 = "8a37be67-c718-11ec-896d-0acbaa89a1b3"
SESSION_2 = "9f527e3f-daa1-11ec-ac12-06c4c57ba6cd"
SESSION_3 = "bc744aef-b06a-11ec-9906-06c4c57ba6cd"
DEVICE = "00008030-000559D902F0C02E@proxy-us-mvo-6.headspin.io"


def _record_mode(cassette: Path) -> str:
    if os.environ.get("USERFLOW_RECORD"):
        return "all"
    if os.environ.get("CI") or cassette.exists():
        return "none"
    return "once"


@pytest.fixture
def client(request: pytest.FixtureRequest):
    """A client whose conversation is the test's cassette."""
    cassette = CASSETTES / f"{request.node.name}.yaml"
    mode = _record_mode(cassette)
    recorder = vcr.VCR(
        record_mode=mode,
        filter_headers=["authorization"],
        match_on=["method", "path", "query", "body"],
        decode_compressed_response=True,
    )
    token = request.node.get_closest_marker("token")
    token = token.args[0] if token else TOKEN
    if mode == "none":
        with recorder.use_cassette(str(cassette), allow_playback_repeats=False):
            # Never contacted: every answer comes from the cassette.
            yield HeadSpinClient(token, base_url="http://127.0.0.1:9", retries=0)
        return
    from headspin_server import StandInServer

    with StandInServer(token=TOKEN) as server:
        for sid in (SESSION_1, SESSION_2, SESSION_3):
            server.state.add_session(
                sid, device_id="00008030-000559D902F0C02E", host="proxy-us-mvo-6.headspin.io"
            )
        with recorder.use_cassette(str(cassette)):
            yield HeadSpinClient(token, base_url=server.url, retries=0)


def test_user_flow_routes(client: HeadSpinClient) -> None:
    created = client.create_user_flow("Login", description="cold start to home")
    assert created["name"] == "Login" and created["description"] == "cold start to home"
    again = client.create_user_flow("Login", description="ignored when it exists")
    assert again["user_flow_id"] == created["user_flow_id"]
    assert again["description"] == "cold start to home"
    other = client.create_user_flow("Search")
    assert other["description"] is None
    names = {f["name"]: f for f in client.list_user_flows()}
    assert set(names) == {"Login", "Search"}
    assert isinstance(names["Login"]["created_time"], float)
    assert client.get_user_flow(created["user_flow_id"]) == created
    assert client.delete_user_flow(other["user_flow_id"])["status"] == "Success"
    with pytest.raises(NotFound) as excinfo:
        client.get_user_flow(other["user_flow_id"])
    assert excinfo.value.status_code == 404
    assert excinfo.value.path == f"/v0/userflows/{other['user_flow_id']}"
    with pytest.raises(NotFound):
        client.delete_user_flow(other["user_flow_id"])


def test_session_routes(client: HeadSpinClient) -> None:
    flow = client.create_user_flow("Login")["user_flow_id"]
    target = client.create_user_flow("Login v2")["user_flow_id"]
    attached = client.attach_session(flow, SESSION_1, status="Passed", status_message="first try")
    assert attached["session_id"] == SESSION_1 and attached["status"] == "Passed"
    assert attached["device_id"] == "00008030-000559D902F0C02E"
    plain = client.attach_session(flow, SESSION_2)
    assert plain["status"] == "Not Set"
    assert {s["session_id"] for s in client.list_sessions(flow)} == {SESSION_1, SESSION_2}
    assert client.get_session(flow, SESSION_1)["status_message"] == "first try"
    updated = client.update_session(flow, SESSION_2, "Failed", status_message="timeout")
    assert (updated["status"], updated["status_message"]) == ("Failed", "timeout")
    client.add_session_measurements(
        flow,
        SESSION_1,
        [
            Measurement("Idle Time", 3992.0, "Custom Metrics", "seconds"),
            {"key": "Load Time", "value": 3421.2},
        ],
    )
    client.add_session_measurements(flow, SESSION_1, [{"key": "Load Time", "value": 3000.5}])
    rows = client.get_session_measurements(flow, SESSION_1)
    assert {(r["key_name"], r["value"]) for r in rows} == {
        ("Idle Time", 3992.0),
        ("Load Time", 3000.5),
    }
    only = client.get_session_measurements(flow, SESSION_1, keys=["Idle Time"], limit=1, offset=0)
    assert [(r["key_name"], r["key_type"], r["key_units"]) for r in only] == [
        ("Idle Time", "Custom Metrics", "seconds")
    ]
    moved = client.move_session(flow, SESSION_2, target)
    assert moved["user_flow_id"] == target
    with pytest.raises(NotFound):
        client.get_session(flow, SESSION_2)
    with pytest.raises(BadRequest, match="already belongs to another user flow"):
        client.attach_session(flow, SESSION_2)
    assert client.remove_session(target, SESSION_2)["status"] == "Success"
    with pytest.raises(NotFound):
        client.attach_session(flow, SESSION_3.replace("b", "c"))  # no such capture session


def test_event_routes(client: HeadSpinClient) -> None:
    flow = client.create_user_flow("Checkout")["user_flow_id"]
    target = client.create_user_flow("Checkout v2")["user_flow_id"]
    event = client.create_event(flow, DEVICE)
    eid = event["perf_event_id"]
    assert (event["status"], event["session_id"], event["host"]) == (
        "Not Set",
        None,
        "proxy-us-mvo-6.headspin.io",
    )
    assert [e["perf_event_id"] for e in client.list_events(flow)] == [eid]
    assert client.get_event(flow, eid)["device_id"] == "00008030-000559D902F0C02E"
    assert (
        client.update_event(flow, eid, "Excluded", status_message="warm-up")["status"] == "Excluded"
    )
    client.add_event_measurements(
        flow, eid, [{"key": "Pay Time", "value": 1.25, "units": "seconds"}]
    )
    client.add_event_measurements(flow, eid, [{"key": "Result", "value": "ok"}])
    rows = client.get_event_measurements(flow, eid, keys=["Pay Time", "Result"])
    assert sorted((r["key_name"], r["value"]) for r in rows) == [
        ("Pay Time", 1.25),
        ("Result", "ok"),
    ]
    assert len(client.get_event_measurements(flow, eid, limit=1)) == 1
    assert client.move_event(flow, eid, target)["user_flow_id"] == target
    with pytest.raises(NotFound):
        client.get_event(flow, eid)
    assert client.remove_event(target, eid)["status"] == "Success"
    with pytest.raises(NotFound):
        client.update_event(target, eid, "Passed")


def test_measurement_listing_filters_paging_and_csv(client: HeadSpinClient) -> None:
    flow = client.create_user_flow("Search")["user_flow_id"]
    for sid, status, value in (
        (SESSION_1, "Passed", 1.0),
        (SESSION_2, "Failed", 2.0),
        (SESSION_3, "Excluded", 3.0),
    ):
        client.attach_session(flow, sid, status=status)
        client.add_session_measurements(
            flow, sid, [{"key": "Search Time", "value": value}, {"key": "Hits", "value": 10}]
        )
    default = client.get_measurements(flow)  # passed, failed and not_set
    assert sorted(r["value"] for r in default if r["key_name"] == "Search Time") == [1.0, 2.0]
    assert tuple(default[0]) == MEASUREMENT_FIELDS  # the API document's fields
    excluded = client.get_measurements(flow, statuses=["excluded"], keys=["Search Time"])
    assert [r["value"] for r in excluded] == [3.0]
    both = client.get_measurements(
        flow, session_ids=[SESSION_1, SESSION_3], statuses=["passed", "excluded"], keys="Hits"
    )
    assert sorted(r["session_id"] for r in both) == sorted([SESSION_1, SESSION_3])
    assert (
        client.get_measurements(
            flow,
            start_time="2000-01-01 00:00:00",
            end_time=4102444800,
            keys=["Hits"],
            statuses=["passed"],
        )
        != []
    )
    assert client.get_measurements(flow, end_time="2000-01-01T00:00:00") == []
    page = client.get_measurements(flow, limit=1, offset=1)
    assert page == [default[1]]
    streamed = list(
        client.iter_measurements(flow, page_size=3, statuses=["passed", "failed", "excluded"])
    )
    assert len(streamed) == 6
    csv_text = client.get_measurements_csv(flow, keys=["Search Time"])
    lines = csv_text.strip().splitlines()
    assert lines[0] == (
        "user_flow_id,user_flow_name,perf_event_id,event_time,session_id,perf_key_id,key_name,key_type,key_units,value"
    )
    assert len(lines) == 3
    assert client.get_measurements_csv(flow, keys=["no such key"]) == ""  # the API answers 204


def test_kpi_route(client: HeadSpinClient) -> None:
    flow = client.create_user_flow("KPIs")["user_flow_id"]
    client.attach_session(flow, SESSION_1, status="Passed")
    client.add_session_measurements(
        flow,
        SESSION_1,
        [
            {"key": "Sign In", "value": 3816},
            {"key": "Sign In_ttfb", "value": 200},
            {"key": "Sign In_Availability", "value": 100},
            {"key": "Other", "value": 1},
        ],
    )
    kpis = client.get_kpis(flow, kpis=["Sign In"], statuses=["passed"], session_ids=[SESSION_1])
    assert [(k["kpi"], k["time_to_interactive"], k["ttfb"], k["availability"]) for k in kpis] == [
        ("Sign In", 3816, 200, 100)
    ]
    assert client.get_kpis(flow, kpis=["Shop"]) == []


def test_legacy_routes(client: HeadSpinClient) -> None:
    client.legacy_upload(test_name="Legacy Flow", session_id=SESSION_1)
    client.legacy_upload(session_id=SESSION_1, status="Passed")
    client.legacy_upload(session_id=SESSION_1, data=[{"key": "My Measurement", "value": 50}])
    client.legacy_upload(
        session_id=SESSION_1, data=[{"key": "My Measurement", "value": 60}]
    )  # overwrites
    tests = {t["name"]: t for t in client.legacy_list_perftests()}
    flow_id = tests["Legacy Flow"]["perf_test_id"]
    assert client.legacy_get_perftest(flow_id)["name"] == "Legacy Flow"
    rows = client.get_measurements(flow_id, statuses=["passed"])
    assert [(r["key_name"], r["value"], r["session_id"]) for r in rows] == [
        ("My Measurement", 60, SESSION_1)
    ]
    with pytest.raises(NotFound):
        client.legacy_get_perftest("0dce9ae5-1ebe-11e9-afbe-06af87227a14")


@pytest.mark.token("wrong-token")
def test_a_refused_token_is_an_auth_error_without_the_token(client: HeadSpinClient) -> None:
    with pytest.raises(AuthError) as excinfo:
        client.list_user_flows()
    assert excinfo.value.status_code == 401
    assert "HEADSPIN_API_TOKEN" in str(excinfo.value)
    assert "wrong-token" not in str(excinfo.value) and "wrong-token" not in repr(client)


def test_no_cassette_holds_a_token() -> None:
    cassettes = list(CASSETTES.glob("*.yaml"))
    assert cassettes, "the cassettes are part of the repository"
    for cassette in cassettes:
        text = cassette.read_text()
        assert TOKEN not in text and "Bearer" not in text and "uthorization" not in text, (
            cassette.name
        )


def test_events_by_device_id_and_csv_of_every_listing(client: HeadSpinClient) -> None:
    """create_event takes device_id and hostname too; the session, event and KPI routes
    give CSV, read as UTF-8 whatever the answer's headers say."""
    flow = client.create_user_flow("Checkout ✓")["user_flow_id"]
    device_id, host = DEVICE.split("@")
    event = client.create_event(flow, device_id=device_id, hostname=host)
    assert (event["device_id"], event["host"]) == (device_id, host)
    client.add_event_measurements(flow, event["perf_event_id"], [{"key": "Pay ✓", "value": 1.5}])
    client.attach_session(flow, SESSION_1, status="Passed")
    client.add_session_measurements(flow, SESSION_1, [{"key": "Login ✓", "value": 2.5}])
    assert "Login ✓" in client.get_measurements_csv(flow)
    assert "Pay ✓" in client.get_event_measurements_csv(flow, event["perf_event_id"])
    session_csv = client.get_session_measurements_csv(flow, SESSION_1, keys=["Login ✓"])
    assert "Login ✓" in session_csv and "Pay ✓" not in session_csv
    assert isinstance(client.get_kpis_csv(flow), str)
    with pytest.raises(MeasurementError, match="device_address, or device_id and hostname"):
        client.create_event(flow, device_id=device_id)
