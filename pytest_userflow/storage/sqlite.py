"""The SQLite store: history and outbox in one file, the embedded default.

The only module with SQL in it, and the only one that imports ``sqlite3``; its errors leave
as :class:`~pytest_userflow.storage.StoreError`. It is the plugin's write-ahead log: a test's
record is committed here at its teardown, before any upload.

Each finished test is one small transaction. The store is in WAL mode, so that several
xdist workers write one file, with ``synchronous = OFF``: a committed transaction is in the
operating system's hands and survives a killed process. What OFF gives up against NORMAL is
the store's safety through an operating system crash or a power cut, for runs that do not
wait on a disk flush at every WAL checkpoint (see benchmarks/README.md).

>>> store = SQLiteStore(Path(".userflow/userflow.db"))   # doctest: +SKIP
>>> store.add_test(record, run)                            # doctest: +SKIP

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..model import (
    COUNTED_STATUSES,
    FILTER_STATUSES,
    OUTCOMES,
    Accept,
    Measurement,
    RunInfo,
    TestRecord,
    newest_accept,
    parse_time,
    utc_text,
)
from . import CLAIM_LEASE, PENDING, Progress, Query, Stored, StoredCheck, StoreError, Upload

SCHEMA_VERSION = 8


#: The budgets and regressions the gate checked, a row each, with the test that they belong to.
_CHECKS = (
    """CREATE TABLE checks (
    event INTEGER NOT NULL, key_name TEXT NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL,
    value REAL, low REAL, high REAL, baseline REAL, change_pct REAL, noise_pct REAL,
    limit_text TEXT
)""",
    "CREATE INDEX checks_event ON checks(event)",
)

#: A test's measurements a row each, from its row in ``events``, with their columns.
_ROWS = (
    "j.key AS seq, json_extract(j.value, '$[0]') AS key_name,"
    " json_extract(e.vals, '$[' || j.key || ']') AS value, json_extract(j.value, '$[1]')"
    " AS key_type, json_extract(j.value, '$[2]') AS key_units FROM events e, json_each(e.labels) j"
)
_VIEWS = (
    f"CREATE VIEW measurement_rows AS SELECT e.id AS event, {_ROWS}",
    "CREATE VIEW measurements AS SELECT e.id AS event, e.perf_event_id, e.run_id,"
    " e.user_flow_id, e.user_flow_name, e.event_time, e.event_ts, e.session_id, e.status,"
    f" e.outcome, e.nodeid, e.worker, e.device_address, {_ROWS}",
)

#: A test is one row of ``events``: its measurements are two JSON arrays in it, in the order
#: recorded, their labels (``labels``: ``[key, type, units]`` each) and their values
#: (``vals``), so that a test's commit writes one row, the run's summary reads one row a test,
#: and what looks only at labels (the units' check, a listing of some keys) reads no value.
#: The ``measurement_rows`` view gives them a row each (``seq``: the place in the arrays), and
#: the ``measurements`` view the API's columns.
#:
#: An accept says a level of a flow's key is intended from a run on (``model.Accept``): kept
#: when taken back, with the time it was (``undone_at``).
#: A delivery is a test still to copy into the team store (a PostgreSQL history, ``store``:
#: its URL as shown, without a password): the history there keys it by the local event id.
#:
#: An upload is the outbox's part of a test (``event``: its row in ``events``): where it goes
#: (base URL, API), the status to send when it is not the test's own (a shared session's), and
#: how far the delivery got: the destination's flow and event ids made so far, and while the
#: device's event is being made, the device's events with no status before it (``creating``,
#: a JSON list). The test itself is its event's row and measurements, read back to deliver it.
_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started_at REAL, finished_at REAL, host TEXT,
    git_commit TEXT, git_branch TEXT, ci_build_id TEXT, backend TEXT, outcome TEXT,
    base_branch TEXT, baseline_branch TEXT, fork_run TEXT
);
CREATE INDEX runs_branch ON runs(git_branch, started_at);
CREATE TABLE flows (
    user_flow_id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, description TEXT,
    created_time REAL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, perf_event_id TEXT NOT NULL, run_id TEXT NOT NULL,
    user_flow_id TEXT NOT NULL, user_flow_name TEXT NOT NULL, nodeid TEXT NOT NULL, worker TEXT,
    device_address TEXT, session_id TEXT, status TEXT NOT NULL, status_message TEXT,
    outcome TEXT NOT NULL, event_ts REAL NOT NULL, event_time TEXT NOT NULL, duration REAL,
    attempts INTEGER NOT NULL DEFAULT 1, labels TEXT NOT NULL DEFAULT '[]',
    vals TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX events_run ON events(run_id);
CREATE INDEX events_flow ON events(user_flow_id, event_ts);
{views};
{checks};
CREATE TABLE uploads (
    event INTEGER PRIMARY KEY, perf_event_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    base_url TEXT, api TEXT NOT NULL, status TEXT, status_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    remote_flow_id TEXT, remote_event_id TEXT, creating TEXT, updated_ts REAL,
    claim TEXT, claim_host TEXT, claim_pid INTEGER, claimed_until REAL
);
CREATE INDEX uploads_state ON uploads(state);
CREATE TABLE accepts (
    id INTEGER PRIMARY KEY, user_flow_name TEXT NOT NULL, key_name TEXT NOT NULL, nodeid TEXT,
    device_address TEXT, from_run TEXT NOT NULL, created_at REAL NOT NULL, user TEXT, host TEXT,
    reason TEXT, undone_at REAL
);
CREATE TABLE deliveries (
    event INTEGER PRIMARY KEY, perf_event_id TEXT NOT NULL UNIQUE, store TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_ts REAL
);
CREATE INDEX deliveries_state ON deliveries(state);
""".format(checks=";\n".join(_CHECKS), views=";\n".join(_VIEWS))


