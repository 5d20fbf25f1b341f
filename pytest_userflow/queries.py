"""Reads of the local store: the run's summary, its tests, and the listings of the CLI.

No pytest import. Every function takes a :class:`~pytest_userflow.store.Store`; a store
that does not exist yet reads as empty.

>>> list(query_measurements(store, flow="Login", keys=["Login Time"]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .analysis import is_number, median
from .model import FILTER_STATUSES, parse_time
from .store import PENDING, Store, StoreError

#: The columns of the API's measurement listing, in the API's CSV order.
API_COLUMNS = (
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


def _select(store: Store, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    if not store.exists:
        return []
    with store.lock:
        return store.db.execute(sql, list(args)).fetchall()


#: The tests whose values the run's summary counts, as ``stats`` and the API do by default.
COUNTED_STATUSES = ("Passed", "Failed")


def run_summary(store: Store, run_id: str, worker: str | bool | None = False) -> dict[str, Any]:
    """One run's tests per flow and status, where their measurements went, and per (flow,
    key, type, device) the count, min, median, max and units of the values of its passed and
    failed tests (*left_out*: how many values of excluded tests were not counted).

    *worker*: False for every process of the run, else one process (None: in-process).
    """
    where = "run_id = ?"
    args: list[Any] = [run_id]
    if worker is not False:
        where += " AND worker IS ?"
        args.append(worker)
    flows: dict[str, dict[str, Any]] = {}

    def flow(name: str) -> dict[str, Any]:
        return flows.setdefault(name, {"tests": 0, "statuses": {}, "places": {}, "left_out": 0})

    for name, status, n in _select(
        store,
        f"SELECT user_flow_name, status, COUNT(*) FROM events WHERE {where} GROUP BY 1, 2",
        args,
    ):
        flow(name)["tests"] += n
        flow(name)["statuses"][status] = n
    reruns = _select(
        store,
        f"SELECT nodeid, attempts FROM events WHERE {where} AND attempts > 1 ORDER BY nodeid",
        args,
    )
    uploads = bool(_select(store, "SELECT 1 FROM uploads WHERE run_id = ? LIMIT 1", [run_id]))
    state = "u.state" if uploads else "NULL"
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for name, key, kind, device, units, value, place, status in _select(
        store,
        "SELECT e.user_flow_name, m.key_name, m.key_type, e.device_address, m.key_units,"
        f" m.value, {state}, e.status FROM events e JOIN measurement_rows m ON m.event = e.id"
        + (" LEFT JOIN uploads u ON u.perf_event_id = e.perf_event_id" if uploads else "")
        + f" WHERE {' AND '.join('e.' + p for p in where.split(' AND '))}",
        args,
    ):
        places = flow(name)["places"]
        places[place or ""] = places.get(place or "", 0) + 1
        if status not in COUNTED_STATUSES:
            flow(name)["left_out"] += 1
            continue
        group = groups.setdefault(
            (name, key, kind, device), {"count": 0, "values": [], "units": None}
        )
        group["count"] += 1
        group["units"] = units or group["units"]
        if is_number(value):
            group["values"].append(value)
    keys = []
    for (name, key, kind, device), group in sorted(
        groups.items(), key=lambda item: tuple((v is not None, v) for v in item[0])
    ):
        values = group["values"]
        keys.append(
            {
                "flow": name,
                "key": key,
                "type": kind,
                "device": device,
                "count": group["count"],
                "numeric": len(values),
                "min": min(values) if values else None,
                "median": median(values) if values else None,
                "max": max(values) if values else None,
                "units": group["units"],
            }
        )
    pending = _select(
        store,
        "SELECT COUNT(DISTINCT e.perf_event_id), COUNT(m.seq) FROM events e JOIN uploads u"
        " USING (perf_event_id) LEFT JOIN measurement_rows m ON m.event = e.id"
        f" WHERE {' AND '.join('e.' + p for p in where.split(' AND '))} AND u.state = ?",
        [*args, PENDING],
    )
    tests, measurements = pending[0] if pending else (0, 0)
    return {
        "flows": dict(sorted(flows.items())),
        "keys": keys,
        "pending": {"tests": tests, "measurements": measurements},
        "reruns": [[nodeid, attempts] for nodeid, attempts in reruns],
    }


def run_events(store: Store, run_id: str, worker: str | None = None) -> list[dict[str, Any]]:
    """This run's tests (one process's, given *worker*), with where their data went."""
    sql = (
        "SELECT e.id, e.perf_event_id, e.nodeid, e.user_flow_name, e.status, e.status_message,"
        " e.session_id, e.device_address, e.worker, e.event_time, e.duration,"
        " u.state, u.last_error, u.remote_event_id, e.attempts FROM events e"
        " LEFT JOIN uploads u ON u.perf_event_id = e.perf_event_id WHERE e.run_id = ?"
    )
    args: list[Any] = [run_id]
    if worker is not None:
        sql += " AND e.worker IS ?"
        args.append(worker)
    events: dict[int, dict[str, Any]] = {}
    for row in _select(store, sql + " ORDER BY e.event_ts, e.id", args):
        events[row[0]] = {
            "nodeid": row[2],
            "flow": row[3],
            "status": row[4],
            "status_message": row[5],
            "session_id": row[6],
            "device": row[7],
            "worker": row[8],
            "event_time": row[9],
            "duration": row[10],
            "local_event_id": row[1],
            "upload_state": row[11],
            "upload_error": row[12],
            "event_id": row[13],
            "attempts": row[14],
            "measurements": [],
        }
    if events:
        sql = (
            "SELECT event, key_name, value, key_type, key_units FROM measurements"
            " WHERE run_id = ?" + (" AND worker IS ?" if worker is not None else "")
        )
        for row in _select(store, sql + " ORDER BY event, seq", args):
            events[row[0]]["measurements"].append(
                {"key": row[1], "value": row[2], "type": row[3], "units": row[4]}
            )
    return list(events.values())


def flows(store: Store) -> list[dict[str, Any]]:
    sql = (
        "SELECT f.user_flow_id, f.name, f.description, f.created_time,"
        " (SELECT COUNT(*) FROM events e WHERE e.user_flow_id = f.user_flow_id),"
        " (SELECT COUNT(*) FROM measurements m WHERE m.user_flow_id = f.user_flow_id)"
        " FROM flows f ORDER BY f.name"
    )
    names = ("user_flow_id", "name", "description", "created_time", "tests", "measurements")
    return [dict(zip(names, row, strict=True)) for row in _select(store, sql)]


def runs(store: Store, limit: int | None = 20) -> list[dict[str, Any]]:
    """The recorded runs, newest first, with their test and measurement counts."""
    sql = (
        "SELECT r.run_id, r.started_at, r.finished_at, r.host, r.git_commit, r.git_branch,"
        " r.ci_build_id, r.backend, r.outcome,"
        " (SELECT COUNT(*) FROM events e WHERE e.run_id = r.run_id),"
        " (SELECT COUNT(*) FROM measurements m WHERE m.run_id = r.run_id)"
        " FROM runs r ORDER BY r.started_at DESC"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    names = (
        "run_id",
        "started_at",
        "finished_at",
        "host",
        "git_commit",
        "git_branch",
        "ci_build_id",
        "backend",
        "outcome",
        "tests",
        "measurements",
    )
    return [dict(zip(names, row, strict=True)) for row in _select(store, sql)]


def match_runs(store: Store, prefixes: Iterable[str]) -> list[str]:
    """The run ids that *prefixes* start, one each: an unknown or ambiguous one is an error."""
    prefixes = list(prefixes)
    if not prefixes:
        return []
    known = [r[0] for r in _select(store, "SELECT run_id FROM runs ORDER BY started_at DESC")]
    out = []
    for prefix in prefixes:
        found = [r for r in known if r.startswith(prefix)]
        if len(found) != 1:
            which = f": {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}" if found else ""
            raise StoreError(
                f"run {prefix!r} matches {len(found)} of the {len(known)} runs in {store.path}"
                f"{which}; give more of its id (pytest-userflow runs lists them)"
            )
        out.append(found[0])
    return out


def run_tests(store: Store) -> dict[str, set[str]]:
    """The node ids of the tests each run recorded."""
    tests: dict[str, set[str]] = {}
    for run_id, nodeid in _select(store, "SELECT DISTINCT run_id, nodeid FROM events"):
        tests.setdefault(run_id, set()).add(nodeid)
    return tests


def run_checks(store: Store, run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The budgets and regressions the gate checked in these runs, in the order made."""
    run_ids = list(run_ids)
    if not run_ids:
        return []
    names = (
        "run_id", "nodeid", "flow", "device", "key", "kind", "verdict", "value", "low", "high",
        "baseline", "change_pct", "noise_pct", "limit",
    )  # fmt: skip
    sql = (
        "SELECT e.run_id, e.nodeid, e.user_flow_name, e.device_address, c.key_name, c.kind,"
        " c.verdict, c.value, c.low, c.high, c.baseline, c.change_pct, c.noise_pct,"
        " c.limit_text FROM checks c JOIN events e ON e.id = c.event"
        f" WHERE e.run_id IN ({','.join('?' * len(run_ids))}) ORDER BY e.event_ts, c.rowid"
    )
    return [dict(zip(names, row, strict=True)) for row in _select(store, sql, run_ids)]


