"""The local SQLite store: every recorded test, its measurements and its pending uploads.

It is the write-ahead log of the plugin (a test's data is committed here before any
upload) and the local backend. WAL mode lets several xdist workers write one file.
No pytest import: the CLI opens it too.

>>> store = Store(".userflow/userflow.db")                      # doctest: +SKIP
>>> store.query_measurements(flow="Login", keys=["Login Time"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from .measurement import FILTER_STATUSES, Measurement, UserflowError

SCHEMA_VERSION = 3
OUR_TABLES = {"runs", "flows", "events", "measurements", "measurement_rows", "uploads", "journals"}
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

#: A measurement row holds only what is its own (key, type, units, value) and points at its
#: event: narrow rows keep a test's teardown cheap to fold and a run cheap to summarize.
#: The ``measurements`` view joins them back into the API's columns for every reader.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at REAL, finished_at REAL, host TEXT,
    git_commit TEXT, git_branch TEXT, ci_build_id TEXT, backend TEXT
);
CREATE TABLE IF NOT EXISTS flows (
    user_flow_id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, description TEXT,
    created_time REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, perf_event_id TEXT UNIQUE NOT NULL, run_id TEXT NOT NULL,
    user_flow_id TEXT NOT NULL, user_flow_name TEXT NOT NULL, nodeid TEXT NOT NULL, worker TEXT,
    device_address TEXT, session_id TEXT, status TEXT NOT NULL, status_message TEXT,
    event_ts REAL NOT NULL, event_time TEXT NOT NULL, duration REAL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, worker);
CREATE INDEX IF NOT EXISTS events_flow ON events(user_flow_id, event_ts);
CREATE TABLE IF NOT EXISTS measurement_rows (
    id INTEGER PRIMARY KEY, event INTEGER NOT NULL, key_name TEXT NOT NULL, key_type TEXT,
    key_units TEXT, value
);
CREATE INDEX IF NOT EXISTS measurement_rows_event ON measurement_rows(event);
CREATE INDEX IF NOT EXISTS measurement_rows_key ON measurement_rows(key_name, event);
CREATE VIEW IF NOT EXISTS measurements AS SELECT m.id AS id, e.perf_event_id, e.run_id,
    e.user_flow_id, e.user_flow_name, e.event_time, e.event_ts, e.session_id, e.status,
    m.key_name, m.key_type, m.key_units, m.value, e.nodeid, e.worker, e.device_address
    FROM measurement_rows m JOIN events e ON e.id = m.event;
CREATE TABLE IF NOT EXISTS uploads (
    perf_event_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, state TEXT NOT NULL,
    base_url TEXT, api TEXT, plan TEXT NOT NULL, progress TEXT, attempts INTEGER DEFAULT 0,
    last_error TEXT, remote_event_id TEXT, updated_ts REAL
);
CREATE INDEX IF NOT EXISTS uploads_state ON uploads(state);
CREATE TABLE IF NOT EXISTS journals (name TEXT PRIMARY KEY, folded INTEGER NOT NULL);
"""

#: The columns of ``events`` that are written (``id`` is SQLite's).
_EVENT_COLUMNS = (
    "perf_event_id, run_id, user_flow_id, user_flow_name, nodeid, worker, device_address,"
    " session_id, status, status_message, event_ts, event_time, duration"
)

#: Schema 1 and 2 kept every event column on each measurement row; their rows move over.
_MIGRATE_FROM_2 = (
    "ALTER TABLE events RENAME TO events_v2",
    "ALTER TABLE measurements RENAME TO measurements_v2",
    "DROP INDEX IF EXISTS events_run",
    "DROP INDEX IF EXISTS measurements_flow_key",
    "DROP INDEX IF EXISTS measurements_key",
    "DROP INDEX IF EXISTS measurements_run",
)
_COPY_FROM_2 = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM events_v2"
    " ORDER BY event_ts, rowid",
    """INSERT INTO measurement_rows (id, event, key_name, key_type, key_units, value)
        SELECT m.id, e.id, m.key_name, m.key_type, m.key_units, m.value
        FROM measurements_v2 m JOIN events e USING (perf_event_id) ORDER BY m.id""",
    "DROP TABLE events_v2",
    "DROP TABLE measurements_v2",
)

#: Upload states: waiting to be sent, delivered, refused by HeadSpin (kept), or not
#: routable (no session and no device) and so kept only here.
PENDING, SENT, FAILED, LOCAL_ONLY = "pending", "sent", "failed", "local-only"


