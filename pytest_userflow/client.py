"""A typed client for HeadSpin's Performance Monitoring API (no pytest import).

Every route of the API document is a method; the plugin's uploads and the
``pytest-userflow`` command go through it, so the wire format lives here only.

>>> c = HeadSpinClient(token, base_url="https://api-dev.headspin.io")   # doctest: +SKIP
>>> flow = c.create_user_flow("Login", description="cold start to home")  # doctest: +SKIP
>>> c.attach_session(flow["user_flow_id"], session_id, status="Passed")  # doctest: +SKIP

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from .model import (
    Measurement,
    MeasurementError,
    UserflowError,
    check_device_address,
    check_session_id,
    normalize_filter_status,
    normalize_status,
    parse_time,
)
from .options import DEFAULT_URL, TOKEN_ENV

if TYPE_CHECKING:
    import requests

TimeFilter = str | int | float | datetime | None
Params = list[tuple[str, str]]


class HeadSpinError(UserflowError):
    """HeadSpin answered with an error, or could not be reached.

    ``status_code`` is None when no answer came (connection refused, timeout).
    The token is never part of the message.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, method: str = "", path: str = ""
    ) -> None:
        self.status_code = status_code
        self.method = method
        self.path = path
        self.message = message
        where = f" to {method} {path}" if method else ""
        code = f"HeadSpin answered {status_code}{where}" if status_code else f"no answer{where}"
        super().__init__(f"{code}: {message}")


class BadRequest(HeadSpinError):
    """400: missing or invalid arguments, per the API document."""


class AuthError(HeadSpinError):
    """401 or 403: the token is missing, wrong or lacks the right."""


class NotFound(HeadSpinError):
    """404: the user flow, session or event does not exist."""


class RetryableError(HeadSpinError):
    """429, 5xx or a connection failure that outlived every retry."""


class LostAnswer(RetryableError):
    """A request that must not be sent twice (it creates something) may have been done, but
    no answer came: ask HeadSpin what it did before sending it again.

    ``timed_out``: the client stopped waiting for the answer, so HeadSpin may still be at
    the work (rather than having ended the exchange)."""

    def __init__(self, message: str, *, timed_out: bool = False, **where: Any) -> None:
        super().__init__(message, **where)
        self.timed_out = timed_out


#: Seconds to wait for an answer (connecting: at most 10), and tries after a failure.
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 5
#: The first retry's longest wait in seconds; each further one doubles it, with jitter.
DEFAULT_BACKOFF = 0.5