def resolve_flow(store: Store, flow: str) -> str | None:
    rows = _select(
        store, "SELECT user_flow_id FROM flows WHERE name = ? OR user_flow_id = ?", (flow, flow)
    )
    return str(rows[0][0]) if rows else None


def recent_values(
    store: Store,
    flow: str,
    key: str,
    limit: int,
    *,
    exclude_run: str | None = None,
    nodeid: str | None = None,
    device: str | None = None,
) -> list[Any]:
    """The newest *limit* values of passed tests for one flow and key (a baseline), of one
    test (*nodeid*, parameters included) and *device* when *nodeid* is given."""
    flow_id = resolve_flow(store, flow)
    if flow_id is None:
        return []
    sql = (
        "SELECT m.value FROM events e JOIN measurement_rows m ON m.event = e.id"
        " WHERE e.user_flow_id = ? AND m.key_name = ? AND e.status = 'Passed'"
        " AND e.run_id IS NOT ?"
    )
    args: list[Any] = [flow_id, key, exclude_run]
    if nodeid is not None:
        sql += " AND e.nodeid = ? AND e.device_address IS ?"
        args += [nodeid, device]
    sql += " ORDER BY e.event_ts DESC, m.seq DESC LIMIT ?"
    return [r[0] for r in _select(store, sql, [*args, int(limit)])]