class StoreError(UserflowError):
    """The store cannot be opened or written; the message names the file."""


def api_time(ts: float) -> str:
    """UNIX seconds as the API writes event times: ``2022-03-30 16:48:22`` (UTC)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(value: str | float | int | datetime) -> float:
    """An ISO time (UTC unless it says otherwise), UNIX number or datetime to UNIX seconds."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return parse_time(datetime.fromisoformat(text))
        except ValueError:
            pass
    raise StoreError(
        f"time must be ISO (such as '2022-03-30 16:48:22') or a UNIX timestamp, got {value!r}"
    )


def _prefix() -> str:
    p = uuid.uuid4().hex
    return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-"


#: This process's id prefix and counter. A forked child must not reuse its parent's ids, so
#: the fork empties the list and the child's first id makes a new one. What is registered is
#: the list's own ``clear``, not a function of this module: the interpreter holds fork
#: callbacks until its very end, and a function would hold this module's globals with them,
#: and through its loader (pytest's assertion rewriter) the pytest session and every test
#: item. That made the interpreter's exit 40-60 ms slower in a run of 2,000 tests.
_IDS: list[Any] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.clear)


def new_event_id() -> str:
    """A unique id in UUID form: a random per-process prefix and a counter.

    As unique as uuid4 across processes and hosts, for a fraction of its cost per test.
    """
    ids = _IDS
    if not ids:  # this process's first id
        ids += (_prefix(), itertools.count())
    return f"{ids[0]}{next(ids[1]):012x}"


class RunInfo(NamedTuple):
    """What is known of one pytest run (also the head of the JSON report)."""

    run_id: str
    started_at: float
    host: str
    git_commit: str | None = None
    git_branch: str | None = None
    ci_build_id: str | None = None
    backend: str = "local"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": api_time(self.started_at),
            "started_ts": self.started_at,
            "host": self.host,
            "git_commit": self.git_commit,
            "git_branch": self.git_branch,
            "ci_build_id": self.ci_build_id,
            "backend": self.backend,
        }


_EVENT_FIELDS = (
    "run_id",
    "flow",
    "nodeid",
    "status",
    "status_message",
    "description",
    "worker",
    "device_address",
    "session_id",
    "event_ts",
    "duration",
    "measurements",
    "perf_event_id",
)


class EventRecord:
    """One finished test: what goes into ``events`` and ``measurements``.

    *event_ts* defaults to now, *perf_event_id* to a new id. A plain class with slots, not
    a dataclass: making a dataclass costs every pytest process about 1 ms at import.
    """

    __slots__ = _EVENT_FIELDS

    def __init__(
        self,
        run_id: str,
        flow: str,
        nodeid: str,
        status: str,
        status_message: str | None = None,
        description: str | None = None,
        worker: str | None = None,
        device_address: str | None = None,
        session_id: str | None = None,
        event_ts: float | None = None,
        duration: float | None = None,
        measurements: list[Measurement] | None = None,
        perf_event_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.flow = flow
        self.nodeid = nodeid
        self.status = status
        self.status_message = status_message
        self.description = description
        self.worker = worker
        self.device_address = device_address
        self.session_id = session_id
        self.event_ts: float = time.time() if event_ts is None else event_ts
        self.duration = duration
        self.measurements: list[Measurement] = [] if measurements is None else measurements
        self.perf_event_id: str = new_event_id() if perf_event_id is None else perf_event_id

    @classmethod
    def from_head(cls, head: Sequence[Any], measurements: list[Measurement]) -> EventRecord:
        """From its fields as a journal lays out an event: the id before the measurements."""
        run, flow, node, status, msg, desc, worker, device, session, ts, dur, event_id = head
        return cls(
            run,
            flow,
            node,
            status,
            msg,
            desc,
            worker,
            device,
            session,
            ts,
            dur,
            measurements,
            event_id,
        )

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _EVENT_FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventRecord) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _EVENT_FIELDS)
        return f"EventRecord({shown})"


class Upload(NamedTuple):
    """A pending upload: the calls that deliver one event, and how far they got."""

    perf_event_id: str
    plan: list[dict[str, Any]]
    progress: dict[str, Any]
    base_url: str | None
    api: str | None
    attempts: int = 0


