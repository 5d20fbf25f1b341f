"""A strict stand-in for HeadSpin's Performance Monitoring API, written from the API document.

It keeps user flows, capture sessions, performance events and measurements in memory and
answers 400/404 where the document says. Capture sessions exist on HeadSpin before any
user flow knows them; tests create them with :meth:`HeadSpinState.add_session`.

Faults can be injected (:class:`Faults`): a share of 503s, a 429 every N requests with
``Retry-After``, added latency, dropped connections, and answers lost or late after the
work was done (what a proxy timeout or a reset connection does).

Run it by hand: ``python tests/headspin_server.py --port 8099 --token secret``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

STATUSES = {"passed": "Passed", "failed": "Failed", "excluded": "Excluded"}
FILTER_STATUS = {
    "Passed": "passed",
    "Failed": "failed",
    "Not Set": "not_set",
    "Excluded": "excluded",
}
MEASUREMENT_FIELDS = (
    "user_flow_id",
    "user_flow_name",
    "perf_event_id",
    "event_time",
    "session_id",
    "perf_key_id",
    "key_name",
    "key_type",
    "key_units",
    "value",
)


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def _parse_time(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"Invalid {name}: {text!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _uuid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid arguments ({what})")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, f"Invalid arguments (bad {what})") from None


def _status(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in STATUSES:
        raise ApiError(400, 'Invalid status (Must be one of "Passed", "Failed", "Excluded")')
    return STATUSES[value.lower()]


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"Invalid arguments ({name} must be a string)")
    return value


def _only(body: Any, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "Missing or invalid arguments (a JSON object is required)")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, f"Invalid arguments (unknown fields {sorted(unknown)})")
    missing = required - set(body)
    if missing:
        raise ApiError(400, f"Missing argument ({', '.join(sorted(missing))})")
    return body


def _measurement_data(body: Any) -> list[dict[str, Any]]:
    body = _only(body, {"data"}, {"data"})
    data = body["data"]
    if not isinstance(data, list) or not data:
        raise ApiError(400, "Invalid or missing measurement data")
    for item in data:
        if not isinstance(item, dict) or set(item) - {"key", "value", "type", "units"}:
            raise ApiError(400, "Invalid or missing measurement data")
        key, value = item.get("key"), item.get("value")
        if not isinstance(key, str) or not key:
            raise ApiError(400, "Invalid or missing measurement data (key)")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ApiError(400, "Invalid or missing measurement data (value)")
        if isinstance(value, float) and value != value:
            raise ApiError(400, "Invalid or missing measurement data (value)")
        for name in ("type", "units"):
            if item.get(name) is not None and not isinstance(item[name], str):
                raise ApiError(400, f"Invalid or missing measurement data ({name})")
    return data


@dataclass
class Faults:
    """What to break. All zero: a well-behaved server."""

    error_rate: float = 0.0  # share of requests answered 503
    every_429: int = 0  # every N-th request is answered 429 with Retry-After
    retry_after: float = 0.01  # sent with every injected 429 (and 503, see below)
    retry_after_on_503: bool = True
    latency: float = 0.0  # seconds added to every request
    drop_rate: float = 0.0  # share of connections closed without an answer, the work not done
    lose_rate: float = 0.0  # share of requests done, then the connection closed unanswered
    late_rate: float = 0.0  # share of requests done, then answered after late_delay seconds
    late_delay: float = 1.0
    down: bool = False  # every request answered 503
    down_after_lose: bool = False  # once an answer was lost, down
    echo_token: bool = False  # a hostile 401 that repeats the Authorization header it got
    # the next answers, in order: "503", "429", "drop", "lose", "late", "truncate" (the work is
    # done; the answer stops short of its Content-Length), "garbage" (a 200 whose JSON is not
    # the document's shape, the work not done: a broken proxy), or None (a normal one)
    script: list[str | None] = field(default_factory=list)
    # only requests whose "METHOD /path" matches this regular expression get faults
    match: str | None = None
    # a slow route, by a "METHOD /path" regular expression: seconds before its work is done
    # (the thing is made late), and seconds after the work before the answer (answered late)
    work_delay: dict[str, float] = field(default_factory=dict)
    answer_delay: dict[str, float] = field(default_factory=dict)
    slowed: int = 0  # requests a delay above held (counted on arrival)
    seed: int = 1234
    injected: int = 0
    _count: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def decide(self, method: str = "GET", path: str = "/") -> str | None:
        if self.down:
            return "503"
        if self.match is not None and not re.search(self.match, f"{method} {path}"):
            return None
        self._count += 1
        if self.script:
            fault = self.script.pop(0)
            self.down = self.down_after_lose and fault == "lose"
            return fault
        if self.every_429 and self._count % self.every_429 == 0:
            return "429"
        roll = self._rng.random()
        for fault, rate in (
            ("drop", self.drop_rate),
            ("503", self.error_rate),
            ("lose", self.lose_rate),
            ("late", self.late_rate),
        ):
            if roll < rate:
                return fault
            roll -= rate
        return None

    def slow(self, delays: dict[str, float], method: str, path: str) -> None:
        """Wait as long as *delays* says for this request's route."""
        delay = sum(s for route, s in delays.items() if re.search(route, f"{method} {path}"))
        if delay:
            self.slowed += 1
            time.sleep(delay)