def query_measurements(
    store: Store,
    *,
    flow: str | None = None,
    session_ids: Iterable[str] = (),
    keys: Iterable[str] = (),
    statuses: Iterable[str] = (),
    start_time: str | float | None = None,
    end_time: str | float | None = None,
    limit: int | None = None,
    offset: int | None = None,
    run_ids: Iterable[str] = (),
) -> Iterator[dict[str, Any]]:
    """The API's measurement listing over the local store, with the API's semantics.

    Filters combine with AND; repeated values of one filter with OR; times are
    inclusive; no status means passed, failed and not_set.
    """
    where: list[str] = []
    args: list[Any] = []
    if flow is not None:
        flow_id = resolve_flow(store, flow)
        if flow_id is None:
            raise StoreError(f"no user flow named or with id {flow!r} in {store.path}")
        where.append("user_flow_id = ?")
        args.append(flow_id)

    def any_of(column: str, values: Iterable[Any]) -> None:
        values = list(values)
        if values:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            args.extend(values)

    any_of("session_id", session_ids)
    any_of("key_name", keys)
    any_of("run_id", run_ids)
    wanted = [s.lower() for s in statuses] or ["passed", "failed", "not_set"]
    for s in wanted:
        if s not in FILTER_STATUSES:
            raise StoreError(f"status must be one of {', '.join(FILTER_STATUSES)}, got {s!r}")
    # Locally every test has a status; not_set matches none of them.
    any_of("status", [s.capitalize() for s in wanted if s != "not_set"] or ["-"])
    if start_time is not None:
        where.append("event_ts >= ?")
        args.append(parse_time(start_time))
    if end_time is not None:
        where.append("event_ts <= ?")
        args.append(parse_time(end_time))
    sql = (
        "SELECT user_flow_id, user_flow_name, perf_event_id, event_time, session_id,"
        " key_name, key_type, key_units, value, status, run_id, nodeid, worker,"
        " device_address FROM measurements"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY event_ts, event, seq"
    if limit is not None or offset is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset or 0]
    if not store.exists:
        return
    names = (
        "user_flow_id",
        "user_flow_name",
        "perf_event_id",
        "event_time",
        "session_id",
        "key_name",
        "key_type",
        "key_units",
        "value",
        "status",
        "run_id",
        "nodeid",
        "worker",
        "device_address",
    )
    with store.lock:
        cursor = store.db.execute(sql, args)
        rows = iter(lambda: cursor.fetchmany(1000), [])
        for chunk in rows:
            for r in chunk:
                row = dict(zip(names, r, strict=True))
                row["perf_key_id"] = None
                yield row


def point_of(row: dict[str, Any]) -> str:
    """The point of a trend a measurement row belongs to: its run, or (HeadSpin's rows have
    no run) its own event."""
    return str(row.get("run_id") or row.get("perf_event_id") or row["event_time"])


def run_series(
    rows: Iterable[dict[str, Any]], by: str | None = None
) -> dict[tuple[Any, ...], tuple[list[tuple[str, float]], str | None]]:
    """Per flow, key, type (and test or device, *by*): each run's median of the numeric
    values, as ``(run_id, median)`` in the order the runs came (*rows* are in time order).
    Rows without a run (HeadSpin's) are one point each, named by their event. With each
    series, its units."""
    values: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    units: dict[tuple[Any, ...], str | None] = {}
    for row in rows:
        if not is_number(row["value"]):
            continue
        extra = None
        if by == "test":
            extra = row.get("nodeid") or "-"
        elif by == "device":
            extra = row.get("device_address") or "-"
        group = (row["user_flow_name"], row["key_name"], row.get("key_type"), extra)
        point = point_of(row)
        values.setdefault(group, {}).setdefault(point, []).append(float(row["value"]))
        units[group] = row.get("key_units") or units.get(group)
    return {
        group: ([(point, median(v)) for point, v in runs.items()], units[group])
        for group, runs in sorted(values.items(), key=lambda g: tuple(str(x) for x in g[0]))
    }
