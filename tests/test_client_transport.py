"""The client's transport and argument handling: retries, errors, filters, paging.

Retry timing is checked with the sleep function replaced (nothing actually sleeps).
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest
from conftest import TOKEN

from pytest_userflow.client import (
    AuthError,
    BadRequest,
    HeadSpinClient,
    HeadSpinError,
    LostAnswer,
    NotFound,
    RetryableError,
    measurement_params,
)
from pytest_userflow.model import MeasurementError

SESSION = "8a37be67-c718-11ec-896d-0acbaa89a1b3"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(headspin, sleeps):
    with HeadSpinClient(
        TOKEN, base_url=headspin.url, retries=3, backoff=0.5, sleep=sleeps.append, rng=lambda: 1.0
    ) as c:
        yield c


def test_5xx_and_dropped_connections_are_retried_with_exponential_backoff(
    headspin, client, sleeps
) -> None:
    headspin.faults.retry_after_on_503 = False
    headspin.faults.script = ["503", "drop", "503"]
    assert client.list_user_flows() == []
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(headspin.state.requests) == 1  # only the last one reached the routes


def test_an_answer_cut_short_is_a_lost_answer_retried_where_that_cannot_duplicate(
    headspin, client, sleeps
) -> None:
    headspin.faults.script = ["truncate"]
    flow = client.create_user_flow("Login")  # PUT: done twice is done once
    assert flow["name"] == "Login" and len(headspin.state.flows) == 1
    headspin.faults.script = ["truncate"]
    with pytest.raises(LostAnswer, match=r"no answer to POST /v0/userflows/.*/events"):
        client.create_event(flow["user_flow_id"], "dev@host")
    assert len(sleeps) == 1


@pytest.mark.parametrize("code", ["429", "503"])
def test_retry_after_is_honoured(headspin, client, sleeps, code) -> None:
    headspin.faults.retry_after = 7
    headspin.faults.script = [code]
    client.create_user_flow("Login")
    assert sleeps == [7.0]


def test_jitter_spreads_the_backoff(headspin, sleeps) -> None:
    headspin.faults.retry_after_on_503 = False
    headspin.faults.script = ["503", "503"]
    with HeadSpinClient(
        TOKEN, base_url=headspin.url, backoff=1.0, sleep=sleeps.append, rng=lambda: 0.25
    ) as c:
        c.list_user_flows()
    assert sleeps == [0.25, 0.5]


def test_retries_run_out_with_a_retryable_error(headspin, client, sleeps) -> None:
    headspin.faults.down = True
    with pytest.raises(RetryableError) as excinfo:
        client.list_user_flows()
    assert excinfo.value.status_code == 503
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda c: c.get_user_flow("35761d40-074f-4ab9-aa90-a879c4f68783"), NotFound, 404),
        (lambda c: c._send("PUT", "/v0/userflows", {"nom": "x"}), BadRequest, 400),
        (lambda c: c._send("POST", "/v0/userflows/x/events", {}), BadRequest, 400),
    ],
    ids=["404", "400-unknown-field", "400-missing-field"],
)
def test_other_4xx_are_not_retried(headspin, client, sleeps, call, error, code) -> None:
    with pytest.raises(error) as excinfo:
        call(client)
    assert excinfo.value.status_code == code
    assert sleeps == []
    assert len(headspin.state.requests) == 1


def test_auth_errors_name_the_variable_and_never_the_token(headspin, sleeps) -> None:
    with HeadSpinClient("s3cr3t-token-value", base_url=headspin.url, sleep=sleeps.append) as c:
        with pytest.raises(AuthError) as excinfo:
            c.list_user_flows()
        assert "s3cr3t" not in repr(c)
    message = str(excinfo.value)
    assert "HEADSPIN_API_TOKEN" in message and "401" in message and "GET /v0/userflows" in message
    assert "s3cr3t" not in message and "s3cr3t" not in repr(excinfo.value.__dict__)
    assert sleeps == []


def test_connection_refused_is_retried_then_raised(sleeps) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    c = HeadSpinClient(
        TOKEN, base_url=f"http://127.0.0.1:{port}", retries=2, sleep=sleeps.append, rng=lambda: 1.0
    )
    with c, pytest.raises(RetryableError) as excinfo:
        c.list_user_flows()
    assert excinfo.value.status_code is None
    assert "could not reach" in str(excinfo.value)
    assert sleeps == [0.5, 1.0]


def test_an_empty_token_is_refused_at_once() -> None:
    with pytest.raises(AuthError, match="HEADSPIN_API_TOKEN"):
        HeadSpinClient("  ")


def test_filters_are_encoded_as_repeated_parameters() -> None:
    when = datetime(2022, 3, 30, 16, 48, 22, tzinfo=timezone.utc)
    params = measurement_params(
        session_ids=[SESSION, SESSION.upper()],
        keys=["Idle Time", "Load Time"],
        start_time=when,
        end_time="2022-04-01 00:00:00",
        statuses=["Passed", "not_set"],
        limit=10,
        offset=0,
    )
    assert params == [
        ("session_id", SESSION),
        ("session_id", SESSION),
        ("key", "Idle Time"),
        ("key", "Load Time"),
        ("start_time", "1648658902.0"),
        ("end_time", "2022-04-01 00:00:00"),
        ("status", "passed"),
        ("status", "not_set"),
        ("limit", "10"),
        ("offset", "0"),
    ]
    naive = measurement_params(start_time=datetime(2022, 3, 30, 16, 48, 22))
    assert naive == [("start_time", "1648658902.0")]  # naive means UTC, as the API's times are
    local = datetime(2022, 3, 30, 18, 48, 22, tzinfo=timezone(timedelta(hours=2)))
    assert measurement_params(end_time=local) == [("end_time", "1648658902.0")]
    assert measurement_params(start_time=1648673302) == [("start_time", "1648673302")]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            {"statuses": ["finished"]},
            "status filter must be one of passed, failed, not_set, excluded",
        ),
        ({"start_time": "yesterday"}, "start_time must be an ISO time"),
        ({"end_time": float("nan")}, "end_time must be finite"),
        ({"limit": -1}, "limit must be a whole number >= 0"),
        ({"offset": True}, "offset must be a whole number >= 0"),
        ({"session_ids": ["not-a-uuid"]}, "session_id must be a HeadSpin session UUID"),
        ({"keys": [""]}, "key filters must be non-empty strings"),
    ],
)
def test_bad_filters_are_refused_before_any_request(filters, message) -> None:
    with pytest.raises(MeasurementError, match=message):
        measurement_params(**filters)


def test_iter_measurements_pages_lazily_until_an_empty_page(headspin, client) -> None:
    headspin.state.add_session(SESSION)
    flow = client.create_user_flow("Paged")["user_flow_id"]
    client.attach_session(flow, SESSION, status="Passed")
    client.add_session_measurements(flow, SESSION, [{"key": f"k{i}", "value": i} for i in range(5)])
    before = len(headspin.state.requests)
    rows = client.iter_measurements(flow, page_size=2)
    first = next(rows)
    assert len(headspin.state.requests) == before + 1  # one page fetched, no more
    rest = list(rows)
    assert sorted(r["value"] for r in [first, *rest]) == [0, 1, 2, 3, 4]
    assert len(headspin.state.requests) == before + 3 + 1  # pages of 2, 2, 1, then the empty one
    with pytest.raises(MeasurementError, match="page_size"):
        list(client.iter_measurements(flow, page_size=0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.add_session_measurements("f", SESSION, []), "no measurements to send"),
        (
            lambda c: c.add_event_measurements("f", "e", [{"key": "k", "value": float("inf")}]),
            "must be finite",
        ),
        (lambda c: c.add_event_measurements("f", "e", [{"key": "k"}]), "needs 'key' and 'value'"),
        (lambda c: c.create_event("f", "no-at-sign"), "device_id@hostname"),
        (lambda c: c.attach_session("f", SESSION, status="Done"), "status must be one of"),
        (lambda c: c.get_user_flow("../admin"), "user_flow_id must be an id string"),
        (lambda c: c.legacy_upload(), "needs at least one of"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(headspin, client, call, message) -> None:
    with pytest.raises(MeasurementError, match=message):
        call(client)
    assert headspin.state.requests == []


def test_errors_share_one_base_class() -> None:
    for error in (BadRequest, AuthError, NotFound, RetryableError):
        assert issubclass(error, HeadSpinError)


def test_proxies_from_the_environment_are_honoured_and_no_proxy_too(headspin, monkeypatch) -> None:
    with socket.socket() as closed:  # a port where no proxy listens
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    through_proxy = HeadSpinClient(TOKEN, base_url=headspin.url, retries=0)
    with through_proxy, pytest.raises(RetryableError, match="could not reach"):
        through_proxy.list_user_flows()  # it went to the proxy, which is not there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with HeadSpinClient(TOKEN, base_url=headspin.url, retries=0) as direct:
        assert direct.list_user_flows() == []
    assert len(headspin.state.requests) == 1


def test_a_netrc_entry_for_the_host_does_not_replace_the_token(
    headspin, tmp_path, monkeypatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    with HeadSpinClient(TOKEN, base_url=headspin.url, retries=0) as client:
        assert client.list_user_flows() == []  # sent with the Bearer token: not refused
