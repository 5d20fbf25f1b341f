"""The PostgreSQL history: one team's runs from every machine, in one database.

The only module that imports ``psycopg``; its errors leave as
:class:`~pytest_userflow.storage.StoreError`, never with the URL's password. The URL goes to
libpq as it is, so ``PGPASSWORD``, ``.pgpass`` and service files work.

The schema is made on the first write, in one transaction under an advisory lock, so that
many machines starting at once make it once; its version is a row of ``userflow_schema``.
A test is keyed by its local event id (``perf_event_id``): adding it again does nothing, so
a retry, a second sender or ``pytest-userflow push`` never doubles it. A measurement's value
is in one of three typed columns (an int exactly, a float, or text).

>>> history = PostgresStore("postgresql://ci@db:5432/perf")   # doctest: +SKIP
>>> history.add_test(record, run)                              # doctest: +SKIP

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from ..model import (
    COUNTED_STATUSES,
    FILTER_STATUSES,
    OUTCOMES,
    Accept,
    Measurement,
    RunInfo,
    TestRecord,
    is_number,
    newest_accept,
    parse_time,
    utc_text,
)
from . import SENT, Query, Stored, StoredCheck, StoreError, shown

try:
    import psycopg
except ImportError:  # pragma: no cover  (the [postgres] extra is installed for the tests)
    psycopg = None  # type: ignore[assignment]

SCHEMA_VERSION = 3
#: The advisory lock that makes the schema once (any fixed 64-bit number of our own).
SCHEMA_LOCK = 0x75736572666C6F77  # "userflow"
#: How long to wait for the server to answer a connection, unless the URL says.
CONNECT_TIMEOUT = 10
#: How long a pytest run's statement waits for a lock, unless the URL, the role, the database
#: or the server set a ``lock_timeout``: a server that keeps the tables locked (a migration, a
#: transaction left open) is then one that does not answer, and the run goes on without it.
#: A statement that is slow on its own is not cut short; a command waits as its user does.
RUN_LOCK_TIMEOUT = 10

#: The baseline's indexes hold the tests that passed on their own (outcome Passed): a test
#: whose status is Passed has that outcome too, so they serve the baseline with an accept and
#: without one. An accept says a level of a flow's key is intended from a run on
#: (``model.Accept``), kept when taken back with the time it was (``undone_at``); ``user`` is
#: a reserved word here, so its column is ``user_name``.
_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
    host TEXT, git_commit TEXT, git_branch TEXT, ci_build_id TEXT, backend TEXT, outcome TEXT,
    base_branch TEXT, baseline_branch TEXT, fork_run TEXT
);
CREATE INDEX runs_started ON runs (started_at DESC);
CREATE INDEX runs_branch ON runs (git_branch, started_at);
CREATE TABLE flows (
    user_flow_id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, description TEXT,
    created_time DOUBLE PRECISION
);
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, perf_event_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL REFERENCES runs, user_flow_id TEXT NOT NULL REFERENCES flows,
    user_flow_name TEXT NOT NULL, nodeid TEXT NOT NULL, worker TEXT, device_address TEXT,
    session_id TEXT, status TEXT NOT NULL, status_message TEXT, outcome TEXT NOT NULL,
    event_ts DOUBLE PRECISION NOT NULL, event_time TEXT NOT NULL, duration DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX events_run ON events (run_id);
CREATE INDEX events_flow ON events (user_flow_id, event_ts);
CREATE INDEX events_baseline ON events (user_flow_id, nodeid, device_address, event_ts DESC)
    WHERE outcome = 'Passed';
CREATE INDEX events_flow_passed ON events (user_flow_id, event_ts DESC) WHERE outcome = 'Passed';
CREATE TABLE measurement_rows (
    event BIGINT NOT NULL REFERENCES events ON DELETE CASCADE, seq INTEGER NOT NULL,
    key_name TEXT NOT NULL, key_type TEXT, key_units TEXT,
    int_value BIGINT, real_value DOUBLE PRECISION, text_value TEXT,
    PRIMARY KEY (event, seq),
    CHECK (num_nonnulls(int_value, real_value, text_value) = 1)
);
CREATE INDEX measurement_rows_key ON measurement_rows (key_name, event);
CREATE VIEW measurements AS SELECT e.id AS event, m.seq, e.perf_event_id, e.run_id,
    e.user_flow_id, e.user_flow_name, e.event_time, e.event_ts, e.session_id, e.status,
    e.outcome, m.key_name, m.key_type, m.key_units, m.int_value, m.real_value, m.text_value,
    COALESCE(m.real_value, m.int_value) AS number, e.nodeid, e.worker, e.device_address
    FROM measurement_rows m JOIN events e ON e.id = m.event;
CREATE TABLE checks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event BIGINT NOT NULL REFERENCES events ON DELETE CASCADE, key_name TEXT NOT NULL,
    kind TEXT NOT NULL, verdict TEXT NOT NULL, value DOUBLE PRECISION, low DOUBLE PRECISION,
    high DOUBLE PRECISION, baseline DOUBLE PRECISION, change_pct DOUBLE PRECISION,
    noise_pct DOUBLE PRECISION, limit_text TEXT
);
CREATE INDEX checks_event ON checks (event);
CREATE TABLE accepts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_flow_name TEXT NOT NULL,
    key_name TEXT NOT NULL, nodeid TEXT, device_address TEXT, from_run TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, user_name TEXT, host TEXT, reason TEXT,
    undone_at DOUBLE PRECISION
);
CREATE TABLE userflow_schema (version INTEGER NOT NULL);
"""

