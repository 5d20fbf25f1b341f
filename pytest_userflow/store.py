"""The local SQLite store: its schema and its writes (reads are in queries.py).

It is the write-ahead log of the plugin, a test's record is committed here before any
upload, and the local backend. No pytest import: the CLI opens it too.

Each finished test is one small transaction. The store is in WAL mode, so that several
xdist workers write one file, with ``synchronous = OFF``: a committed transaction is in the
operating system's hands and survives a killed process. What OFF gives up against NORMAL is
the store's safety through an operating system crash or a power cut, for runs that do not
wait on a disk flush at every WAL checkpoint (see benchmarks/README.md).

>>> store = Store(".userflow/userflow.db")            # doctest: +SKIP
>>> store.write_test(record, run)                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .model import RunInfo, TestRecord, UserflowError, utc_text

SCHEMA_VERSION = 2

#: The budgets and regressions the gate checked, a row each, with the test that they belong to.
_CHECKS = (
    """CREATE TABLE checks (
    event INTEGER NOT NULL, key_name TEXT NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL,
    value REAL, low REAL, high REAL, baseline REAL, change_pct REAL, noise_pct REAL,
    limit_text TEXT
)""",
    "CREATE INDEX checks_event ON checks(event)",
)

#: A measurement row holds only what is its own and points at its event; rows are kept in
#: their event's order (the primary key), so a test's rows are one stretch of one table and
#: its commit touches few pages. The ``measurements`` view joins them into the API's columns.
_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started_at REAL, finished_at REAL, host TEXT,
    git_commit TEXT, git_branch TEXT, ci_build_id TEXT, backend TEXT, outcome TEXT
);
CREATE TABLE flows (
    user_flow_id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, description TEXT,
    created_time REAL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, perf_event_id TEXT NOT NULL, run_id TEXT NOT NULL,
    user_flow_id TEXT NOT NULL, user_flow_name TEXT NOT NULL, nodeid TEXT NOT NULL, worker TEXT,
    device_address TEXT, session_id TEXT, status TEXT NOT NULL, status_message TEXT,
    event_ts REAL NOT NULL, event_time TEXT NOT NULL, duration REAL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX events_run ON events(run_id);
CREATE INDEX events_flow ON events(user_flow_id, event_ts);
CREATE TABLE measurement_rows (
    event INTEGER NOT NULL, seq INTEGER NOT NULL, key_name TEXT NOT NULL, key_type TEXT,
    key_units TEXT, value, PRIMARY KEY (event, seq)
) WITHOUT ROWID;
CREATE VIEW measurements AS SELECT e.id AS event, m.seq AS seq, e.perf_event_id, e.run_id,
    e.user_flow_id, e.user_flow_name, e.event_time, e.event_ts, e.session_id, e.status,
    m.key_name, m.key_type, m.key_units, m.value, e.nodeid, e.worker, e.device_address
    FROM measurement_rows m JOIN events e ON e.id = m.event;
{checks};
CREATE TABLE uploads (
    perf_event_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, state TEXT NOT NULL,
    base_url TEXT, api TEXT, plan TEXT NOT NULL, progress TEXT, attempts INTEGER DEFAULT 0,
    last_error TEXT, remote_event_id TEXT, updated_ts REAL
);
CREATE INDEX uploads_state ON uploads(state);
""".format(checks=";\n".join(_CHECKS))

#: Upload states: waiting to be sent, delivered, refused by HeadSpin (kept), or not
#: routable (no session and no device) and so kept only here.
PENDING, SENT, FAILED, LOCAL_ONLY = "pending", "sent", "failed", "local-only"


class StoreError(UserflowError):
    """The store cannot be opened or written; the message names the file."""


class Upload(NamedTuple):
    """A pending upload: the calls that deliver one test, and how far they got."""

    perf_event_id: str
    plan: list[dict[str, Any]]
    progress: dict[str, Any]
    base_url: str | None
    api: str | None
    attempts: int = 0