class ApiCall(NamedTuple):
    """One request as it goes on the wire (what dry runs print)."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None

    def describe(self) -> str:
        import json

        query = "&".join(f"{k}={v}" for k, v in self.params)
        body = "" if self.body is None else " " + json.dumps(self.body, sort_keys=True)
        return f"{self.method} {self.path}{'?' + query if query else ''}{body}"


def _time_param(name: str, value: TimeFilter) -> str | None:
    """A time filter's query value: an ISO or UNIX text as given, a number or a datetime
    (naive means UTC) as UNIX seconds; read as ``model.parse_time`` reads times."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, datetime)):
        kind = type(value).__name__
        raise MeasurementError(
            f"{name} must be an ISO time, a UNIX timestamp or a datetime, got {kind}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise MeasurementError(f"{name} must be finite, got {value!r}")
    try:
        seconds = parse_time(value)
    except UserflowError:
        raise MeasurementError(
            f"{name} must be an ISO time such as '2022-03-30 16:48:22' or a UNIX timestamp, "
            f"got {value!r}"
        ) from None
    if isinstance(value, str):
        return value.strip()
    return str(value) if isinstance(value, int) else repr(seconds)


def _count_param(name: str, value: int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MeasurementError(f"{name} must be a whole number >= 0, got {value!r}")
    return str(value)


def _strings(name: str, values: Iterable[str] | str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise MeasurementError(f"{name} filters must be non-empty strings, got {v!r}")
        out.append(v)
    return out


def measurement_params(
    *,
    session_ids: Iterable[str] = (),
    keys: Iterable[str] | str = (),
    start_time: TimeFilter = None,
    end_time: TimeFilter = None,
    statuses: Iterable[str] = (),
    limit: int | None = None,
    offset: int | None = None,
    kpis: Iterable[str] | str = (),
) -> Params:
    """The query of the measurement listings: repeated keys stay repeated."""
    params: Params = []
    params += [("session_id", check_session_id(s)) for s in _strings("session_id", session_ids)]
    params += [("key", k) for k in _strings("key", keys)]
    params += [("kpi", k) for k in _strings("kpi", kpis)]
    for name, value in (("start_time", start_time), ("end_time", end_time)):
        text = _time_param(name, value)
        if text is not None:
            params.append((name, text))
    params += [("status", normalize_filter_status(s)) for s in _strings("status", statuses)]
    for name, count in (("limit", limit), ("offset", offset)):
        text = _count_param(name, count)
        if text is not None:
            params.append((name, text))
    return params


def _data(
    measurements: Iterable[Measurement | Mapping[str, Any]], what: str
) -> list[dict[str, Any]]:
    data = [Measurement.coerce(m, where=what).to_api() for m in measurements]
    if not data:
        raise MeasurementError(f"{what}: no measurements to send (the API needs at least one)")
    return data


def _uuid_path(value: str, what: str) -> str:
    """Ids go into paths: refuse anything that would change the path."""
    if not isinstance(value, str) or not value or any(c in value for c in "/?#% "):
        raise MeasurementError(f"{what} must be an id string, got {value!r}")
    return value


class HeadSpinClient:
    """HeadSpin Performance Monitoring API over one keep-alive ``requests.Session``.

    Retries connection errors, 429 (honouring ``Retry-After``) and 5xx with
    exponential backoff and full jitter; never retries other 4xx.
    """

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_URL,
        timeout: float | tuple[float, float] | None = None,
        retries: int | None = None,
        *,
        backoff: float | None = None,
        max_backoff: float = 30.0,
        pool_size: int = 8,
        sleep: Callable[[float], Any] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise AuthError(f"no HeadSpin API token: set {TOKEN_ENV} or pass --headspin-token")
        self.base_url = base_url.rstrip("/")
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        self.timeout = timeout if isinstance(timeout, tuple) else (min(10.0, timeout), timeout)
        self.retries = DEFAULT_RETRIES if retries is None else retries
        self.backoff = DEFAULT_BACKOFF if backoff is None else backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.rng = rng
        # requests is imported here, not at module import: a run on the local store never
        # pays for loading it.
        import requests
        from requests.adapters import HTTPAdapter

        self._requests = requests
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # The environment is read once, for the one host this client talks to. With
        # trust_env, requests reads every environment variable (for proxies) and looks for a
        # .netrc at each request, and a .netrc entry for the host would replace the token
        # with its login. Proxies (with no_proxy) and a CA
        # bundle in REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE are honoured as requests would.
        self._session.trust_env = False
        self._session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self._session.verify = bundle
        self._token = token.strip()
        self._session.headers["Authorization"] = f"Bearer {self._token}"
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "pytest-userflow"

    def __repr__(self) -> str:
        return f"HeadSpinClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HeadSpinClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def retry_delay(self, attempt: int, response: requests.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                seconds = _parse_retry_after(retry_after)
                if seconds is not None:
                    return min(seconds, self.max_backoff * 4)
        return float(self.rng()) * min(self.max_backoff, self.backoff * 2.0**attempt)

    def call(self, call: ApiCall, *, raw: bool = False, once: bool = False) -> Any:
        """Send *call*; return the decoded JSON (or the response when *raw*).

        *once*: the call creates something, so it is sent again only after failures that
        show it was not done (429, a refused connection); after any other failure it raises
        :class:`LostAnswer`.
        """
        url = self.base_url + call.path
        attempt = 0
        while True:
            response: requests.Response | None = None
            failure: str
            sent = True  # the request may have reached HeadSpin
            timed_out = False  # and HeadSpin may still be at it
            try:
                response = self._session.request(
                    call.method,
                    url,
                    params=list(call.params) or None,
                    json=call.body,
                    timeout=self.timeout,
                )
            except (self._requests.ConnectionError, self._requests.Timeout) as exc:
                failure = f"{type(exc).__name__}: could not reach {self.base_url}"
                sent = not _never_sent(exc)
                timed_out = isinstance(exc, self._requests.ReadTimeout)
            except (
                self._requests.exceptions.ChunkedEncodingError,
                self._requests.exceptions.ContentDecodingError,
            ) as exc:
                # The request arrived and was answered; the answer broke on the way back.
                failure = f"{type(exc).__name__}: the answer from {self.base_url} was cut short"
            else:
                if response.status_code < 400:
                    if raw:
                        return response
                    if response.status_code == 204 or not response.content:
                        return {}
                    try:
                        return response.json()
                    except ValueError:
                        raise HeadSpinError(
                            f"the answer is not JSON: {self._hide(response.text[:200])!r}",
                            status_code=response.status_code,
                            method=call.method,
                            path=call.path,
                        ) from None
                if response.status_code != 429 and response.status_code < 500:
                    raise _error_for(response, call, self._hide(_message(response)))
                failure = self._hide(_message(response))
                sent = response.status_code != 429
            code = response.status_code if response is not None else None
            if once and sent:
                raise LostAnswer(
                    failure,
                    timed_out=timed_out,
                    status_code=code,
                    method=call.method,
                    path=call.path,
                )
            if attempt >= self.retries:
                raise RetryableError(failure, status_code=code, method=call.method, path=call.path)
            self.sleep(self.retry_delay(attempt, response))
            attempt += 1

    def _hide(self, text: str) -> str:
        """A server's text without this client's token, should the server repeat it."""
        return text.replace(self._token, "<token>")

    def _get(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        return self.call(ApiCall("GET", path, tuple(params)))

    def _send(self, method: str, path: str, body: Any) -> Any:
        return self.call(ApiCall(method, path, (), body))

    # -- user flows ------------------------------------------------------------------------

    def list_user_flows(self) -> list[dict[str, Any]]:
        return list(self._get("/v0/userflows").get("user_flows", []))

    def get_user_flow(self, user_flow_id: str) -> dict[str, Any]:
        return dict(self._get(f"/v0/userflows/{_uuid_path(user_flow_id, 'user_flow_id')}"))

    def create_user_flow(self, name: str, description: str | None = None) -> dict[str, Any]:
        """Create the flow, or get it if it exists (its description is then left alone)."""
        if not isinstance(name, str) or not name.strip():
            raise MeasurementError(f"user flow name must be a non-empty str, got {name!r}")
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        return dict(self._send("PUT", "/v0/userflows", body))

    def delete_user_flow(self, user_flow_id: str) -> dict[str, Any]:
        path = f"/v0/userflows/{_uuid_path(user_flow_id, 'user_flow_id')}"
        return dict(self._send("DELETE", path, None))

    # -- measurements of a flow ------------------------------------------------------------

    def _flow_path(self, user_flow_id: str, *rest: str) -> str:
        return "/".join(["/v0/userflows", _uuid_path(user_flow_id, "user_flow_id"), *rest])

    def get_measurements(
        self,
        user_flow_id: str,
        *,
        session_ids: Iterable[str] = (),
        keys: Iterable[str] | str = (),
        start_time: TimeFilter = None,
        end_time: TimeFilter = None,
        statuses: Iterable[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[dict[str, Any]]:
        """The flow's measurements, filtered as the API does.

        Repeated filters are ORed, different filters ANDed; times are inclusive (ISO, UNIX
        or datetime); no *statuses* means passed, failed and not_set.
        """
        params = measurement_params(
            session_ids=session_ids,
            keys=keys,
            start_time=start_time,
            end_time=end_time,
            statuses=statuses,
            limit=limit,
            offset=offset,
        )
        path = self._flow_path(user_flow_id, "measurements")
        return list(self._get(path, params).get("measurements", []))

    def iter_measurements(
        self,
        user_flow_id: str,
        *,
        page_size: int = 500,
        session_ids: Iterable[str] = (),
        keys: Iterable[str] | str = (),
        start_time: TimeFilter = None,
        end_time: TimeFilter = None,
        statuses: Iterable[str] = (),
    ) -> Iterator[dict[str, Any]]:
        """Every matching measurement, one page (limit/offset) at a time.

        Per the API document an empty page ends the listing; memory stays at one page.
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise MeasurementError(f"page_size must be a whole number >= 1, got {page_size!r}")
        filters: dict[str, Any] = {
            "session_ids": list(session_ids),
            "keys": keys,
            "start_time": start_time,
            "end_time": end_time,
            "statuses": list(statuses),
        }
        measurement_params(**filters)  # refuse bad filters before the first page is asked for
        return self._pages(user_flow_id, page_size, filters)

    def _pages(
        self, user_flow_id: str, page_size: int, filters: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.get_measurements(user_flow_id, limit=page_size, offset=offset, **filters)
            if not page:
                return
            yield from page
            offset += len(page)

    def get_measurements_csv(
        self,
        user_flow_id: str,
        *,
        session_ids: Iterable[str] = (),
        keys: Iterable[str] | str = (),
        start_time: TimeFilter = None,
        end_time: TimeFilter = None,
        statuses: Iterable[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> str:
        """The CSV listing; ``""`` when there is nothing (the API answers 204)."""
        params = measurement_params(
            session_ids=session_ids,
            keys=keys,
            start_time=start_time,
            end_time=end_time,
            statuses=statuses,
            limit=limit,
            offset=offset,
        )
        call = ApiCall(
            "GET", self._flow_path(user_flow_id, "measurements"), (*params, ("format", "csv"))
        )
        return self._csv(call)

    def _csv(self, call: ApiCall) -> str:
        """A CSV answer as text (UTF-8, whatever the answer's headers say); ``""`` for 204."""
        response = self.call(call, raw=True)
        return "" if response.status_code == 204 else response.content.decode("utf-8")

    def get_kpis(
        self,
        user_flow_id: str,
        *,
        session_ids: Iterable[str] = (),
        kpis: Iterable[str] | str = (),
        start_time: TimeFilter = None,
        end_time: TimeFilter = None,
        statuses: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """The KPI ("verizon") route: per session, each KPI's time to interactive, ttfb and
        availability."""
        params = measurement_params(
            session_ids=session_ids,
            kpis=kpis,
            start_time=start_time,
            end_time=end_time,
            statuses=statuses,
        )
        path = self._flow_path(user_flow_id, "verizon")
        return list(self._get(path, params).get("measurements", []))

    def get_kpis_csv(
        self,
        user_flow_id: str,
        *,
        session_ids: Iterable[str] = (),
        kpis: Iterable[str] | str = (),
        start_time: TimeFilter = None,
        end_time: TimeFilter = None,
        statuses: Iterable[str] = (),
    ) -> str:
        """The KPI route as CSV; ``""`` when there is nothing."""
        params = measurement_params(
            session_ids=session_ids,
            kpis=kpis,
            start_time=start_time,
            end_time=end_time,
            statuses=statuses,
        )
        path = self._flow_path(user_flow_id, "verizon")
        return self._csv(ApiCall("GET", path, (*params, ("format", "csv"))))

    # -- sessions and events: two kinds of performance event under a flow ----------------

    def _item_path(self, user_flow_id: str, kind: str, item_id: str, *rest: str) -> str:
        """``/v0/userflows/{flow}/sessions/{session_id}`` or ``.../events/{event_id}``."""
        checked = (
            check_session_id(item_id) if kind == "sessions" else _uuid_path(item_id, "event_id")
        )
        return self._flow_path(user_flow_id, kind, checked, *rest)

    def _list(self, user_flow_id: str, kind: str) -> list[dict[str, Any]]:
        return list(self._get(self._flow_path(user_flow_id, kind)).get(kind, []))

    def _item(self, user_flow_id: str, kind: str, item_id: str) -> dict[str, Any]:
        return dict(self._get(self._item_path(user_flow_id, kind, item_id)))

    def _set_status(
        self, user_flow_id: str, kind: str, item_id: str, status: str, message: str | None
    ) -> dict[str, Any]:
        path = self._item_path(user_flow_id, kind, item_id)
        return dict(self._send("PATCH", path, _status_body(status, message)))

    def _move(self, user_flow_id: str, kind: str, item_id: str, to: str) -> dict[str, Any]:
        body = {"user_flow_id": _uuid_path(to, "to_user_flow_id")}
        return dict(self._send("PATCH", self._item_path(user_flow_id, kind, item_id), body))

    def _remove(self, user_flow_id: str, kind: str, item_id: str) -> dict[str, Any]:
        return dict(self._send("DELETE", self._item_path(user_flow_id, kind, item_id), None))

    def _add_measurements(
        self,
        user_flow_id: str,
        kind: str,
        item_id: str,
        measurements: Iterable[Measurement | Mapping[str, Any]],
    ) -> dict[str, Any]:
        path = self._item_path(user_flow_id, kind, item_id, "measurements")
        body = {"data": _data(measurements, f"measurements for {kind[:-1]} {item_id}")}
        return dict(self._send("POST", path, body))

    def _measurements(
        self,
        user_flow_id: str,
        kind: str,
        item_id: str,
        keys: Iterable[str] | str,
        limit: int | None,
        offset: int | None,
    ) -> list[dict[str, Any]]:
        path = self._item_path(user_flow_id, kind, item_id, "measurements")
        params = measurement_params(keys=keys, limit=limit, offset=offset)
        return list(self._get(path, params).get("measurements", []))

    def list_sessions(self, user_flow_id: str) -> list[dict[str, Any]]:
        return self._list(user_flow_id, "sessions")

    def attach_session(
        self,
        user_flow_id: str,
        session_id: str,
        status: str | None = None,
        status_message: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"session_id": check_session_id(session_id)}
        if status is not None:
            body["status"] = normalize_status(status)
        if status_message is not None:
            body["status_message"] = status_message
        return dict(self._send("POST", self._flow_path(user_flow_id, "sessions"), body))

    def get_session(self, user_flow_id: str, session_id: str) -> dict[str, Any]:
        return self._item(user_flow_id, "sessions", session_id)

    def update_session(
        self, user_flow_id: str, session_id: str, status: str, status_message: str | None = None
    ) -> dict[str, Any]:
        return self._set_status(user_flow_id, "sessions", session_id, status, status_message)

    def move_session(
        self, user_flow_id: str, session_id: str, to_user_flow_id: str
    ) -> dict[str, Any]:
        return self._move(user_flow_id, "sessions", session_id, to_user_flow_id)

    def remove_session(self, user_flow_id: str, session_id: str) -> dict[str, Any]:
        return self._remove(user_flow_id, "sessions", session_id)

    def add_session_measurements(
        self,
        user_flow_id: str,
        session_id: str,
        measurements: Iterable[Measurement | Mapping[str, Any]],
    ) -> dict[str, Any]:
        return self._add_measurements(user_flow_id, "sessions", session_id, measurements)

    def get_session_measurements(
        self,
        user_flow_id: str,
        session_id: str,
        keys: Iterable[str] | str = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._measurements(user_flow_id, "sessions", session_id, keys, limit, offset)

    def get_session_measurements_csv(
        self, user_flow_id: str, session_id: str, keys: Iterable[str] | str = ()
    ) -> str:
        return self._item_csv(user_flow_id, "sessions", session_id, keys)

    def _item_csv(
        self, user_flow_id: str, kind: str, item_id: str, keys: Iterable[str] | str
    ) -> str:
        path = self._item_path(user_flow_id, kind, item_id, "measurements")
        params = (*measurement_params(keys=keys), ("format", "csv"))
        return self._csv(ApiCall("GET", path, params))

    def list_events(self, user_flow_id: str) -> list[dict[str, Any]]:
        return self._list(user_flow_id, "events")

    def create_event(
        self,
        user_flow_id: str,
        device_address: str | None = None,
        *,
        device_id: str | None = None,
        hostname: str | None = None,
    ) -> dict[str, Any]:
        """Create a performance event for a device, given as ``device_id@hostname`` or as
        *device_id* and *hostname*. Sent once: after a lost answer it raises
        :class:`LostAnswer` (the event may exist; see ``list_events``)."""
        if device_address is None:
            if not device_id or not hostname:
                raise MeasurementError(
                    "create_event needs device_address, or device_id and hostname"
                )
            device_address = f"{device_id}@{hostname}"
            check_device_address(device_address)
            body: dict[str, Any] = {"device_id": device_id, "hostname": hostname}
        else:
            body = {"device_address": check_device_address(device_address)}
        call = ApiCall("POST", self._flow_path(user_flow_id, "events"), (), body)
        return dict(self.call(call, once=True))

    def get_event(self, user_flow_id: str, event_id: str) -> dict[str, Any]:
        return self._item(user_flow_id, "events", event_id)

    def update_event(
        self, user_flow_id: str, event_id: str, status: str, status_message: str | None = None
    ) -> dict[str, Any]:
        return self._set_status(user_flow_id, "events", event_id, status, status_message)

    def move_event(self, user_flow_id: str, event_id: str, to_user_flow_id: str) -> dict[str, Any]:
        return self._move(user_flow_id, "events", event_id, to_user_flow_id)

    def remove_event(self, user_flow_id: str, event_id: str) -> dict[str, Any]:
        return self._remove(user_flow_id, "events", event_id)

    def add_event_measurements(
        self,
        user_flow_id: str,
        event_id: str,
        measurements: Iterable[Measurement | Mapping[str, Any]],
    ) -> dict[str, Any]:
        return self._add_measurements(user_flow_id, "events", event_id, measurements)

    def get_event_measurements(
        self,
        user_flow_id: str,
        event_id: str,
        keys: Iterable[str] | str = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._measurements(user_flow_id, "events", event_id, keys, limit, offset)

    def get_event_measurements_csv(
        self, user_flow_id: str, event_id: str, keys: Iterable[str] | str = ()
    ) -> str:
        return self._item_csv(user_flow_id, "events", event_id, keys)

    # -- legacy routes ---------------------------------------------------------------------

    def legacy_list_perftests(self) -> list[dict[str, Any]]:
        return list(self._get("/v0/perftests").get("perf_tests", []))

    def legacy_get_perftest(self, user_flow_id: str) -> dict[str, Any]:
        return dict(self._get(f"/v0/perftests/{_uuid_path(user_flow_id, 'user_flow_id')}"))

    def legacy_upload(
        self,
        *,
        test_name: str | None = None,
        session_id: str | None = None,
        status: str | None = None,
        data: Iterable[Measurement | Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``POST /v0/perftests/upload``: attach, set status (lowercase) and upload at once."""
        body: dict[str, Any] = {}
        if test_name is not None:
            if not isinstance(test_name, str) or not test_name.strip():
                raise MeasurementError(f"test_name must be a non-empty str, got {test_name!r}")
            body["test_name"] = test_name
        if session_id is not None:
            body["session_id"] = check_session_id(session_id)
        if status is not None:
            body["status"] = normalize_status(status).lower()
        if data is not None:
            body["data"] = _data(data, "legacy upload data")
        if not body:
            raise MeasurementError(
                "legacy_upload needs at least one of test_name, session_id, status, data"
            )
        return dict(self._send("POST", "/v0/perftests/upload", body))


def _status_body(status: str, status_message: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": normalize_status(status)}
    if status_message is not None:
        body["status_message"] = status_message
    return body


def _parse_retry_after(value: str) -> float | None:
    try:
        return max(0.0, float(value))  # seconds
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason or "error"
    if isinstance(payload, dict):
        for field in ("message", "error", "status_message", "detail", "status"):
            if isinstance(payload.get(field), str):
                return str(payload[field])
    return response.reason or f"error {response.status_code}"


def _error_for(response: requests.Response, call: ApiCall, message: str) -> HeadSpinError:
    code = response.status_code
    kwargs = {"status_code": code, "method": call.method, "path": call.path}
    if code in (401, 403):
        return AuthError(f"{message} (check {TOKEN_ENV})", **kwargs)  # type: ignore[arg-type]
    if code == 404:
        return NotFound(message, **kwargs)  # type: ignore[arg-type]
    if code == 400:
        return BadRequest(message, **kwargs)  # type: ignore[arg-type]
    return HeadSpinError(message, **kwargs)  # type: ignore[arg-type]


class DryRunClient(HeadSpinClient):
    """Sends nothing: records each call and answers with placeholder ids."""

    def __init__(self, base_url: str = DEFAULT_URL) -> None:
        super().__init__("dry-run", base_url=base_url, retries=0)
        self.calls: list[ApiCall] = []

    def call(self, call: ApiCall, *, raw: bool = False, once: bool = False) -> Any:
        self.calls.append(call)
        if call.method == "PUT" and call.path == "/v0/userflows":
            return {
                "user_flow_id": "<user_flow_id>",
                "name": call.body["name"],
            }
        if call.method == "POST" and call.path.endswith(("/events", "/sessions")):
            return {"perf_event_id": "<perf_event_id>"}
        return {}


def _never_sent(exc: Exception) -> bool:
    """Whether a connection error came before the request could reach the server: the
    connection was refused or never made (a reset or a read timeout may come after it)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None  # requests wraps urllib3's MaxRetryError
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError))