#: Whether the schema is made, where the search path makes tables.
_MADE = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
    " WHERE schemaname = current_schema() AND tablename = 'userflow_schema')"
)

#: A measurement's value, in the three columns it may be in.
_VALUE = "m.int_value, m.real_value, m.text_value"


def _value(int_value: int | None, real_value: float | None, text_value: str | None) -> Any:
    """The value as it was recorded, from its typed columns."""
    if int_value is not None:
        return int_value
    return real_value if real_value is not None else text_value


def _columns(value: Any) -> tuple[int | None, float | None, str | None]:
    if isinstance(value, int):
        return value, None, None
    if isinstance(value, float):
        return None, value, None
    return None, None, str(value)


class PostgresStore:
    """The history in the PostgreSQL database *url* names, behind one connection shared by
    this process's threads (``lock`` serialises them). Nothing is made in the database
    until something is written; a broken connection is opened anew at the next use."""

    def __init__(
        self, url: str, *, connect_timeout: float = CONNECT_TIMEOUT, in_run: bool = False
    ) -> None:
        if psycopg is None:
            raise StoreError(
                f"{shown(url)}: a PostgreSQL store needs psycopg: "
                'pip install "pytest-userflow[postgres]"'
            )
        self.url = url
        self.location = shown(url)
        self._password = urllib.parse.urlsplit(url).password
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(
                f"{self.location} is not a PostgreSQL URL: {self._said(exc)}"
            ) from None
        if given.get("password"):  # password=... in a key/value connection string
            self._password = str(given["password"])
        self._given = set(given)
        self.connect_timeout = connect_timeout
        self.in_run = in_run  # a pytest run's: a statement waits RUN_LOCK_TIMEOUT for a lock
        self.lock = threading.RLock()
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None
        self._made = False  # the schema is known to exist
        self._checked = False  # and to be this version's
        self._flow_ids: dict[str, str] = {}
        self._runs: set[str] = set()  # runs whose row is known to exist

    # -- the connection ------------------------------------------------------------------------

    @property
    def db(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, opened when first asked for (and again after it broke)."""
        if self._db is None or self._db.closed or self._db.broken:
            self._db = self._connect()
        return self._db

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        extra: dict[str, Any] = {}  # what the URL does not say itself
        if "application_name" not in self._given:
            extra["application_name"] = "pytest-userflow"
        if "connect_timeout" not in self._given:
            extra["connect_timeout"] = max(1, round(self.connect_timeout))
        try:
            db = psycopg.connect(self.url, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the userflow store {self.location}: {self._said(exc)}"
            ) from None
        if self.in_run:
            try:
                db.execute(  # unless something set it, 0 (no limit) included
                    "SELECT set_config('lock_timeout', %s, false) FROM pg_settings"
                    " WHERE name = 'lock_timeout' AND source = 'default'",
                    (str(round(RUN_LOCK_TIMEOUT * 1000)),),
                )
            except psycopg.Error as exc:
                db.close()
                raise StoreError(f"{self.location}: {self._said(exc)}") from None
        return db

    def _said(self, exc: BaseException) -> str:
        """The server's or libpq's message, on one line, without the password."""
        lines = str(exc).strip().splitlines()  # the first: the rest quotes the statement
        text = " ".join(lines[0].split()) if lines else type(exc).__name__
        password = self._password
        return text.replace(str(password), "***") if password else text

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's errors as StoreError, naming the store (never its password)."""
        try:
            yield
        except StoreError:
            raise
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: {self._said(exc)}") from None

    @property
    def exists(self) -> bool:
        """Whether the schema is there (a server that cannot be reached says so)."""
        if not self._made:
            with self.lock, self._errors():
                row = self.db.execute(_MADE).fetchone()
                self._made = row is not None and bool(row[0])
        return self._made

    def check(self) -> None:
        """Raise StoreError now if the history could not be used: the server must answer,
        and a schema already there must be this version's."""
        if self.exists:
            self._check_version()

    def _check_version(self) -> None:
        with self.lock, self._errors():
            row = self.db.execute("SELECT max(version) FROM userflow_schema").fetchone()
        version = row[0] if row else None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.location} holds a pytest-userflow schema of version {version}, where "
                f"this version of pytest-userflow uses {SCHEMA_VERSION}; it was left as it is"
            )

    def _make_schema(self) -> None:
        """The tables, made once whoever else starts at the same moment: under a
        transaction-wide advisory lock, the second comer finds them made."""
        if self._checked:
            return
        if self.exists:
            self._check_version()
            self._checked = True
            return
        with self.lock, self._errors(), self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            # The catalog read by this statement, not the cached lookup made before the lock.
            row = self.db.execute(_MADE).fetchone()
            if row is None or not row[0]:
                try:
                    self.db.execute(_SCHEMA)
                except psycopg.errors.DuplicateTable as exc:
                    raise StoreError(
                        f"{self.location} holds other tables ({self._said(exc)}): give "
                        "pytest-userflow a database or schema of its own"
                    ) from None
                self.db.execute(
                    "INSERT INTO userflow_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
        self._made = True
        self._check_version()
        self._checked = True

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                with contextlib.suppress(psycopg.Error):
                    self._db.close()
                self._db = None

    def _select(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.exists:
            return []
        with self.lock, self._errors():
            return self.db.execute(sql, list(args)).fetchall()

    # -- writing -------------------------------------------------------------------------------

    def add_test(self, record: TestRecord, run: RunInfo) -> bool:
        """Commit one finished test with its measurements and checks in one transaction (the
        run's row with its first test); a test that is there already is left as it is
        (False)."""
        return self.add_tests([Stored(record, run)]) == 1

    def add_tests(self, tests: Sequence[Stored]) -> int:
        """Commit *tests* in one transaction, each with its run's row (and the run's end,
        when it is known); how many were new: a test that is there already is left as it
        is. One commit for many tests: a commit waits for the server's disk."""
        self._make_schema()
        runs, flows, new = set(self._runs), dict(self._flow_ids), 0
        with self.lock, self._errors(), self.db.transaction():
            db = self.db
            for stored in tests:
                record, run = stored.record, stored.run
                if run.run_id not in runs:
                    db.execute(
                        "INSERT INTO runs (run_id, started_at, host, git_commit, git_branch,"
                        " ci_build_id, backend, base_branch, baseline_branch, fork_run)"
                        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id) DO NOTHING",
                        (run.run_id, run.started_at, run.host, run.git_commit, run.git_branch,
                         run.ci_build_id, run.backend, run.base_branch, run.baseline_branch,
                         run.fork_run),
                    )  # fmt: skip
                    runs.add(run.run_id)
                if record.flow not in flows:
                    flows[record.flow] = self._flow_id(db, record.flow, record.description)
            for start in range(0, len(tests), 500):  # 15 parameters a test, of at most 65,535
                new += _insert_tests(db, tests[start : start + 500], flows)
            for run_id, (at, outcome) in {
                s.run.run_id: (s.finished_at, s.run_outcome)
                for s in tests
                if s.finished_at is not None
            }.items():
                db.execute(
                    "UPDATE runs SET finished_at = %s, outcome = %s WHERE run_id = %s",
                    (at, outcome, run_id),
                )
        # Known to exist only once committed: a transaction rolled back made nothing.
        self._runs, self._flow_ids = runs, flows
        return new

    def _flow_id(
        self, db: psycopg.Connection[tuple[Any, ...]], name: str, description: str | None
    ) -> str:
        db.execute(
            "INSERT INTO flows (user_flow_id, name, description, created_time)"
            " VALUES (%s,%s,%s,%s) ON CONFLICT (name) DO NOTHING",
            (str(uuid.uuid4()), name, description, time.time()),
        )
        row = db.execute("SELECT user_flow_id FROM flows WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    def finish_run(self, run_id: str, outcome: str, *, at: float | None = None) -> None:
        """Note the run's end (*at*: when, else now), when it recorded anything (else it has
        no row)."""
        if not self.exists:
            return
        with self.lock, self._errors():
            self.db.execute(
                "UPDATE runs SET finished_at = %s, outcome = %s WHERE run_id = %s",
                (time.time() if at is None else at, outcome, run_id),
            )

    def records(self, perf_event_ids: Sequence[str] | None = None) -> Iterator[Stored]:
        """Every test (or those of *perf_event_ids*) as it was committed, with its checks
        and its run, in the order recorded."""
        where, args = "", []
        if perf_event_ids is not None:
            where, args = " WHERE e.perf_event_id = ANY(%s)", [list(perf_event_ids)]
        events = self._select(
            "SELECT e.id, e.nodeid, e.user_flow_name, f.description, e.device_address, e.worker,"
            " e.session_id, e.perf_event_id, e.status, e.status_message, e.event_ts, e.duration,"
            " e.attempts, e.outcome, r.run_id, r.started_at, r.host, r.git_commit, r.git_branch,"
            " r.ci_build_id, r.backend, r.base_branch, r.baseline_branch, r.fork_run,"
            " r.finished_at, r.outcome FROM events e"
            " JOIN flows f ON f.user_flow_id = e.user_flow_id JOIN runs r ON r.run_id = e.run_id"
            f"{where} ORDER BY e.id",
            args,
        )
        measurements: dict[int, list[Measurement]] = {}
        checks: dict[int, list[StoredCheck]] = {}
        ids = [row[0] for row in events]
        if ids:
            for event, key, kind, units, *value in self._select(
                f"SELECT m.event, m.key_name, m.key_type, m.key_units, {_VALUE}"
                " FROM measurement_rows m WHERE m.event = ANY(%s) ORDER BY m.event, m.seq",
                [ids],
            ):
                measurements.setdefault(event, []).append(
                    Measurement(key, _value(*value), kind, units)
                )
            for event, *check in self._select(
                "SELECT event, key_name, kind, verdict, value, low, high, baseline, change_pct,"
                " noise_pct, limit_text FROM checks WHERE event = ANY(%s) ORDER BY id",
                [ids],
            ):
                checks.setdefault(event, []).append(StoredCheck(*check))
        for row in events:
            event, nodeid, flow, description, device, worker, session, key, *rest = row
            record = TestRecord(nodeid, flow, description, device=device, worker=worker)
            record.session_id, record.perf_event_id, record.ended = session, key, True
            (record.status, record.status_message, record.event_ts, record.duration,
             record.attempts, record.outcome) = rest[:6]  # fmt: skip
            record.measurements = measurements.get(event, [])
            record.checks = checks.get(event, [])
            yield Stored(record, RunInfo(*rest[6:16]), rest[16], rest[17])

    # -- reads ---------------------------------------------------------------------------------

    def run_summary(self, run_id: str, worker: str | bool | None = False) -> dict[str, Any]:
        """One run's tests per flow and status and per (flow, key, type, device, units) the
        count and numeric values of its passed and failed tests (*left_out*: how many values
        of excluded tests were not counted; *by_gate*: how many tests only the gate failed);
        where its tests went is the outbox's to say (this history holds only what was
        delivered)."""
        where = "e.run_id = %s"
        args: list[Any] = [run_id]
        if worker is not False:
            where += " AND e.worker IS NOT DISTINCT FROM %s"
            args.append(worker)
        flows: dict[str, dict[str, Any]] = {}

        def flow(name: str) -> dict[str, Any]:
            return flows.setdefault(
                name, {"tests": 0, "statuses": {}, "places": {}, "left_out": 0, "by_gate": 0}
            )

        for name, status, n, passed in self._select(
            "SELECT e.user_flow_name, e.status, COUNT(*), COUNT(*) FILTER"
            f" (WHERE e.outcome = 'Passed') FROM events e WHERE {where} GROUP BY 1, 2",
            args,
        ):
            flow(name)["tests"] += n
            flow(name)["statuses"][status] = n
            if status == "Failed":
                flow(name)["by_gate"] = passed
        reruns = self._select(
            f"SELECT e.nodeid, e.attempts FROM events e WHERE {where} AND e.attempts > 1"
            " ORDER BY e.nodeid",
            args,
        )
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        for name, key, kind, device, units, *value, status in self._select(
            "SELECT e.user_flow_name, m.key_name, m.key_type, e.device_address, m.key_units,"
            f" {_VALUE}, e.status FROM events e JOIN measurement_rows m ON m.event = e.id"
            f" WHERE {where} ORDER BY e.id, m.seq",
            args,
        ):
            places = flow(name)["places"]
            places[""] = places.get("", 0) + 1
            if status not in COUNTED_STATUSES:
                flow(name)["left_out"] += 1
                continue
            # A key recorded in two units is two groups: never one summary of both.
            group = groups.setdefault((name, key, kind, device, units), {"count": 0, "values": []})
            group["count"] += 1
            number = _value(*value)
            if is_number(number):
                group["values"].append(number)
        keys = [
            {
                "flow": name,
                "key": key,
                "type": kind,
                "device": device,
                "count": group["count"],
                "values": group["values"],
                "units": units,
            }
            for (name, key, kind, device, units), group in sorted(
                groups.items(), key=lambda item: tuple((v is not None, v) for v in item[0])
            )
        ]
        return {
            "flows": dict(sorted(flows.items())),
            "keys": keys,
            "pending": {"tests": 0, "measurements": 0, "team": 0},
            "reruns": [[nodeid, attempts] for nodeid, attempts in reruns],
        }

    def tests(self, run_id: str | None = None, worker: str | None = None) -> list[dict[str, Any]]:
        """The tests of one run (or of every run, oldest first), of one process given
        *worker*, each with its status, own outcome and measurements; this history keeps no
        upload state."""
        where, args = ["TRUE"], []
        if run_id is not None:
            where.append("e.run_id = %s")
            args.append(run_id)
        if worker is not None:
            where.append("e.worker IS NOT DISTINCT FROM %s")
            args.append(worker)
        condition = " AND ".join(where)
        events: dict[int, dict[str, Any]] = {}
        for row in self._select(
            "SELECT e.id, e.perf_event_id, e.nodeid, e.user_flow_name, e.status,"
            " e.status_message, e.session_id, e.device_address, e.worker, e.event_time,"
            " e.duration, e.attempts, e.run_id, e.outcome FROM events e"
            f" WHERE {condition} ORDER BY e.event_ts, e.id",
            args,
        ):
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
                "upload_state": None,
                "upload_error": None,
                "event_id": None,
                "attempts": row[11],
                "run_id": row[12],
                "outcome": row[13],
                "team_state": SENT,
                "measurements": [],
            }
        if events:
            for event, key, kind, units, *value in self._select(
                f"SELECT e.id, m.key_name, m.key_type, m.key_units, {_VALUE} FROM events e"
                f" JOIN measurement_rows m ON m.event = e.id WHERE {condition}"
                " ORDER BY e.id, m.seq",
                args,
            ):
                events[event]["measurements"].append(
                    {"key": key, "value": _value(*value), "type": kind, "units": units}
                )
        return list(events.values())

    def flows(self) -> list[dict[str, Any]]:
        sql = (
            "SELECT f.user_flow_id, f.name, f.description, f.created_time,"
            " (SELECT COUNT(*) FROM events e WHERE e.user_flow_id = f.user_flow_id),"
            " (SELECT COUNT(*) FROM measurement_rows m JOIN events e ON e.id = m.event"
            "  WHERE e.user_flow_id = f.user_flow_id)"
            " FROM flows f ORDER BY f.name"
        )
        names = ("user_flow_id", "name", "description", "created_time", "tests", "measurements")
        return [dict(zip(names, row, strict=True)) for row in self._select(sql)]

    def runs(self, limit: int | None = None, *, branch: str | None = None) -> list[dict[str, Any]]:
        """The recorded runs, newest first, with their test and measurement counts; of one
        *branch* when given."""
        sql = (
            "SELECT r.run_id, r.started_at, r.finished_at, r.host, r.git_commit, r.git_branch,"
            " r.base_branch, r.baseline_branch, r.fork_run, r.ci_build_id, r.backend, r.outcome,"
            " (SELECT COUNT(*) FROM events e WHERE e.run_id = r.run_id),"
            " (SELECT COUNT(*) FROM measurement_rows m JOIN events e ON e.id = m.event"
            "  WHERE e.run_id = r.run_id)"
            " FROM runs r WHERE (%s::text IS NULL OR r.git_branch = %s)"
            " ORDER BY r.started_at DESC LIMIT %s"
        )
        names = (
            "run_id",
            "started_at",
            "finished_at",
            "host",
            "git_commit",
            "git_branch",
            "base_branch",
            "baseline_branch",
            "fork_run",
            "ci_build_id",
            "backend",
            "outcome",
            "tests",
            "measurements",
        )
        rows = self._select(sql, [branch, branch, limit])
        return [dict(zip(names, row, strict=True)) for row in rows]

    def match_runs(self, prefixes: Iterable[str]) -> list[str]:
        """The run ids that *prefixes* start, one each: an unknown or ambiguous one is an error."""
        prefixes = list(prefixes)
        if not prefixes:
            return []
        known = [r[0] for r in self._select("SELECT run_id FROM runs ORDER BY started_at DESC")]
        out = []
        for prefix in prefixes:
            found = [r for r in known if r.startswith(prefix)]
            if len(found) != 1:
                which = (
                    f": {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}" if found else ""
                )
                raise StoreError(
                    f"run {prefix!r} matches {len(found)} of the {len(known)} runs in "
                    f"{self.location}{which}; give more of its id (pytest-userflow runs lists them)"
                )
            out.append(found[0])
        return out

    def run_tests(self) -> dict[str, set[str]]:
        """The node ids of the tests each run recorded."""
        tests: dict[str, set[str]] = {}
        for run_id, nodeid in self._select("SELECT DISTINCT run_id, nodeid FROM events"):
            tests.setdefault(run_id, set()).add(nodeid)
        return tests

    def checks(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
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
            " WHERE e.run_id = ANY(%s) ORDER BY e.event_ts, c.id"
        )
        return [dict(zip(names, row, strict=True)) for row in self._select(sql, [run_ids])]

    def resolve_flow(self, flow: str) -> str | None:
        rows = self._select(
            "SELECT user_flow_id FROM flows WHERE name = %s OR user_flow_id = %s", (flow, flow)
        )
        return str(rows[0][0]) if rows else None

    def recent_values(
        self,
        flow: str,
        key: str,
        limit: int,
        *,
        exclude_run: str | None = None,
        nodeid: str | None = None,
        device: str | None = None,
        branch: str | None = None,
        until: str | None = None,
    ) -> list[Any]:
        """The newest *limit* values of passed tests for one flow and key (a baseline), of one
        test (*nodeid*, parameters included) and *device* when *nodeid* is given, of the runs
        on *branch* started no later than the run *until* when given. Where an accept covers
        the series, only values from its run on, and with them those of tests that only the
        gate failed before the accept was made."""
        flow_id = self.resolve_flow(flow)
        if flow_id is None:
            return []
        # outcome = 'Passed' for the baseline's indexes: every status Passed has it too.
        sql = (
            f"SELECT {_VALUE} FROM events e JOIN measurement_rows m ON m.event = e.id"
            " WHERE e.user_flow_id = %s AND m.key_name = %s AND e.outcome = 'Passed'"
            " AND e.run_id IS DISTINCT FROM %s"
        )
        args: list[Any] = [flow_id, key, exclude_run]
        accept = newest_accept(self.accepts(flow=flow, key=key), flow, key, nodeid, device)
        if accept is None:
            sql += " AND e.status = 'Passed'"
        else:
            sql += " AND e.event_ts >= %s AND (e.status = 'Passed' OR e.event_ts <= %s)"
            args += [accept.from_started, accept.created_at]
        if nodeid is not None:  # = and IS NULL, which the baseline's index serves
            sql += " AND e.nodeid = %s AND e.device_address " + (
                "IS NULL" if device is None else "= %s"
            )
            args += [nodeid] if device is None else [nodeid, device]
        if branch is not None:
            sql += " AND e.run_id IN (SELECT run_id FROM runs WHERE git_branch = %s"
            args.append(branch)
            if until is not None:
                sql += " AND started_at <= (SELECT started_at FROM runs WHERE run_id = %s)"
                args.append(until)
            sql += ")"
        sql += " ORDER BY e.event_ts DESC, m.seq DESC LIMIT %s"
        return [_value(*row) for row in self._select(sql, [*args, int(limit)])]

    # -- accepts -------------------------------------------------------------------------------

    def add_accept(self, accept: Accept) -> Accept:
        """Keep *accept*; it is returned with its id and its run's start."""
        started = self._select("SELECT started_at FROM runs WHERE run_id = %s", [accept.from_run])
        if not started:
            raise StoreError(f"{self.location}: no run {accept.from_run!r} to accept a level from")
        with self.lock, self._errors():
            row = self.db.execute(
                "INSERT INTO accepts (user_flow_name, key_name, nodeid, device_address, from_run,"
                " created_at, user_name, host, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " RETURNING id",
                (accept.flow, accept.key, accept.nodeid, accept.device, accept.from_run,
                 accept.created_at, accept.user, accept.host, accept.reason),
            ).fetchone()  # fmt: skip
        assert row is not None
        return replace(accept, id=row[0], from_started=started[0][0])

    def accepts(
        self, *, flow: str | None = None, key: str | None = None, undone: bool = False
    ) -> list[Accept]:
        """The accepts in force (and those taken back, given *undone*), oldest first; of one
        flow and key when given."""
        where, args = ["TRUE"], []
        if not undone:
            where.append("a.undone_at IS NULL")
        if flow is not None and key is not None:
            where.append("a.user_flow_name = %s AND a.key_name = %s")
            args += [flow, key]
        rows = self._select(
            "SELECT a.user_flow_name, a.key_name, a.from_run, a.nodeid, a.device_address,"
            " a.reason, a.user_name, a.host, a.created_at, a.id, r.started_at, a.undone_at"
            " FROM accepts a LEFT JOIN runs r ON r.run_id = a.from_run"
            f" WHERE {' AND '.join(where)} ORDER BY a.id",
            args,
        )
        return [Accept(*row) for row in rows]

    def undo_accept(self, accept_id: int) -> Accept:
        """Take back the accept *accept_id*: it is kept, marked undone; it is returned."""
        found = [a for a in self.accepts(undone=True) if a.id == accept_id]
        now = time.time()
        if found and found[0].undone_at is None:
            with self.lock, self._errors():
                # Of two takers-back at once, only one finds it still in force.
                taken = self.db.execute(
                    "UPDATE accepts SET undone_at = %s WHERE id = %s AND undone_at IS NULL",
                    (now, accept_id),
                ).rowcount
            if taken:
                return replace(found[0], undone_at=now)
        state = "was taken back already in" if found else "is not in"
        raise StoreError(
            f"accept {accept_id} {state} {self.location} (pytest-userflow accept --list lists them)"
        )

    def measurements(self, query: Query) -> Iterator[dict[str, Any]]:
        """The API's measurement listing over the history, with the API's semantics."""
        where: list[str] = []
        args: list[Any] = []
        if query.flow is not None:
            flow_id = self.resolve_flow(query.flow)
            if flow_id is None:
                raise StoreError(f"no user flow named or with id {query.flow!r} in {self.location}")
            where.append("e.user_flow_id = %s")
            args.append(flow_id)

        def any_of(column: str, values: Iterable[Any]) -> None:
            values = list(values)
            if values:
                where.append(f"{column} = ANY(%s)")
                args.append(values)

        any_of("e.session_id", query.session_ids)
        any_of("m.key_name", query.keys)
        any_of("e.run_id", query.run_ids)
        wanted = [s.lower() for s in query.statuses] or ["passed", "failed", "not_set"]
        for s in wanted:
            if s not in FILTER_STATUSES:
                raise StoreError(f"status must be one of {', '.join(FILTER_STATUSES)}, got {s!r}")
        # Every test here has a status; not_set matches none of them.
        any_of("e.status", [s.capitalize() for s in wanted if s != "not_set"] or ["-"])
        for s in query.outcomes:
            if s not in OUTCOMES:
                raise StoreError(f"outcome must be one of {', '.join(OUTCOMES)}, got {s!r}")
        any_of("e.outcome", [s.capitalize() for s in query.outcomes])
        if query.start_time is not None:
            where.append("e.event_ts >= %s")
            args.append(parse_time(query.start_time))
        if query.end_time is not None:
            where.append("e.event_ts <= %s")
            args.append(parse_time(query.end_time))
        sql = (
            "SELECT e.user_flow_id, e.user_flow_name, e.perf_event_id, e.event_time,"
            f" e.session_id, m.key_name, m.key_type, m.key_units, {_VALUE}, e.status, e.outcome,"
            " e.run_id, e.nodeid, e.worker, e.device_address"
            " FROM measurement_rows m JOIN events e ON e.id = m.event"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.event_ts, e.id, m.seq LIMIT %s OFFSET %s"
        args += [query.limit, query.offset or 0]
        if not self.exists:
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
            "outcome",
            "run_id",
            "nodeid",
            "worker",
            "device_address",
        )
        with self.lock, self._errors(), self.db.cursor() as cursor:
            cursor.execute(sql, args)
            for chunk in iter(lambda: cursor.fetchmany(1000), []):
                for r in chunk:
                    row = dict(zip(names, (*r[:8], _value(*r[8:11]), *r[11:]), strict=True))
                    row["perf_key_id"] = None
                    yield row


def _insert_tests(
    db: psycopg.Connection[tuple[Any, ...]], tests: Sequence[Stored], flows: dict[str, str]
) -> int:
    """The tests' events in one statement, then the new ones' values and checks by COPY; how
    many were new (an event there already is left as it is, with its values)."""
    tests = list({s.record.perf_event_id: s for s in tests}.values())  # each event once
    events = [
        (
            s.record.perf_event_id,
            s.run.run_id,
            flows[s.record.flow],
            s.record.flow,
            s.record.nodeid,
            s.record.worker,
            s.record.device_address,
            s.record.session_id,
            s.record.status,
            s.record.status_message,
            s.record.outcome,
            s.record.event_ts,
            utc_text(s.record.event_ts),
            s.record.duration,
            s.record.attempts,
        )
        for s in tests
    ]
    made = dict(
        db.execute(
            "INSERT INTO events (perf_event_id, run_id, user_flow_id, user_flow_name, nodeid,"
            " worker, device_address, session_id, status, status_message, outcome, event_ts,"
            " event_time, duration, attempts) VALUES "
            + ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(events))
            + " ON CONFLICT (perf_event_id) DO NOTHING RETURNING perf_event_id, id",
            [value for event in events for value in event],
        ).fetchall()
    )
    fresh = [
        (made[s.record.perf_event_id], s.record) for s in tests if s.record.perf_event_id in made
    ]
    with db.cursor() as cursor:
        with cursor.copy(
            "COPY measurement_rows (event, seq, key_name, key_type, key_units, int_value,"
            " real_value, text_value) FROM STDIN"
        ) as copy:
            for event, record in fresh:
                for i, m in enumerate(record.measurements):
                    copy.write_row((event, i, m.key, m.type, m.units, *_columns(m.value)))
        if any(record.checks for _, record in fresh):
            with cursor.copy(
                "COPY checks (event, key_name, kind, verdict, value, low, high, baseline,"
                " change_pct, noise_pct, limit_text) FROM STDIN"
            ) as copy:
                for event, record in fresh:
                    for c in record.checks:
                        copy.write_row(
                            (event, c.key, c.kind, c.verdict, c.value, c.low, c.high,
                             c.baseline, c.change_pct, c.noise_pct, c.limit)
                        )  # fmt: skip
    return len(fresh)