class HeadSpinState:
    """Everything the stand-in knows; every method holds the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.flows: dict[str, dict[str, Any]] = {}
        self.capture_sessions: dict[str, dict[str, str]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.measurements: dict[str, dict[tuple[str, str | None], dict[str, Any]]] = {}
        self.key_ids: dict[tuple[str, str | None], str] = {}
        self.requests: list[tuple[str, str, list[tuple[str, str]], Any]] = []

    # -- set-up helpers for tests -------------------------------------------------------------

    def add_session(
        self,
        session_id: str | None = None,
        device_id: str = "289ad974",
        host: str = "proxy-us-mvo-5.headspin.io",
    ) -> str:
        """A capture session as HeadSpin would have after an Appium run."""
        sid = str(uuid.UUID(session_id)) if session_id else str(uuid.uuid4())
        with self.lock:
            self.capture_sessions[sid] = {"host": host, "device_id": device_id}
        return sid

    def flow_by_name(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            return next((f for f in self.flows.values() if f["name"] == name), None)

    def measurements_of(self, flow_name: str) -> list[dict[str, Any]]:
        flow = self.flow_by_name(flow_name)
        if flow is None:
            return []
        with self.lock:
            return self._rows(
                flow["user_flow_id"], statuses={"passed", "failed", "not_set", "excluded"}
            )

    # -- lookups -------------------------------------------------------------------------------

    def _flow(self, flow_id: str) -> dict[str, Any]:
        flow = self.flows.get(flow_id)
        if flow is None:
            raise ApiError(404, "User flow does not exist")
        return flow

    def _session_event(self, flow_id: str, session_id: str) -> dict[str, Any]:
        self._flow(flow_id)
        for event in self.events.values():
            if event["session_id"] == session_id and event["user_flow_id"] == flow_id:
                return event
        raise ApiError(404, "User flow or session does not exist")

    def _event(self, flow_id: str, event_id: str) -> dict[str, Any]:
        self._flow(flow_id)
        event = self.events.get(event_id)
        if event is None or event["user_flow_id"] != flow_id:
            raise ApiError(404, "User flow or event does not exist")
        return event

    @staticmethod
    def _info(event: dict[str, Any]) -> dict[str, Any]:
        return {
            k: event[k]
            for k in (
                "user_flow_id",
                "perf_event_id",
                "session_id",
                "status",
                "status_message",
                "host",
                "device_id",
                "event_time",
            )
        }

    def _new_event(
        self, flow_id: str, session_id: str | None, host: str, device_id: str
    ) -> dict[str, Any]:
        event = {
            "user_flow_id": flow_id,
            "perf_event_id": str(uuid.uuid4()),
            "session_id": session_id,
            "status": "Not Set",
            "status_message": None,
            "host": host,
            "device_id": device_id,
            "event_time": _now(),
        }
        self.events[event["perf_event_id"]] = event
        self.measurements[event["perf_event_id"]] = {}
        return event

    def _add_measurements(self, event: dict[str, Any], data: list[dict[str, Any]]) -> None:
        stored = self.measurements[event["perf_event_id"]]
        for item in data:
            key = (item["key"], item.get("type"))
            key_id = self.key_ids.setdefault(key, str(uuid.uuid4()))
            stored[key] = {
                "key_name": item["key"],
                "key_type": item.get("type"),
                "key_units": item.get("units"),
                "value": item["value"],
                "perf_key_id": key_id,
            }

    def _rows(
        self,
        flow_id: str | None,
        *,
        event_id: str | None = None,
        session_ids: set[str] = frozenset(),
        keys: set[str] = frozenset(),
        statuses: set[str] = frozenset(),
        start: float | None = None,
        end: float | None = None,
    ) -> list[dict[str, Any]]:
        rows = []
        for event in self.events.values():
            if flow_id is not None and event["user_flow_id"] != flow_id:
                continue
            if event_id is not None and event["perf_event_id"] != event_id:
                continue
            if session_ids and event["session_id"] not in session_ids:
                continue
            if statuses and FILTER_STATUS[event["status"]] not in statuses:
                continue
            ts = _ts(event["event_time"])
            if (start is not None and ts < start) or (end is not None and ts > end):
                continue
            flow = self.flows[event["user_flow_id"]]
            for m in self.measurements[event["perf_event_id"]].values():
                if keys and m["key_name"] not in keys:
                    continue
                rows.append(
                    {
                        "user_flow_id": flow["user_flow_id"],
                        "user_flow_name": flow["name"],
                        "perf_event_id": event["perf_event_id"],
                        "event_time": event["event_time"],
                        "session_id": event["session_id"],
                        **m,
                    }
                )
        return [{k: r[k] for k in MEASUREMENT_FIELDS} for r in rows]

    # -- routes --------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: list[tuple[str, str]], body: Any
    ) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, query, body))
            for pattern, verb, handler in ROUTES:
                match = re.fullmatch(pattern, path)
                if match and verb == method:
                    return handler(self, query, body, *match.groups())
            if any(re.fullmatch(p, path) for p, _, _ in ROUTES):
                raise ApiError(405, f"{method} is not allowed on {path}")
            raise ApiError(404, f"No route {path}")

    def list_flows(self, q: Any, body: Any) -> tuple[int, Any]:
        return 200, {"user_flows": list(self.flows.values())}

    def create_flow(self, q: Any, body: Any) -> tuple[int, Any]:
        body = _only(body, {"name", "description"}, {"name"})
        if not isinstance(body["name"], str) or not body["name"].strip():
            raise ApiError(400, "Missing or invalid arguments (name)")
        description = _optional_str(body, "description")
        existing = self.flow_by_name(body["name"])
        if existing is not None:
            return 200, existing
        flow = {
            "user_flow_id": str(uuid.uuid4()),
            "name": body["name"],
            "description": description,
            "created_time": round(time.time(), 3),
        }
        self.flows[flow["user_flow_id"]] = flow
        return 200, flow

    def get_flow(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        return 200, self._flow(flow_id)

    def delete_flow(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        self._flow(flow_id)
        del self.flows[flow_id]
        for event_id in [e for e, ev in self.events.items() if ev["user_flow_id"] == flow_id]:
            del self.events[event_id], self.measurements[event_id]
        return 200, {"status": "Success", "status_code": 200}

    def _listing(self, query: list[tuple[str, str]], allowed: set[str]) -> dict[str, Any]:
        params: dict[str, Any] = {"session_id": set(), "key": set(), "status": set(), "kpi": set()}
        for name, value in query:
            if name not in allowed:
                raise ApiError(400, f"Invalid argument {name}")
            if name == "session_id":
                params[name].add(_uuid(value, "session_id"))
            elif name in ("key", "kpi"):
                params[name].add(value)
            elif name == "status":
                if value not in FILTER_STATUS.values():
                    raise ApiError(400, f"Invalid status {value!r}")
                params[name].add(value)
            elif name in ("start_time", "end_time"):
                params[name] = _parse_time(name, value)
            elif name in ("limit", "offset"):
                if not value.isdigit():
                    raise ApiError(400, f"Invalid {name}: {value!r}")
                params[name] = int(value)
            elif name == "format":
                if value not in ("csv", "json"):
                    raise ApiError(400, f"Invalid format: {value!r}")
                params[name] = value
        return params

    @staticmethod
    def _page(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
        offset = p.get("offset", 0)
        limit = p.get("limit")
        return rows[offset:] if limit is None else rows[offset : offset + limit]

    @staticmethod
    def _as(
        rows: list[dict[str, Any]], p: dict[str, Any], columns: tuple[str, ...] = MEASUREMENT_FIELDS
    ) -> tuple[int, Any]:
        if p.get("format") != "csv":
            return 200, {"measurements": rows}
        if not rows:
            return 204, None
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(
                [
                    ""
                    if r.get(c) is None
                    else (float(r[c]) if c == "value" and isinstance(r[c], (int, float)) else r[c])
                    for c in columns
                ]
            )
        return 200, out.getvalue()

    def flow_measurements(self, query: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        self._flow(flow_id)
        p = self._listing(
            query,
            {"session_id", "key", "start_time", "end_time", "limit", "offset", "format", "status"},
        )
        rows = self._rows(
            flow_id,
            session_ids=p["session_id"],
            keys=p["key"],
            statuses=p["status"] or {"passed", "failed", "not_set"},
            start=p.get("start_time"),
            end=p.get("end_time"),
        )
        rows.sort(key=lambda r: (r["event_time"], r["perf_event_id"], r["key_name"]))
        return self._as(self._page(rows, p), p)

    def kpis(self, query: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        flow = self._flow(flow_id)
        p = self._listing(
            query, {"session_id", "kpi", "start_time", "end_time", "format", "status"}
        )
        rows = self._rows(
            flow_id,
            session_ids=p["session_id"],
            statuses=p["status"] or {"passed", "failed", "not_set"},
            start=p.get("start_time"),
            end=p.get("end_time"),
        )
        by_event: dict[str, dict[str, Any]] = {}
        for r in rows:
            by_event.setdefault(r["perf_event_id"], {})[r["key_name"]] = r
        out = []
        for values in by_event.values():
            for name in sorted(values):
                if name + "_ttfb" not in values or (p["kpi"] and name not in p["kpi"]):
                    continue
                first = values[name]
                availability = values.get(name + "_Availability")
                out.append(
                    {
                        "session_id": first["session_id"],
                        "user_flow_id": flow_id,
                        "user_flow_name": flow["name"],
                        "session_start_time": first["event_time"],
                        "location": None,
                        "kpi": name,
                        "time_to_interactive": first["value"],
                        "availability": availability["value"] if availability else None,
                        "ttfb": values[name + "_ttfb"]["value"],
                    }
                )
        columns = (
            "session_id",
            "user_flow_id",
            "user_flow_name",
            "session_start_time",
            "location",
            "kpi",
            "time_to_interactive",
            "availability",
            "ttfb",
        )
        return self._as(out, p, columns)

    def list_sessions(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        self._flow(flow_id)
        events = [
            self._info(e)
            for e in self.events.values()
            if e["user_flow_id"] == flow_id and e["session_id"]
        ]
        return 200, {"sessions": events}

    def attach_session(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        body = _only(body, {"session_id", "status", "status_message"}, {"session_id"})
        sid = _uuid(body["session_id"], "session_id")
        status = _status(body["status"]) if body.get("status") is not None else None
        message = _optional_str(body, "status_message")
        self._flow(flow_id)
        capture = self.capture_sessions.get(sid)
        if capture is None:
            raise ApiError(404, "Session does not exist")
        event = next((e for e in self.events.values() if e["session_id"] == sid), None)
        if event is not None and event["user_flow_id"] != flow_id:
            raise ApiError(400, "Session already belongs to another user flow")
        if event is None:
            event = self._new_event(flow_id, sid, capture["host"], capture["device_id"])
        if status is not None:
            event["status"] = status
        if "status_message" in body:
            event["status_message"] = message
        return 200, self._info(event)

    def get_session(self, q: Any, body: Any, flow_id: str, sid: str) -> tuple[int, Any]:
        return 200, self._info(self._session_event(flow_id, _uuid(sid, "session_id")))

    def _patch(self, event: dict[str, Any], body: Any) -> tuple[int, Any]:
        if isinstance(body, dict) and "user_flow_id" in body:
            body = _only(body, {"user_flow_id"})
            target = body["user_flow_id"]
            if not isinstance(target, str) or target not in self.flows:
                raise ApiError(404, "User flow or session does not exist")
            event["user_flow_id"] = target
            return 200, self._info(event)
        body = _only(body, {"status", "status_message"}, {"status"})
        event["status"] = _status(body["status"])
        event["status_message"] = _optional_str(body, "status_message")
        return 200, self._info(event)

    def patch_session(self, q: Any, body: Any, flow_id: str, sid: str) -> tuple[int, Any]:
        return self._patch(self._session_event(flow_id, _uuid(sid, "session_id")), body)

    def delete_session(self, q: Any, body: Any, flow_id: str, sid: str) -> tuple[int, Any]:
        event = self._session_event(flow_id, _uuid(sid, "session_id"))
        del self.events[event["perf_event_id"]], self.measurements[event["perf_event_id"]]
        return 200, {"status": "Success", "status_code": 200}

    def post_session_measurements(
        self, q: Any, body: Any, flow_id: str, sid: str
    ) -> tuple[int, Any]:
        data = _measurement_data(body)
        self._add_measurements(self._session_event(flow_id, _uuid(sid, "session_id")), data)
        return 200, {"status": "Sucesss", "status_code": 200}

    def get_session_measurements(
        self, query: Any, body: Any, flow_id: str, sid: str
    ) -> tuple[int, Any]:
        event = self._session_event(flow_id, _uuid(sid, "session_id"))
        p = self._listing(query, {"key", "limit", "offset", "format"})
        return self._as(
            self._page(self._rows(flow_id, event_id=event["perf_event_id"], keys=p["key"]), p), p
        )

    def list_events(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        self._flow(flow_id)
        return 200, {
            "events": [self._info(e) for e in self.events.values() if e["user_flow_id"] == flow_id]
        }

    def create_event(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        if (
            isinstance(body, dict)
            and "device_address" not in body
            and {"device_id", "hostname"} <= set(body)
        ):
            body = _only(body, {"device_id", "hostname"})
            device_id, host = body["device_id"], body["hostname"]
        else:
            body = _only(body, {"device_address"}, {"device_address"})
            address = body["device_address"]
            device_id, _, host = (
                address.partition("@") if isinstance(address, str) else ("", "", "")
            )
        if (
            not isinstance(device_id, str)
            or not isinstance(host, str)
            or not device_id
            or not host
            or "@" in host
        ):
            raise ApiError(400, "Missing or invalid device_address")
        self._flow(flow_id)
        return 200, self._info(self._new_event(flow_id, None, host, device_id))

    def get_event(self, q: Any, body: Any, flow_id: str, eid: str) -> tuple[int, Any]:
        return 200, self._info(self._event(flow_id, eid))

    def patch_event(self, q: Any, body: Any, flow_id: str, eid: str) -> tuple[int, Any]:
        return self._patch(self._event(flow_id, eid), body)

    def delete_event(self, q: Any, body: Any, flow_id: str, eid: str) -> tuple[int, Any]:
        self._event(flow_id, eid)
        del self.events[eid], self.measurements[eid]
        return 200, {"status": "Success", "status_code": 200}

    def post_event_measurements(self, q: Any, body: Any, flow_id: str, eid: str) -> tuple[int, Any]:
        data = _measurement_data(body)
        self._add_measurements(self._event(flow_id, eid), data)
        return 200, {"status": "Sucesss", "status_code": 200}

    def get_event_measurements(
        self, query: Any, body: Any, flow_id: str, eid: str
    ) -> tuple[int, Any]:
        self._event(flow_id, eid)
        p = self._listing(query, {"key", "limit", "offset", "format"})
        return self._as(self._page(self._rows(flow_id, event_id=eid, keys=p["key"]), p), p)

    @staticmethod
    def _legacy(flow: dict[str, Any]) -> dict[str, Any]:
        return {
            "created_time": flow["created_time"],
            "perf_test_id": flow["user_flow_id"],
            "description": flow["description"],
            "name": flow["name"],
        }

    def legacy_list(self, q: Any, body: Any) -> tuple[int, Any]:
        return 200, {"perf_tests": [self._legacy(f) for f in self.flows.values()]}

    def legacy_get(self, q: Any, body: Any, flow_id: str) -> tuple[int, Any]:
        return 200, self._legacy(self._flow(flow_id))

    def legacy_upload(self, q: Any, body: Any) -> tuple[int, Any]:
        body = _only(body, {"test_name", "session_id", "status", "data"}, {"session_id"})
        sid = _uuid(body["session_id"], "session_id")
        status = None
        if body.get("status") is not None:
            if body["status"] not in STATUSES:  # lowercase on this route
                raise ApiError(400, 'Invalid status (one of "passed", "failed", "excluded")')
            status = STATUSES[body["status"]]
        data = _measurement_data({"data": body["data"]}) if "data" in body else None
        event = next((e for e in self.events.values() if e["session_id"] == sid), None)
        if body.get("test_name") is not None:
            name = body["test_name"]
            if not isinstance(name, str) or not name.strip():
                raise ApiError(400, "Invalid test_name")
            flow = self.flow_by_name(name) or self.create_flow(None, {"name": name})[1]
            if event is not None and event["user_flow_id"] != flow["user_flow_id"]:
                raise ApiError(400, "Session already belongs to another user flow")
            if event is None:
                capture = self.capture_sessions.get(sid)
                if capture is None:
                    raise ApiError(404, "Session does not exist")
                event = self._new_event(
                    flow["user_flow_id"], sid, capture["host"], capture["device_id"]
                )
        if event is None:
            raise ApiError(400, "Session is not attached to a user flow (give test_name)")
        if status is not None:
            event["status"] = status
        if data is not None:
            self._add_measurements(event, data)
        return 200, {"status": "Success", "status_code": 200}


_ID = r"([^/]+)"
_FLOW = r"/v0/userflows/" + _ID
ROUTES: list[tuple[str, str, Callable[..., tuple[int, Any]]]] = [
    (r"/v0/userflows", "GET", HeadSpinState.list_flows),
    (r"/v0/userflows", "PUT", HeadSpinState.create_flow),
    (_FLOW, "GET", HeadSpinState.get_flow),
    (_FLOW, "DELETE", HeadSpinState.delete_flow),
    (_FLOW + "/measurements", "GET", HeadSpinState.flow_measurements),
    (_FLOW + "/verizon", "GET", HeadSpinState.kpis),
    (_FLOW + "/sessions", "GET", HeadSpinState.list_sessions),
    (_FLOW + "/sessions", "POST", HeadSpinState.attach_session),
    (_FLOW + "/sessions/" + _ID, "GET", HeadSpinState.get_session),
    (_FLOW + "/sessions/" + _ID, "PATCH", HeadSpinState.patch_session),
    (_FLOW + "/sessions/" + _ID, "DELETE", HeadSpinState.delete_session),
    (_FLOW + "/sessions/" + _ID + "/measurements", "POST", HeadSpinState.post_session_measurements),
    (_FLOW + "/sessions/" + _ID + "/measurements", "GET", HeadSpinState.get_session_measurements),
    (_FLOW + "/events", "GET", HeadSpinState.list_events),
    (_FLOW + "/events", "POST", HeadSpinState.create_event),
    (_FLOW + "/events/" + _ID, "GET", HeadSpinState.get_event),
    (_FLOW + "/events/" + _ID, "PATCH", HeadSpinState.patch_event),
    (_FLOW + "/events/" + _ID, "DELETE", HeadSpinState.delete_event),
    (_FLOW + "/events/" + _ID + "/measurements", "POST", HeadSpinState.post_event_measurements),
    (_FLOW + "/events/" + _ID + "/measurements", "GET", HeadSpinState.get_event_measurements),
    (r"/v0/perftests", "GET", HeadSpinState.legacy_list),
    (r"/v0/perftests/upload", "POST", HeadSpinState.legacy_upload),
    (r"/v0/perftests/" + _ID, "GET", HeadSpinState.legacy_get),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes: without this, each answer on a kept-alive
    # connection waits for the client's delayed acknowledgement.
    disable_nagle_algorithm = True
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if payload is None:
            data, kind = b"", "application/json"
        elif isinstance(payload, str):
            data, kind = payload.encode(), "text/csv"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        srv = self.server
        fault = srv.faults.decide(self.command, urlsplit(self.path).path)
        if srv.faults.latency:
            time.sleep(srv.faults.latency)
        if fault == "drop":
            srv.faults.injected += 1
            self.close_connection = True
            return
        if fault == "garbage":
            srv.faults.injected += 1
            self._answer(200, ["not", "an", "answer"])
            return
        if fault in ("503", "429"):
            srv.faults.injected += 1
            with_header = fault == "429" or srv.faults.retry_after_on_503
            headers = {"Retry-After": str(srv.faults.retry_after)} if with_header else {}
            self._answer(int(fault), {"status": "Error", "status_code": int(fault)}, headers)
            return
        if self.headers.get("Authorization") != f"Bearer {srv.token}":
            answer = {"status": "Unauthorized", "status_code": 401}
            if srv.faults.echo_token:
                answer["message"] = f"bad credentials: {self.headers.get('Authorization')}"
            self._answer(401, answer)
            return
        url = urlsplit(self.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._answer(400, {"status": "Error", "status_code": 400, "message": "Invalid JSON"})
            return
        srv.faults.slow(srv.faults.work_delay, self.command, url.path)
        try:
            code, payload = srv.state.handle(
                self.command, url.path, parse_qsl(url.query, keep_blank_values=True), body
            )
        except ApiError as exc:
            code, payload = (
                exc.code,
                {"status": "Error", "status_code": exc.code, "message": exc.message},
            )
        if fault == "lose":  # the work is done; the answer never comes
            srv.faults.injected += 1
            self.close_connection = True
            return
        if fault == "truncate":
            srv.faults.injected += 1
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) + 10))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        if fault == "late":  # the work is done; the answer comes after the client gave up
            srv.faults.injected += 1
            time.sleep(srv.faults.late_delay)
        srv.faults.slow(srv.faults.answer_delay, self.command, url.path)
        self._answer(code, payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve


class StandInServer(ThreadingHTTPServer):
    """The stand-in on 127.0.0.1 and a free port, serving from a daemon thread."""

    daemon_threads = True

    def __init__(self, token: str = "test-token", port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.token = token
        self.state = HeadSpinState()
        self.faults = Faults()
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> StandInServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--token", default="test-token")
    args = parser.parse_args()
    with StandInServer(args.token, args.port) as server:
        print(f"stand-in HeadSpin on {server.url} (token {args.token!r}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            server.thread.join()