class Store:
    """The store file behind one connection, shared by this process's threads.

    Nothing is created on disk until something is written: a project whose tests record
    nothing gets no store. ``lock`` serialises the threads' use of the connection.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
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
            _check_schema(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(
                f"{self.path} is not a usable pytest-userflow store ({exc}); it was left as it is: "
                "move it away or point --userflow-store elsewhere"
            ) from None
        # A commit survives a killed process without any fsync (see the module's docstring).
        db.execute("PRAGMA synchronous = OFF")
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
                db.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock: the write lock is taken up
        front, so concurrent writers wait on the busy timeout instead of failing on a lock
        upgrade."""
        with self.lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------

    def write_test(
        self,
        record: TestRecord,
        run: RunInfo,
        upload: tuple[list[dict[str, Any]], str, str, str] | None = None,
        *,
        error: str | None = None,
    ) -> None:
        """Commit one finished test, its measurements and its upload (plan, base URL, API,
        state; *error*: why it is refused) in one transaction; the run's row comes with its
        first test."""
        with self.transaction() as db:
            if run.run_id not in self._runs:
                _insert_run(db, run)
            flow_id = self._flow_id(db, record.flow, record.description)
            event = db.execute(
                "INSERT INTO events (perf_event_id, run_id, user_flow_id, user_flow_name, nodeid,"
                " worker, device_address, session_id, status, status_message, event_ts,"
                " event_time, duration, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    record.event_ts,
                    utc_text(record.event_ts),
                    record.duration,
                    record.attempts,
                ),
            ).lastrowid
            db.executemany(
                "INSERT INTO measurement_rows (event, seq, key_name, key_type, key_units, value)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (event, i, m.key, m.type, m.units, m.value)
                    for i, m in enumerate(record.measurements)
                ],
            )
            db.executemany(
                "INSERT INTO checks (event, key_name, kind, verdict, value, low, high, baseline,"
                " change_pct, noise_pct, limit_text) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (event, c.key, c.kind, c.verdict, c.value, c.low, c.high, c.baseline,
                     c.change_pct, c.noise_pct, c.limit)
                    for c in record.checks
                ],
            )  # fmt: skip
            if upload is not None:
                plan, base_url, api, state = upload
                db.execute(
                    "INSERT INTO uploads (perf_event_id, run_id, state, base_url, api, plan,"
                    " progress, last_error, updated_ts) VALUES (?,?,?,?,?,?,?,?,?)",
                    (record.perf_event_id, run.run_id, state, base_url, api, json.dumps(plan),
                     "{}", error, time.time()),
                )  # fmt: skip
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

    def finish_run(self, run_id: str, outcome: str) -> None:
        """Note the run's end, when it recorded anything (else it has no row)."""
        if not self.exists:
            return
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ? WHERE run_id = ?",
                (time.time(), outcome, run_id),
            )

    def mark(
        self,
        perf_event_id: str,
        state: str,
        *,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
        remote_event_id: str | None = None,
    ) -> None:
        """An upload's outcome: its new state, the last error, how far it got."""
        with self.transaction() as db:
            db.execute(
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

    def save_progress(self, perf_event_id: str, progress: dict[str, Any]) -> None:
        """How far an upload got: a replay starts from there."""
        with self.transaction() as db:
            db.execute(
                "UPDATE uploads SET progress = ?, updated_ts = ? WHERE perf_event_id = ?",
                (json.dumps(progress), time.time(), perf_event_id),
            )

    # -- the uploads, for the sender and push --------------------------------------------------

    def uploads(self, states: Sequence[str] = (PENDING,)) -> list[Upload]:
        """The uploads in *states*, in the order their tests were recorded."""
        if not self.exists:
            return []
        marks = ",".join("?" * len(states))
        with self.lock:
            rows = self.db.execute(
                "SELECT perf_event_id, plan, progress, base_url, api, attempts FROM uploads"
                f" WHERE state IN ({marks}) ORDER BY rowid",
                list(states),
            ).fetchall()
        return [
            Upload(r[0], json.loads(r[1]), json.loads(r[2] or "{}"), r[3], r[4], r[5]) for r in rows
        ]

    def count_uploads(self, states: Sequence[str] = (PENDING,)) -> int:
        if not self.exists:
            return 0
        marks = ",".join("?" * len(states))
        with self.lock:
            sql = f"SELECT COUNT(*) FROM uploads WHERE state IN ({marks})"
            return int(self.db.execute(sql, list(states)).fetchone()[0])


def _insert_run(db: sqlite3.Connection, run: RunInfo) -> None:
    db.execute(
        "INSERT OR IGNORE INTO runs (run_id, started_at, host, git_commit, git_branch,"
        " ci_build_id, backend) VALUES (?,?,?,?,?,?,?)",
        (run.run_id, run.started_at, run.host, run.git_commit, run.git_branch, run.ci_build_id,
         run.backend),
    )  # fmt: skip


def _check_schema(db: sqlite3.Connection) -> None:
    """The file must be a store of this schema (made by ``Store._create``)."""
    db.execute(f"PRAGMA busy_timeout = {30_000}")
    row = db.execute(
        "SELECT (SELECT user_version FROM pragma_user_version),"
        " (SELECT group_concat(name, ', ') FROM sqlite_master WHERE type = 'table')"
    ).fetchone()
    version, tables = int(row[0]), row[1] or ""
    if version == SCHEMA_VERSION:
        return
    if version == 1:  # 0.1.0's stores: attempts and checks came with version 2
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == 1:  # no other process did it
                db.execute("ALTER TABLE events ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
                for statement in _CHECKS:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return
    if version != 0:
        raise sqlite3.DatabaseError(
            f"schema version {version}, where this version of pytest-userflow writes "
            f"{SCHEMA_VERSION}"
        )
    if tables:
        raise sqlite3.DatabaseError(f"it holds other tables ({tables})")
    raise sqlite3.DatabaseError("it is empty: a store is never made empty, so it was cut short")