#: The fields of a run summary's key, in the order its keys are sorted.
_GROUP = ("flow", "key", "type", "device", "units")


class SQLiteStore:
    """The store file behind one connection, shared by this process's threads.

    Nothing is created on disk until something is written: a project whose tests record
    nothing gets no store. ``lock`` serialises the threads' use of the connection.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.timeout = timeout
        self.lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._flow_ids: dict[str, str] = {}
        self._runs: set[str] = set()  # runs whose row this connection has written

    @property
    def exists(self) -> bool:
        return self._db is not None or self.path.exists()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, opened (and the file made) when first asked for."""
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self._create()
        try:
            db = sqlite3.connect(
                str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the userflow store {self.path}: {exc}") from None
        try:
            _check_schema(db, self.path)
            # A commit survives a killed process without any fsync (see the module's docstring).
            db.execute("PRAGMA synchronous = OFF")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(
                f"{self.path} is not a usable pytest-userflow store ({exc}); it was left as it is: "
                "move it away or point --userflow-store elsewhere"
            ) from None
        except StoreError:
            db.close()
            raise
        return db

    def _create(self) -> None:
        """Make a new store whole under another name, then give it its name in one step: no
        process ever sees a store without its tables, and an empty file is never ours."""
        fresh = self.path.with_name(f"{self.path.name}.new-{uuid.uuid4().hex[:12]}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Readable by its owner only: it holds every upload body. SQLite gives its -wal
            # and -shm files the database file's mode.
            os.close(os.open(fresh, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            db = sqlite3.connect(str(fresh), isolation_level=None)
            try:
                # One transaction and no fsync: the file is nobody's until it is linked to its
                # name, and the store's writes never fsync either (see the module's docstring).
                db.execute("PRAGMA synchronous = OFF")
                db.executescript(
                    f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
                db.execute("PRAGMA journal_mode = WAL")
            finally:
                db.close()
            with contextlib.suppress(FileExistsError):  # another process made one meanwhile
                os.link(fresh, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot create the userflow store {self.path}: "
                f"{getattr(exc, 'strerror', None) or exc} "
                "(choose another path with --userflow-store or the userflow_store ini key)"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                fresh.unlink()
        gitignore = self.path.parent / ".gitignore"
        if self.path.parent.name == ".userflow" and not gitignore.exists():
            with contextlib.suppress(OSError):  # a courtesy: a read-only folder is fine
                gitignore.write_text("# created by pytest-userflow\n*\n")

    def check(self) -> None:
        """Raise StoreError now if the store could not be used, without making anything:
        an existing file is opened and its schema checked; else the folder it would be
        made in must be writable."""
        if self.path.exists():
            self.db  # noqa: B018  (opening it checks it)
            return
        folder = self.path.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot create the userflow store {self.path}: {folder} is not a writable "
                "folder (choose another path with --userflow-store or the userflow_store ini key)"
            )

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """SQLite's *exc* as a StoreError, naming the file; a corrupt file says so."""
        damaged = isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc)
        return StoreError(f"{self.path}: {exc}", damaged=damaged)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as StoreError (``_error``)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock: the write lock is taken up
        front, so concurrent writers wait on the busy timeout instead of failing on a lock
        upgrade. Every test's write goes through it: its errors are caught here rather than
        by a second context manager (``_errors``)."""
        with self.lock:
            try:
                db = self.db
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:  # SQLite rolls back by itself on a full disk
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    # -- writing -----------------------------------------------------------------------------

    def add_test(
        self,
        record: TestRecord,
        run: RunInfo,
        upload: Upload | None = None,
        *,
        state: str = PENDING,
        error: str | None = None,
        team: str | None = None,
    ) -> None:
        """Commit one finished test, its measurements and its *upload* (in *state*; *error*:
        why it is refused) in one transaction; the run's row comes with its first test.
        *team*: the team store it is to be delivered to as well (its URL as shown)."""
        with self.transaction() as db:
            if run.run_id not in self._runs:
                _insert_run(db, run)
            flow_id = self._flow_id(db, record.flow, record.description)
            event = db.execute(
                "INSERT INTO events (perf_event_id, run_id, user_flow_id, user_flow_name, nodeid,"
                " worker, device_address, session_id, status, status_message, outcome, event_ts,"
                " event_time, duration, attempts, labels, vals)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.perf_event_id,
                    run.run_id,
                    flow_id,
                    record.flow,
                    record.nodeid,
                    record.worker,
                    record.device_address,
                    record.session_id,
                    record.status,
                    record.status_message,
                    record.outcome,
                    record.event_ts,
                    utc_text(record.event_ts),
                    record.duration,
                    record.attempts,
                    *_texts(record.measurements),
                ),
            ).lastrowid
            if record.checks:
                db.executemany(
                    "INSERT INTO checks (event, key_name, kind, verdict, value, low, high,"
                    " baseline, change_pct, noise_pct, limit_text) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (event, c.key, c.kind, c.verdict, c.value, c.low, c.high, c.baseline,
                         c.change_pct, c.noise_pct, c.limit)
                        for c in record.checks
                    ],
                )  # fmt: skip
            if upload is not None:
                status, message = upload.status or (None, None)
                db.execute(
                    "INSERT INTO uploads (event, perf_event_id, state, base_url, api, status,"
                    " status_message, last_error, updated_ts) VALUES (?,?,?,?,?,?,?,?,?)",
                    (event, record.perf_event_id, state, upload.base_url, upload.api, status,
                     message, error, time.time()),
                )  # fmt: skip
            if team is not None:
                db.execute(
                    "INSERT INTO deliveries (event, perf_event_id, store, state, updated_ts)"
                    " VALUES (?,?,?,?,?)",
                    (event, record.perf_event_id, team, PENDING, time.time()),
                )
        self._runs.add(run.run_id)

    def _flow_id(self, db: sqlite3.Connection, name: str, description: str | None) -> str:
        flow_id = self._flow_ids.get(name)
        if flow_id is None:
            db.execute(
                "INSERT OR IGNORE INTO flows (user_flow_id, name, description, created_time)"
                " VALUES (?,?,?,?)",
                (str(uuid.uuid4()), name, description, time.time()),
            )
            row = db.execute("SELECT user_flow_id FROM flows WHERE name = ?", (name,)).fetchone()
            flow_id = self._flow_ids[name] = str(row[0])
        return flow_id

    def finish_run(self, run_id: str, outcome: str, *, at: float | None = None) -> None:
        """Note the run's end (*at*: when, else now), when it recorded anything (else it has
        no row)."""
        if not self.exists:
            return
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ? WHERE run_id = ?",
                (time.time() if at is None else at, outcome, run_id),
            )

    # -- the team store's deliveries ----------------------------------------------------------

    def deliveries(self, states: Sequence[str] = (PENDING,)) -> list[str]:
        """The local event ids of the tests to deliver to the team store, in *states*, in
        the order they were recorded."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT perf_event_id FROM deliveries WHERE state IN ({marks}) ORDER BY event"
        return [row[0] for row in self._select(sql, states)]

    def count_deliveries(self, states: Sequence[str] = (PENDING,)) -> int:
        marks = ",".join("?" * len(states))
        sql = f"SELECT COUNT(*) FROM deliveries WHERE state IN ({marks})"
        rows = self._select(sql, states)
        return int(rows[0][0]) if rows else 0

    def mark_deliveries(
        self, perf_event_ids: Sequence[str], state: str, *, error: str | None = None
    ) -> None:
        """Team store deliveries' outcome: their new state and the last error."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE deliveries SET state = ?, last_error = ?, attempts = attempts + 1,"
                " updated_ts = ? WHERE perf_event_id = ?",
                [(state, error, time.time(), key) for key in perf_event_ids],
            )

    def records(self, perf_event_ids: Sequence[str] | None = None) -> Iterator[Stored]:
        """Every test (or those of *perf_event_ids*) as it was committed, with its checks
        and its run, in the order recorded."""
        where, args = "", list(perf_event_ids or ())
        if perf_event_ids is not None:
            where = f" WHERE e.perf_event_id IN ({','.join('?' * len(args))})"
        rows = self._select(
            "SELECT e.id, e.nodeid, e.user_flow_name, f.description, e.device_address, e.worker,"
            " e.session_id, e.perf_event_id, e.status, e.status_message, e.event_ts, e.duration,"
            " e.attempts, e.outcome, r.run_id, r.started_at, r.host, r.git_commit, r.git_branch,"
            " r.ci_build_id, r.backend, r.base_branch, r.baseline_branch, r.fork_run,"
            " r.finished_at, r.outcome FROM events e"
            " JOIN flows f ON f.user_flow_id = e.user_flow_id JOIN runs r ON r.run_id = e.run_id"
            f"{where} ORDER BY e.id",
            args,
        )
        for start in range(0, len(rows), 500):  # each chunk's values and checks in two reads
            chunk = rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            ids = [row[0] for row in chunk]
            measurements = {
                event: _measurements(labels, values)
                for event, labels, values in self._select(
                    f"SELECT id, labels, vals FROM events WHERE id IN ({marks})", ids
                )
            }
            checks: dict[int, list[StoredCheck]] = {}
            for event, *c in self._select(
                "SELECT event, key_name, kind, verdict, value, low, high, baseline, change_pct,"
                f" noise_pct, limit_text FROM checks WHERE event IN ({marks}) ORDER BY rowid",
                ids,
            ):
                checks.setdefault(event, []).append(StoredCheck(*c))
            for row in chunk:
                event, nodeid, flow, description, device, worker, session, key, *rest = row
                record = TestRecord(nodeid, flow, description, device=device, worker=worker)
                record.session_id, record.perf_event_id, record.ended = session, key, True
                (record.status, record.status_message, record.event_ts, record.duration,
                 record.attempts, record.outcome) = rest[:6]  # fmt: skip
                record.measurements = measurements[event]
                record.checks = checks.get(event, [])
                yield Stored(record, RunInfo(*rest[6:16]), rest[16], rest[17])

    def mark(
        self,
        perf_event_id: str,
        state: str,
        *,
        error: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        """An upload's outcome: its new state, the last error, how far it got."""
        with self.transaction() as db:
            db.execute(
                "UPDATE uploads SET state = ?, last_error = ?, attempts = attempts + 1,"
                " updated_ts = ?, claim = NULL, claimed_until = NULL WHERE perf_event_id = ?",
                (state, error, time.time(), perf_event_id),
            )
            if progress is not None:
                _save_progress(db, perf_event_id, progress)

    def save_progress(self, perf_event_id: str, progress: Progress) -> None:
        """How far an upload got, before it is done: a replay starts from there. Its claim's
        lease starts again (its sender is at work)."""
        with self.transaction() as db:
            _save_progress(db, perf_event_id, progress)
            db.execute(
                "UPDATE uploads SET claimed_until = ?"
                " WHERE perf_event_id = ? AND claim IS NOT NULL",
                (time.time() + CLAIM_LEASE, perf_event_id),
            )

    def progress(self, perf_event_id: str) -> Progress:
        """How far an upload got, as the store has it now (another sender may have moved it
        on since it was listed)."""
        rows = self._select(
            "SELECT remote_flow_id, remote_event_id, creating FROM uploads WHERE perf_event_id = ?",
            [perf_event_id],
        )
        if not rows:
            return Progress()
        flow_id, event_id, creating = rows[0]
        known = None if creating is None else tuple(json.loads(creating))
        return Progress(flow_id, event_id, known)

    def unclaim(self, owner: str) -> None:
        """End the claims of the sender *owner* (it stopped; what it did not finish is free)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE uploads SET claim = NULL, claimed_until = NULL WHERE claim = ?", (owner,)
            )

    def claim(self, perf_event_id: str, owner: str, states: Sequence[str] = (PENDING,)) -> str:
        """Take the upload for the sender *owner*: ``"mine"``; ``"done"`` when it is in none
        of *states* any more (another sender finished it); ``"busy"`` while another sender's
        claim holds: its lease runs, and its process lives (a dead one's claim, on this host,
        holds no more)."""
        host, now = socket.gethostname(), time.time()
        with self.transaction() as db:
            row = db.execute(
                "SELECT state, claim, claim_host, claim_pid, claimed_until FROM uploads"
                " WHERE perf_event_id = ?",
                (perf_event_id,),
            ).fetchone()
            if row is None or row[0] not in states:
                return "done"
            _, holder, holder_host, pid, until = row
            if _holds(holder, holder_host, pid, until, owner, host, now):
                return "busy"
            # The requests of one lane (a session, or a flow and device) go out one sender
            # at a time: what an event's creation adopts must be its own sender's.
            others = db.execute(
                "SELECT u.claim, u.claim_host, u.claim_pid, u.claimed_until FROM uploads u"
                " JOIN events e ON e.id = u.event, events mine"
                " WHERE mine.perf_event_id = ? AND u.perf_event_id != ? AND u.claim IS NOT NULL"
                " AND (e.session_id = mine.session_id OR (e.session_id IS NULL AND"
                " mine.session_id IS NULL AND e.user_flow_name = mine.user_flow_name"
                " AND e.device_address IS mine.device_address))",
                (perf_event_id, perf_event_id),
            ).fetchall()
            if any(_holds(c, h, p, u, owner, host, now) for c, h, p, u in others):
                return "busy"
            db.execute(
                "UPDATE uploads SET claim = ?, claim_host = ?, claim_pid = ?, claimed_until = ?"
                " WHERE perf_event_id = ?",
                (owner, host, os.getpid(), now + CLAIM_LEASE, perf_event_id),
            )
            return "mine"

    # -- the uploads, for the sender and push --------------------------------------------------

    def uploads(self, states: Sequence[str] = (PENDING,)) -> list[Upload]:
        """The uploads in *states*, in the order their tests were recorded."""
        marks = ",".join("?" * len(states))
        rows = self._select(
            "SELECT u.perf_event_id, e.user_flow_name, e.session_id, e.device_address,"
            " u.base_url, u.api, u.status, u.status_message, u.remote_flow_id, u.remote_event_id,"
            " u.creating, u.attempts FROM uploads u JOIN events e ON e.id = u.event"
            f" WHERE u.state IN ({marks}) ORDER BY u.event",
            states,
        )
        uploads = []
        for key, flow, session, device, url, api, status, message, *progress, attempts in rows:
            flow_id, event_id, creating = progress
            known = None if creating is None else tuple(json.loads(creating))
            shared = None if status is None else (status, message)
            routing = (key, flow, session, device, url, api)
            uploads.append(Upload(*routing, shared, Progress(flow_id, event_id, known), attempts))
        return uploads

    def record(self, perf_event_id: str) -> TestRecord:
        """The test an upload delivers, as it was committed."""
        rows = self._select(
            "SELECT e.nodeid, e.user_flow_name, f.description, e.device_address, e.worker,"
            " e.session_id, e.status, e.status_message, e.event_ts, e.duration, e.attempts,"
            " e.outcome, e.labels, e.vals FROM uploads u JOIN events e ON e.id = u.event"
            " JOIN flows f ON f.user_flow_id = e.user_flow_id"
            " WHERE u.perf_event_id = ?",
            [perf_event_id],
        )
        if not rows:
            raise StoreError(f"{self.path}: no upload of the local event {perf_event_id}")
        nodeid, flow, description, device, worker, session, *outcome, labels, values = rows[0]
        record = TestRecord(nodeid, flow, description, device=device, worker=worker)
        record.session_id, record.perf_event_id, record.ended = session, perf_event_id, True
        (record.status, record.status_message, record.event_ts, record.duration,
         record.attempts, record.outcome) = outcome  # fmt: skip
        record.measurements = _measurements(labels, values)
        return record

    def count_uploads(self, states: Sequence[str] = (PENDING,)) -> int:
        if not self.exists:
            return 0
        marks = ",".join("?" * len(states))
        with self.lock, self._errors():
            sql = f"SELECT COUNT(*) FROM uploads WHERE state IN ({marks})"
            return int(self.db.execute(sql, list(states)).fetchone()[0])

    # -- reads --------------------------------------------------------------------------------

    def _select(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.exists:
            return []
        with self.lock, self._errors():
            return self.db.execute(sql, list(args)).fetchall()

    def run_summary(self, run_id: str, worker: str | bool | None = False) -> dict[str, Any]:
        """One run's tests per flow and status, where their measurements went, and per (flow,
        key, type, device) the count, numeric values and units of its passed and failed tests
        (*left_out*: how many values of excluded tests were not counted; *by_gate*: how many
        tests only the gate failed); the summary's
        statistics are the report's to take.

        *worker*: False for every process of the run, else one process (None: in-process).
        """
        where = "run_id = ?"
        args: list[Any] = [run_id]
        if worker is not False:
            where += " AND worker IS ?"
            args.append(worker)
        flows: dict[str, dict[str, Any]] = {}

        def flow(name: str) -> dict[str, Any]:
            return flows.setdefault(
                name, {"tests": 0, "statuses": {}, "places": {}, "left_out": 0, "by_gate": 0}
            )

        for name, status, n, passed in self._select(
            "SELECT user_flow_name, status, COUNT(*), SUM(outcome = 'Passed') FROM events"
            f" WHERE {where} GROUP BY 1, 2",
            args,
        ):
            flow(name)["tests"] += n
            flow(name)["statuses"][status] = n
            if status == "Failed":
                flow(name)["by_gate"] = passed
        reruns = self._select(
            f"SELECT nodeid, attempts FROM events WHERE {where} AND attempts > 1 ORDER BY nodeid",
            args,
        )
        uploads = bool(
            self._select(
                "SELECT 1 FROM events e JOIN uploads u ON u.event = e.id WHERE e.run_id = ?"
                " LIMIT 1",
                [run_id],
            )
        )
        state = "u.state" if uploads else "NULL"
        condition = " WHERE " + " AND ".join("e." + p for p in where.split(" AND "))
        # The tests of one flow, device, destination and status with the same labels are
        # one shape: their values are parsed together, once, and split into columns by the
        # labels, parsed once too. A key recorded in two units is two groups: never one
        # summary of both.
        shapes: dict[tuple[Any, ...], list[str]] = {}
        for row in self._select(
            f"SELECT e.vals, e.user_flow_name, e.device_address, {state}, e.status, e.labels"
            " FROM events e"
            + (" LEFT JOIN uploads u ON u.event = e.id" if uploads else "")
            + condition,
            args,
        ):
            texts = shapes.get(row[1:])
            if texts is None:
                texts = shapes[row[1:]] = []
            texts.append(row[0])
        places = Counter[tuple[str, str | None, str]]()
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for (name, device, place, status, labels), texts in shapes.items():
            shape = json.loads(labels)
            if not shape:
                continue
            places[name, place, status] += len(shape) * len(texts)
            if status not in COUNTED_STATUSES:
                continue
            columns = zip(*json.loads(f"[{','.join(texts)}]"), strict=True)
            for (key, kind, units), column in zip(shape, columns, strict=True):
                group = groups.get((name, key, kind, device, units))
                if group is None:
                    group = groups[name, key, kind, device, units] = []
                group += column
        for (name, place, status), n in places.items():
            where_to = flow(name)["places"]
            where_to[place or ""] = where_to.get(place or "", 0) + n
            if status not in COUNTED_STATUSES:
                flow(name)["left_out"] += n
        keys = [
            {
                "flow": name,
                "key": key,
                "type": kind,
                "device": device,
                "count": len(values),
                # a value read back from JSON is an int, a float or a str
                "values": [v for v in values if v.__class__ is not str],
                "units": units,
            }
            for (name, key, kind, device, units), values in groups.items()
        ]
        keys.sort(key=lambda row: tuple((row[k] is not None, row[k]) for k in _GROUP))
        pending = self._select(
            "SELECT COUNT(*), COALESCE(SUM(json_array_length(e.labels)), 0) FROM events e"
            f" JOIN uploads u ON u.event = e.id{condition} AND u.state = ?",
            [*args, PENDING],
        )
        tests, measurements = pending[0] if pending else (0, 0)
        team = self._select(
            f"SELECT COUNT(*) FROM events e JOIN deliveries d ON d.event = e.id{condition}"
            " AND d.state = ?",
            [*args, PENDING],
        )
        return {
            "flows": dict(sorted(flows.items())),
            "keys": keys,
            "pending": {
                "tests": tests,
                "measurements": measurements,
                "team": team[0][0] if team else 0,
            },
            "reruns": [[nodeid, attempts] for nodeid, attempts in reruns],
        }

    def tests(self, run_id: str | None = None, worker: str | None = None) -> list[dict[str, Any]]:
        """The tests of one run (or of every run, oldest first), of one process given
        *worker*, each with its measurements and where its data went."""
        where, args = ["1"], []
        if run_id is not None:
            where.append("e.run_id = ?")
            args.append(run_id)
        if worker is not None:
            where.append("e.worker IS ?")
            args.append(worker)
        condition = " AND ".join(where)
        sql = (
            "SELECT e.id, e.perf_event_id, e.nodeid, e.user_flow_name, e.status, e.status_message,"
            " e.session_id, e.device_address, e.worker, e.event_time, e.duration,"
            " u.state, u.last_error, u.remote_event_id, e.attempts, e.run_id, e.outcome, d.state,"
            " e.labels, e.vals FROM events e LEFT JOIN uploads u ON u.event = e.id"
            " LEFT JOIN deliveries d ON d.event = e.id"
            f" WHERE {condition} ORDER BY e.event_ts, e.id"
        )
        events: dict[int, dict[str, Any]] = {}
        for row in self._select(sql, args):
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
                "run_id": row[15],
                "outcome": row[16],
                "team_state": row[17],
                "measurements": [
                    {"key": m.key, "value": m.value, "type": m.type, "units": m.units}
                    for m in _measurements(row[18], row[19])
                ],
            }
        return list(events.values())

    def flows(
        self,
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT f.user_flow_id, f.name, f.description, f.created_time,"
            " COUNT(e.id), COALESCE(SUM(json_array_length(e.labels)), 0)"
            " FROM flows f LEFT JOIN events e ON e.user_flow_id = f.user_flow_id"
            " GROUP BY f.user_flow_id ORDER BY f.name"
        )
        names = ("user_flow_id", "name", "description", "created_time", "tests", "measurements")
        return [dict(zip(names, row, strict=True)) for row in self._select(sql)]

    def runs(self, limit: int | None = None, *, branch: str | None = None) -> list[dict[str, Any]]:
        """The recorded runs, newest first, with their test and measurement counts; of one
        *branch* when given."""
        # The runs are chosen first, so that only theirs are counted.
        chosen = "SELECT * FROM runs"
        args: list[Any] = []
        if branch is not None:
            chosen += " WHERE git_branch = ?"
            args.append(branch)
        chosen += " ORDER BY started_at DESC"
        if limit is not None:
            chosen += f" LIMIT {int(limit)}"
        sql = (
            "SELECT r.run_id, r.started_at, r.finished_at, r.host, r.git_commit, r.git_branch,"
            " r.base_branch, r.baseline_branch, r.fork_run, r.ci_build_id, r.backend, r.outcome,"
            " COUNT(e.id), COALESCE(SUM(json_array_length(e.labels)), 0)"
            f" FROM ({chosen}) r LEFT JOIN events e ON e.run_id = r.run_id"
            " GROUP BY r.run_id ORDER BY r.started_at DESC"
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
        return [dict(zip(names, row, strict=True)) for row in self._select(sql, args)]

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
                    f"run {prefix!r} matches {len(found)} of the {len(known)} runs in {self.path}"
                    f"{which}; give more of its id (pytest-userflow runs lists them)"
                )
            out.append(found[0])
        return out

    def run_tests(
        self,
    ) -> dict[str, set[str]]:
        """The node ids of the tests each run recorded."""
        tests: dict[str, set[str]] = {}
        for run_id, nodeid in self._select("SELECT DISTINCT run_id, nodeid FROM events"):
            tests.setdefault(run_id, set()).add(nodeid)
        return tests

    def unit_changes(
        self, run_id: str, earlier: Sequence[str]
    ) -> list[tuple[str, str, str, str | None, str | None]]:
        """Each test and key whose units in the run *run_id* differ from the newest units
        the test recorded the key in, in the *earlier* runs: (node id, flow, key, units now,
        units before), a test and key once whatever its types and devices (the first found,
        in the order the run recorded them)."""
        rows = self._labels([run_id])
        now: dict[tuple[str, str, str | None], list[str]] = {}
        before: dict[tuple[str, str, str | None], list[str]] = {}
        for nodeid, flow, device, labels in rows:
            now.setdefault((nodeid, flow, device), []).append(labels)
        for nodeid, flow, device, labels in self._labels(earlier):
            before.setdefault((nodeid, flow, device), []).append(labels)
        has: dict[tuple[str, str, str, str | None, str | None], str | None] = {}
        for nodeid, flow, device, labels in rows:
            old = before.get((nodeid, flow, device))
            # A test's labels are mostly the ones it had last time: nothing to compare.
            if old is None or now[nodeid, flow, device] == old[-1:]:
                continue
            for key, kind, units in json.loads(labels):
                has[nodeid, flow, key, kind, device] = units
        had: dict[tuple[str, str, str | None], dict[tuple[str, str | None], str | None]] = {}
        found: dict[tuple[str, str, str], tuple[str | None, str | None]] = {}
        for (nodeid, flow, key, kind, device), units in has.items():
            test = (nodeid, flow, device)
            if test not in had:
                had[test] = {(k, t): u for text in before[test] for k, t, u in json.loads(text)}
            prior = had[test].get((key, kind), units)
            if prior != units:
                found.setdefault((nodeid, flow, key), (units, prior))
        return [(*test, *change) for test, change in found.items()]

    def _labels(self, run_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """The tests' labels in these runs: node id, flow, device and the labels' text, each
        distinct text once, the newest last (SQLite reads a test's same labels once)."""
        return self._select(
            "SELECT nodeid, user_flow_name, device_address, labels FROM events"
            f" WHERE run_id IN ({','.join('?' * len(run_ids))})"
            " GROUP BY nodeid, user_flow_name, device_address, labels"
            " ORDER BY max(event_ts), max(id)",
            run_ids,
        )

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
            f" WHERE e.run_id IN ({','.join('?' * len(run_ids))}) ORDER BY e.event_ts, c.rowid"
        )
        return [dict(zip(names, row, strict=True)) for row in self._select(sql, run_ids)]

    def resolve_flow(self, flow: str) -> str | None:
        rows = self._select(
            "SELECT user_flow_id FROM flows WHERE name = ? OR user_flow_id = ?", (flow, flow)
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
        sql = (
            "SELECT m.value FROM events e JOIN measurement_rows m ON m.event = e.id"
            " WHERE e.user_flow_id = ? AND m.key_name = ? AND e.run_id IS NOT ?"
        )
        args: list[Any] = [flow_id, key, exclude_run]
        accept = newest_accept(self.accepts(flow=flow, key=key), flow, key, nodeid, device)
        if accept is None:
            sql += " AND e.status = 'Passed'"
        else:
            sql += (
                " AND e.event_ts >= ? AND (e.status = 'Passed'"
                " OR (e.outcome = 'Passed' AND e.event_ts <= ?))"
            )
            args += [accept.from_started, accept.created_at]
        if nodeid is not None:
            sql += " AND e.nodeid = ? AND e.device_address IS ?"
            args += [nodeid, device]
        if branch is not None:
            sql += " AND e.run_id IN (SELECT run_id FROM runs WHERE git_branch = ?"
            args.append(branch)
            if until is not None:
                sql += " AND started_at <= (SELECT started_at FROM runs WHERE run_id = ?)"
                args.append(until)
            sql += ")"
        sql += " ORDER BY e.event_ts DESC, m.seq DESC LIMIT ?"
        return [r[0] for r in self._select(sql, [*args, int(limit)])]

    # -- accepts ------------------------------------------------------------------------------

    def add_accept(self, accept: Accept) -> Accept:
        """Keep *accept*; it is returned with its id and its run's start."""
        started = self._select("SELECT started_at FROM runs WHERE run_id = ?", [accept.from_run])
        if not started:
            raise StoreError(f"{self.path}: no run {accept.from_run!r} to accept a level from")
        with self.transaction() as db:
            made = db.execute(
                "INSERT INTO accepts (user_flow_name, key_name, nodeid, device_address, from_run,"
                " created_at, user, host, reason) VALUES (?,?,?,?,?,?,?,?,?)",
                (accept.flow, accept.key, accept.nodeid, accept.device, accept.from_run,
                 accept.created_at, accept.user, accept.host, accept.reason),
            ).lastrowid  # fmt: skip
        return replace(accept, id=made, from_started=started[0][0])

    def accepts(
        self, *, flow: str | None = None, key: str | None = None, undone: bool = False
    ) -> list[Accept]:
        """The accepts in force (and those taken back, given *undone*), oldest first; of one
        flow and key when given."""
        where, args = ["1"], []
        if not undone:
            where.append("a.undone_at IS NULL")
        if flow is not None and key is not None:
            where.append("a.user_flow_name = ? AND a.key_name = ?")
            args += [flow, key]
        rows = self._select(
            "SELECT a.user_flow_name, a.key_name, a.from_run, a.nodeid, a.device_address,"
            " a.reason, a.user, a.host, a.created_at, a.id, r.started_at, a.undone_at"
            " FROM accepts a LEFT JOIN runs r ON r.run_id = a.from_run"
            f" WHERE {' AND '.join(where)} ORDER BY a.id",
            args,
        )
        return [Accept(*row) for row in rows]

    def undo_accept(self, accept_id: int) -> Accept:
        """Take back the accept *accept_id*: it is kept, marked undone; it is returned."""
        found = [a for a in self.accepts(undone=True) if a.id == accept_id]
        if not found or found[0].undone_at is not None:
            state = "was taken back already in" if found else "is not in"
            raise StoreError(
                f"accept {accept_id} {state} {self.path} (pytest-userflow accept --list lists them)"
            )
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE accepts SET undone_at = ? WHERE id = ?", (now, accept_id))
        return replace(found[0], undone_at=now)

    def measurements(self, query: Query) -> Iterator[dict[str, Any]]:
        """The API's measurement listing over the local store, with the API's semantics."""
        where: list[str] = []
        args: list[Any] = []
        if query.flow is not None:
            flow_id = self.resolve_flow(query.flow)
            if flow_id is None:
                raise StoreError(f"no user flow named or with id {query.flow!r} in {self.path}")
            where.append("user_flow_id = ?")
            args.append(flow_id)

        def any_of(column: str, values: Iterable[Any]) -> None:
            values = list(values)
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)

        any_of("session_id", query.session_ids)
        keys = set(query.keys)
        if keys:
            # A test's labels hold a key as '["key",' and nowhere else: only the tests that
            # hold one of them are read.
            where.append(f"({' OR '.join(['instr(labels, ?)'] * len(keys))})")
            args += [f"[{_to_json(key)}," for key in keys]
        any_of("run_id", query.run_ids)
        wanted = [s.lower() for s in query.statuses] or ["passed", "failed", "not_set"]
        for s in wanted:
            if s not in FILTER_STATUSES:
                raise StoreError(f"status must be one of {', '.join(FILTER_STATUSES)}, got {s!r}")
        # Locally every test has a status; not_set matches none of them.
        any_of("status", [s.capitalize() for s in wanted if s != "not_set"] or ["-"])
        for s in query.outcomes:
            if s not in OUTCOMES:
                raise StoreError(f"outcome must be one of {', '.join(OUTCOMES)}, got {s!r}")
        any_of("outcome", [s.capitalize() for s in query.outcomes])
        if query.start_time is not None:
            where.append("event_ts >= ?")
            args.append(parse_time(query.start_time))
        if query.end_time is not None:
            where.append("event_ts <= ?")
            args.append(parse_time(query.end_time))
        sql = (
            "SELECT user_flow_id, user_flow_name, perf_event_id, event_time, session_id, status,"
            " outcome, run_id, nodeid, worker, device_address, labels, vals FROM events"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_ts, id"
        if not self.exists:
            return
        skip, left = max(query.offset or 0, 0), query.limit
        if left == 0:
            return
        with self.lock, self._errors():
            cursor = self.db.execute(sql, args)
            for chunk in iter(lambda: cursor.fetchmany(1000), []):
                for (flow_id, flow, event, time_, session, status, outcome, run_id, nodeid,
                     worker, device, labels, values) in chunk:  # fmt: skip
                    for key, value, kind, units in _measurements(labels, values):
                        if keys and key not in keys:
                            continue
                        if skip:
                            skip -= 1
                            continue
                        yield {
                            "user_flow_id": flow_id,
                            "user_flow_name": flow,
                            "perf_event_id": event,
                            "event_time": time_,
                            "session_id": session,
                            "key_name": key,
                            "key_type": kind,
                            "key_units": units,
                            "value": value,
                            "status": status,
                            "outcome": outcome,
                            "run_id": run_id,
                            "nodeid": nodeid,
                            "worker": worker,
                            "device_address": device,
                            "perf_key_id": None,
                        }
                        if left is not None:
                            left -= 1
                            if not left:
                                return


#: JSON as a test's row keeps it: compact, text other than ASCII kept as it is rather than
#: escaped, and never a NaN, which JSON does not have.
_to_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


#: A measurement's labels (key, type, units), and its value.
_LABELS = operator.itemgetter(0, 2, 3)
_VALUE = operator.itemgetter(1)


def _texts(measurements: Sequence[Measurement]) -> tuple[str, str]:
    """A test's measurements as its row keeps them: their labels, and their values."""
    return _to_json(list(map(_LABELS, measurements))), _to_json(list(map(_VALUE, measurements)))


def _measurements(labels: str, values: str) -> list[Measurement]:
    """The measurements of a test's row, as they were recorded."""
    return [
        Measurement(key, value, kind, units)
        for (key, kind, units), value in zip(json.loads(labels), json.loads(values), strict=True)
    ]


def _insert_run(db: sqlite3.Connection, run: RunInfo) -> None:
    db.execute(
        "INSERT OR IGNORE INTO runs (run_id, started_at, host, git_commit, git_branch,"
        " ci_build_id, backend, base_branch, baseline_branch, fork_run)"
        " VALUES (?,?,?,?,?,?,?,?,?,?)",
        (run.run_id, run.started_at, run.host, run.git_commit, run.git_branch, run.ci_build_id,
         run.backend, run.base_branch, run.baseline_branch, run.fork_run),
    )  # fmt: skip


def _holds(
    holder: str | None,
    holder_host: str | None,
    pid: int | None,
    until: float | None,
    owner: str,
    host: str,
    now: float,
) -> bool:
    """Whether another sender's claim holds: on this host while its process lives (however
    long its requests take), on another while its lease runs."""
    if holder in (None, owner):
        return False
    if holder_host == host:
        return _alive(pid)
    return until is not None and until > now


def _alive(pid: int | None) -> bool:
    """Whether process *pid* of this host still runs."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it runs, as another user
        return True
    return True


def _save_progress(db: sqlite3.Connection, perf_event_id: str, progress: Progress) -> None:
    creating = None if progress.creating is None else json.dumps(list(progress.creating))
    db.execute(
        "UPDATE uploads SET remote_flow_id = ?, remote_event_id = ?, creating = ?,"
        " updated_ts = ?"
        " WHERE perf_event_id = ?",
        (progress.flow_id, progress.event_id, creating, time.time(), perf_event_id),
    )


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    """The file must be a store of this schema (made by ``SQLiteStore._create``)."""
    db.execute(f"PRAGMA busy_timeout = {30_000}")
    row = db.execute(
        "SELECT (SELECT user_version FROM pragma_user_version),"
        " (SELECT group_concat(name, ', ') FROM sqlite_master WHERE type = 'table')"
    ).fetchone()
    version, tables = int(row[0]), row[1] or ""
    if version == SCHEMA_VERSION:
        return
    if version == 7:
        _upgrade(db, path)
        return
    if version != 0:
        raise sqlite3.DatabaseError(
            f"schema version {version}, where this version of pytest-userflow writes "
            f"{SCHEMA_VERSION}"
        )
    if tables:
        raise sqlite3.DatabaseError(f"it holds other tables ({tables})")
    raise sqlite3.DatabaseError("it is empty: a store is never made empty, so it was cut short")


def _upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring a store of schema 7 (a row a measurement) to this one (a row a test), whole or
    not at all; a process that finds it done meanwhile leaves it. A store that cannot be
    written now (read-only, or another process writing it) is left as it was, and said so."""
    try:
        db.execute("BEGIN IMMEDIATE")
        if db.execute("PRAGMA user_version").fetchone()[0] == 7:
            db.execute("ALTER TABLE events ADD COLUMN labels TEXT NOT NULL DEFAULT '[]'")
            db.execute("ALTER TABLE events ADD COLUMN vals TEXT NOT NULL DEFAULT '[]'")
            tests: dict[int, list[Measurement]] = {}
            for event, *m in db.execute(
                "SELECT event, key_name, value, key_type, key_units FROM measurement_rows"
                " ORDER BY event, seq"
            ):
                tests.setdefault(event, []).append(Measurement(*m))
            db.executemany(
                "UPDATE events SET labels = ?, vals = ? WHERE id = ?",
                [(*_texts(values), event) for event, values in tests.items()],
            )
            db.execute("DROP VIEW measurements")
            db.execute("DROP TABLE measurement_rows")
            for view in _VIEWS:
                db.execute(view)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if not isinstance(exc, sqlite3.OperationalError):  # a damaged store, said as such
            raise
        raise StoreError(
            f"{path} was written by the previous release of pytest-userflow, and this one "
            f"brings it up to date before it reads it, which could not be done now ({exc}): "
            "it is done, every value kept, the first time the store is opened where it can "
            "be written and while no other process writes it; it was left as it is"
        ) from None