class Store:
    """One connection to the store file; use one Store per thread."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of the userflow store {self.path}: "
                f"{exc.strerror or exc} "
                "(choose another path with --userflow-store or the userflow_store ini key)"
            ) from None
        gitignore = self.path.parent / ".gitignore"
        if self.path.parent.name == ".userflow" and not gitignore.exists():
            # A read-only parent is fine: the ignore file is a courtesy.
            with contextlib.suppress(OSError):
                gitignore.write_text("# created by pytest-userflow\n*\n")
        try:
            self.db = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the userflow store {self.path}: {exc}") from None
        self._flow_ids: dict[str, str] = {}
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(
                f"{self.path} is not a usable pytest-userflow store ({exc}); it was left as it is: "
                "move it away or point --userflow-store elsewhere"
            ) from None

    def _init_schema(self) -> None:
        self.db.execute("PRAGMA busy_timeout = 30000")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            self._pragmas()
            return
        if version not in (0, 1, 2):  # 2 added the journals table, 3 narrowed measurements
            raise sqlite3.DatabaseError(
                f"schema version {version}, this version reads {SCHEMA_VERSION}"
            )
        tables = self._tables()
        if tables - OUR_TABLES:
            raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables))})")
        self.db.execute("PRAGMA journal_mode = WAL")
        self._pragmas()
        with self.transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:  # another process did it meanwhile
                return
            migrate = "measurements" in self._tables()
            for statement in _MIGRATE_FROM_2 if migrate else ():
                self.db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            for statement in _COPY_FROM_2 if migrate else ():
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _tables(self) -> set[str]:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return {row[0] for row in self.db.execute(sql)}

    def _pragmas(self) -> None:
        # NORMAL in WAL mode: a commit survives a killed process (not a power cut) without
        # an fsync per test, which is what keeps the plugin invisible in test time.
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA foreign_keys = OFF")

    def close(self) -> None:
        self.db.close()

    def checkpoint_every(self, pages: int) -> None:
        """Copy the WAL into the store whenever this connection's commits grew it by *pages*."""
        self.db.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # -- writing -----------------------------------------------------------------------------

    def start_run(self, run: RunInfo) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO runs (run_id, started_at, host, git_commit, git_branch,"
                " ci_build_id, backend) VALUES (?,?,?,?,?,?,?)",
                (
                    run.run_id,
                    run.started_at,
                    run.host,
                    run.git_commit,
                    run.git_branch,
                    run.ci_build_id,
                    run.backend,
                ),
            )

    def finish_run(self, run_id: str, finished_at: float | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET finished_at = ? WHERE run_id = ?",
                (finished_at or time.time(), run_id),
            )

    def _flow_id(self, name: str, description: str | None) -> str:
        flow_id = self._flow_ids.get(name)
        if flow_id is None:
            self.db.execute(
                "INSERT OR IGNORE INTO flows (user_flow_id, name, description, created_time)"
                " VALUES (?,?,?,?)",
                (str(uuid.uuid4()), name, description, time.time()),
            )
            flow_id = self.db.execute(
                "SELECT user_flow_id FROM flows WHERE name = ?", (name,)
            ).fetchone()[0]
            self._flow_ids[name] = flow_id
        return flow_id

    def _record_many(
        self, items: list[tuple[EventRecord, tuple[list[dict[str, Any]], str, str] | None, str]]
    ) -> list[tuple[EventRecord, object]]:
        """Insert events, their measurements and uploads; return the events inserted, each
        with its upload.

        Idempotent: events already in the store are left as they are.
        """
        ids = [event.perf_event_id for event, _, _ in items]
        known: set[str] = set()
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT perf_event_id FROM events WHERE perf_event_id IN ({marks})"
            known.update(r[0] for r in self.db.execute(sql, chunk))
        event_rows, measurement_rows, upload_rows = [], [], []
        stored: list[tuple[EventRecord, object]] = []
        now = time.time()
        # Rows are numbered here, so that every table takes its rows in one executemany:
        # the transaction holds the write lock, nobody else numbers meanwhile.
        row_id = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
        second, when = None, ""
        for event, upload, upload_state in items:
            if event.perf_event_id in known:
                continue
            known.add(event.perf_event_id)
            stored.append((event, upload))
            row_id += 1
            if int(event.event_ts) != second:  # one date text per second, not per event
                second, when = int(event.event_ts), api_time(event.event_ts)
            event_rows.append(
                (
                    row_id,
                    event.perf_event_id,
                    event.run_id,
                    self._flow_id(event.flow, event.description),
                    event.flow,
                    event.nodeid,
                    event.worker,
                    event.device_address,
                    event.session_id,
                    event.status,
                    event.status_message,
                    event.event_ts,
                    when,
                    event.duration,
                )
            )
            measurement_rows += [
                (row_id, m.key, m.type, m.units, m.value) for m in event.measurements
            ]
            if upload is not None:
                plan, base_url, api = upload
                upload_rows.append(
                    (
                        event.perf_event_id,
                        event.run_id,
                        upload_state,
                        base_url,
                        api,
                        json.dumps(plan),
                        "{}",
                        now,
                    )
                )
        self.db.executemany(
            f"INSERT INTO events (id, {_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            event_rows,
        )
        self.db.executemany(
            "INSERT INTO measurement_rows (event, key_name, key_type, key_units, value)"
            " VALUES (?,?,?,?,?)",
            measurement_rows,
        )
        self.db.executemany(
            "INSERT INTO uploads (perf_event_id, run_id, state, base_url, api, plan,"
            " progress, updated_ts) VALUES (?,?,?,?,?,?,?,?)",
            upload_rows,
        )
        return stored

    def _mark_rows(
        self,
        perf_event_id: str,
        state: str,
        progress: dict[str, Any] | None,
        error: str | None,
        remote_event_id: str | None,
    ) -> None:
        self.db.execute(
            "UPDATE uploads SET state = ?, progress = COALESCE(?, progress),"
            " last_error = ?, remote_event_id = COALESCE(?, remote_event_id),"
            " attempts = attempts + 1, updated_ts = ? WHERE perf_event_id = ?",
            (
                state,
                None if progress is None else json.dumps(progress),
                error,
                remote_event_id,
                time.time(),
                perf_event_id,
            ),
        )

    def _progress_rows(self, perf_event_id: str, progress: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE uploads SET progress = ?, updated_ts = ? WHERE perf_event_id = ?",
            (json.dumps(progress), time.time(), perf_event_id),
        )

    # -- the journal (see journal.py) ----------------------------------------------------------

    def apply(
        self, ops: Iterable[dict[str, Any]], *, journal: str | None = None, offset: int = 0
    ) -> list[tuple[EventRecord, object]]:
        """Apply journal ops in one transaction, and note how far *journal* is folded.

        Returns the events it stored (those not in the store before), each with its upload.
        """
        ops = list(ops)
        events = []
        for op in ops:
            if op["op"] == "event":
                upload = op.get("upload")
                events.append(
                    (
                        op["event"],
                        (upload[0], upload[1], upload[2]) if upload else None,
                        op.get("state", PENDING),
                    )
                )
        with self.transaction():
            # Events first, in one go: a mark or progress op always follows its event.
            stored = self._record_many(events)
            for op in ops:
                if op["op"] != "event":
                    self._apply_op(op)
            self._note_journal(journal, offset)
        return stored

    def _apply_op(self, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind == "mark":
            self._mark_rows(
                op["id"], op["state"], op.get("progress"), op.get("error"), op.get("remote")
            )
        elif kind == "progress":
            self._progress_rows(op["id"], op["progress"])
        else:
            raise StoreError(f"unknown journal operation {kind!r}")

    def _note_journal(self, journal: str | None, offset: int) -> None:
        if journal is not None:
            self.db.execute(
                "INSERT INTO journals (name, folded) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET folded = excluded.folded",
                (journal, offset),
            )

    def journal_offset(self, journal: str) -> int:
        row = self.db.execute("SELECT folded FROM journals WHERE name = ?", (journal,)).fetchone()
        return 0 if row is None else int(row[0])

    def forget_journal(self, journal: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM journals WHERE name = ?", (journal,))

    # -- reading -----------------------------------------------------------------------------

    def uploads(
        self, states: Sequence[str] = (PENDING,), *, run_id: str | None = None
    ) -> Iterator[Upload]:
        sql = (
            "SELECT perf_event_id, plan, progress, base_url, api, attempts FROM uploads"
            f" WHERE state IN ({','.join('?' * len(states))})"
        )
        args: list[Any] = list(states)
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        for row in self.db.execute(sql + " ORDER BY rowid", args).fetchall():
            yield Upload(
                row[0], json.loads(row[1]), json.loads(row[2] or "{}"), row[3], row[4], row[5]
            )

    def count_uploads(self, states: Sequence[str] = (PENDING,)) -> int:
        sql = f"SELECT COUNT(*) FROM uploads WHERE state IN ({','.join('?' * len(states))})"
        return int(self.db.execute(sql, list(states)).fetchone()[0])

    def _key_aggregates(self, where: str, args: list[Any]) -> list[dict[str, Any]]:
        """Count, numeric count, min, median, max and units of each (flow, key, type, device).

        The median is read by rank, one query per group: measured faster here than one
        window query over the run (and it needs no SQLite 3.25).
        """
        numeric = "typeof(value) IN ('integer', 'real')"
        rows = []
        for flow, key, kind, device, count, num, low, high, units in self.db.execute(
            "SELECT user_flow_name, key_name, key_type, device_address, COUNT(*),"
            f" SUM({numeric}), MIN(CASE WHEN {numeric} THEN value END),"
            f" MAX(CASE WHEN {numeric} THEN value END), MAX(key_units)"
            f" FROM measurements WHERE {where} GROUP BY 1, 2, 3, 4",
            args,
        ).fetchall():
            median = None
            if num:
                middle = [
                    r[0]
                    for r in self.db.execute(
                        f"SELECT value FROM measurements WHERE {where} AND user_flow_name = ?"
                        " AND key_name = ? AND key_type IS ? AND device_address IS ?"
                        f" AND {numeric} ORDER BY value LIMIT ? OFFSET ?",
                        [*args, flow, key, kind, device, 2 - num % 2, (num - 1) // 2],
                    )
                ]
                median = sum(middle) / len(middle)
            rows.append(
                {
                    "flow": flow,
                    "key": key,
                    "type": kind,
                    "device": device,
                    "count": count,
                    "numeric": num or 0,
                    "min": low,
                    "median": median,
                    "max": high,
                    "units": units,
                }
            )
        return rows

    def run_events(self, run_id: str, worker: str | None = None) -> list[dict[str, Any]]:
        """This run's tests (one process's, given *worker*), with where their data went."""
        sql = (
            "SELECT e.perf_event_id, e.nodeid, e.user_flow_name, e.status, e.status_message,"
            " e.session_id, e.device_address, e.worker, e.event_time, e.duration,"
            " u.state, u.last_error, u.remote_event_id FROM events e"
            " LEFT JOIN uploads u ON u.perf_event_id = e.perf_event_id WHERE e.run_id = ?"
        )
        args: list[Any] = [run_id]
        if worker is not None:
            sql += " AND e.worker IS ?"
            args.append(worker)
        events: dict[str, dict[str, Any]] = {}
        for row in self.db.execute(sql + " ORDER BY e.event_ts", args):
            events[row[0]] = {
                "nodeid": row[1],
                "flow": row[2],
                "status": row[3],
                "status_message": row[4],
                "session_id": row[5],
                "device": row[6],
                "worker": row[7],
                "event_time": row[8],
                "duration": row[9],
                "local_event_id": row[0],
                "upload_state": row[10],
                "upload_error": row[11],
                "event_id": row[12],
                "measurements": [],
            }
        if events:
            sql = (
                "SELECT perf_event_id, key_name, value, key_type, key_units FROM measurements"
                " WHERE run_id = ?"
            )
            for row in self.db.execute(
                sql + (" AND worker IS ?" if worker is not None else "") + " ORDER BY id", args
            ):
                event = events.get(row[0])
                if event is not None:
                    event["measurements"].append(
                        {"key": row[1], "value": row[2], "type": row[3], "units": row[4]}
                    )
        return list(events.values())

    def run_aggregates(self, run_id: str, worker: str | bool | None = False) -> dict[str, Any]:
        """One run's summary in SQL, so memory does not grow with the number of tests.

        *worker*: False for every process of the run, else one worker (None: in-process).
        Flows get tests per status and measurements per upload state; each (flow, key,
        type, device) gets count, min, median and max of its numeric values, and units.
        """
        where = "run_id = ?"
        args: list[Any] = [run_id]
        if worker is not False:
            where += " AND worker IS ?"
            args.append(worker)
        flows: dict[str, dict[str, Any]] = {}
        for flow, status, n in self.db.execute(
            f"SELECT user_flow_name, status, COUNT(*) FROM events WHERE {where} GROUP BY 1, 2", args
        ):
            entry = flows.setdefault(flow, {"tests": 0, "statuses": {}, "places": {}})
            entry["tests"] += n
            entry["statuses"][status] = n
        keys = self._key_aggregates(where, args)
        uploads = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM uploads WHERE run_id = ?)", [run_id]
        ).fetchone()[0]
        if uploads:  # where each flow's measurements went
            m_where = " AND ".join("m." + part for part in where.split(" AND "))
            for flow, state, n in self.db.execute(
                "SELECT m.user_flow_name, u.state, COUNT(*) FROM measurements m"
                f" LEFT JOIN uploads u USING (perf_event_id) WHERE {m_where} GROUP BY 1, 2",
                args,
            ):
                flows.setdefault(flow, {"tests": 0, "statuses": {}, "places": {}})
                flows[flow]["places"][state or ""] = n
        else:  # all of them stayed here
            for key in keys:
                entry = flows.setdefault(key["flow"], {"tests": 0, "statuses": {}, "places": {}})
                entry["places"][""] = entry["places"].get("", 0) + key["count"]
        pending = self.db.execute(
            f"SELECT COUNT(DISTINCT e.perf_event_id), COUNT(m.id) FROM events e JOIN uploads u"
            f" USING (perf_event_id) LEFT JOIN measurements m USING (perf_event_id)"
            f" WHERE {' AND '.join('e.' + p for p in where.split(' AND '))} AND u.state = ?",
            [*args, PENDING],
        ).fetchone()
        return {
            "flows": flows,
            "keys": keys,
            "pending": {"tests": pending[0], "measurements": pending[1]},
        }

    def flows(self) -> list[dict[str, Any]]:
        sql = (
            "SELECT f.user_flow_id, f.name, f.description, f.created_time,"
            " (SELECT COUNT(*) FROM events e WHERE e.user_flow_id = f.user_flow_id),"
            " (SELECT COUNT(*) FROM measurements m WHERE m.user_flow_id = f.user_flow_id)"
            " FROM flows f ORDER BY f.name"
        )
        return [
            {
                "user_flow_id": r[0],
                "name": r[1],
                "description": r[2],
                "created_time": r[3],
                "tests": r[4],
                "measurements": r[5],
            }
            for r in self.db.execute(sql)
        ]

    def runs(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """The recorded runs, newest first, with their test and measurement counts."""
        sql = (
            "SELECT r.run_id, r.started_at, r.finished_at, r.host, r.git_commit, r.git_branch,"
            " r.ci_build_id, r.backend,"
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
            "tests",
            "measurements",
        )
        return [dict(zip(names, row, strict=True)) for row in self.db.execute(sql)]

    def recent_values(
        self, flow: str, key: str, limit: int, *, exclude_run: str | None = None
    ) -> list[Any]:
        """The newest *limit* values of passed tests for one flow and key (a baseline)."""
        flow_id = self.resolve_flow(flow)
        if flow_id is None:
            return []
        sql = (
            "SELECT value FROM measurements WHERE user_flow_id = ? AND key_name = ?"
            " AND status = 'Passed' AND run_id IS NOT ? ORDER BY event_ts DESC LIMIT ?"
        )
        return [r[0] for r in self.db.execute(sql, (flow_id, key, exclude_run, int(limit)))]

    def resolve_flow(self, flow: str) -> str | None:
        row = self.db.execute(
            "SELECT user_flow_id FROM flows WHERE name = ? OR user_flow_id = ?", (flow, flow)
        ).fetchone()
        return None if row is None else str(row[0])

    def query_measurements(
        self,
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
            flow_id = self.resolve_flow(flow)
            if flow_id is None:
                raise StoreError(f"no user flow named or with id {flow!r} in {self.path}")
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
        sql += " ORDER BY event_ts, id"
        if limit is not None or offset is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else limit, offset or 0]
        for r in self.db.execute(sql, args):
            yield {
                "user_flow_id": r[0],
                "user_flow_name": r[1],
                "perf_event_id": r[2],
                "event_time": r[3],
                "session_id": r[4],
                "perf_key_id": None,
                "key_name": r[5],
                "key_type": r[6],
                "key_units": r[7],
                "value": r[8],
                "status": r[9],
                "run_id": r[10],
                "nodeid": r[11],
                "worker": r[12],
                "device_address": r[13],
            }


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken up front, so concurrent
    workers wait on busy_timeout instead of failing on a lock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        for attempt in range(5):
            try:
                self.db.execute("BEGIN IMMEDIATE")
                return self.db
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
