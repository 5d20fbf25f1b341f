"""What was recorded (``History``) and what is still to deliver (``Outbox``), each behind one
small interface, opened from the store setting.

No pytest import, and no database driver here: only the implementations (``storage.sqlite``)
hold SQL or import one, and every failure of theirs reaches callers as :class:`StoreError`.

>>> history = open_store(".userflow/userflow.db")     # doctest: +SKIP
>>> history.runs(limit=5)                               # doctest: +SKIP

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..model import Accept, RunInfo, TestRecord, UserflowError

if TYPE_CHECKING:
    from .sqlite import SQLiteStore

#: The URL schemes of a PostgreSQL store.
POSTGRES_SCHEMES = ("postgresql", "postgres")

#: Upload states: waiting to be sent, delivered, refused by the destination (kept), or not
#: routable (no session and no device) and so kept only in the history.
PENDING, SENT, FAILED, LOCAL_ONLY = "pending", "sent", "failed", "local-only"
#: Seconds a sender's claim on an upload holds without a sign of its work (a dead process's
#: claim, on its own host, holds no more at once).
CLAIM_LEASE = 300.0


class StoreError(UserflowError):
    """The history or the outbox cannot be opened, read or written; the message names it.

    *damaged*: the file is known to be corrupt, so nothing more is written to it.
    """

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged


class Progress(NamedTuple):
    """How far an upload got: what the destination made for it so far. A replay goes on from
    there: a flow with an id is not made again, nor an event with one.

    *creating*: the test's device event is being made; the device's events with no status
    that existed before it (see ``upload.create_event_once``).
    """

    flow_id: str | None = None
    event_id: str | None = None
    creating: tuple[str, ...] | None = None


class Upload(NamedTuple):
    """One test still to deliver: its local event (the record, read with ``Outbox.record``),
    what orders it (its flow, session and device), where it goes, and how far it got.

    *status*: the (status, message) to send instead of the record's own (a shared session's).
    """

    perf_event_id: str
    flow: str
    session_id: str | None
    device_address: str | None
    base_url: str | None
    api: str
    status: tuple[str, str | None] | None = None
    progress: Progress = Progress()
    attempts: int = 0


class StoredCheck(NamedTuple):
    """A budget or regression the gate checked, as a history keeps it."""

    key: str
    kind: str
    verdict: str
    value: float | None
    low: float | None
    high: float | None
    baseline: float | None
    change_pct: float | None
    noise_pct: float | None
    limit: str | None


@dataclass(frozen=True)
class Stored:
    """One test as a history holds it, with its run: what copying it elsewhere needs."""

    record: TestRecord
    run: RunInfo
    finished_at: float | None = None
    run_outcome: str | None = None


@dataclass(frozen=True)
class Query:
    """The measurement listing's filters, with the API's semantics: filters combine with
    AND, the values of one filter with OR; times (ISO or UNIX) are inclusive; no status
    means passed, failed and not_set. *flow*: a name or an id; *run_ids*: the history's
    runs (HeadSpin knows none).

    *outcomes*: the tests' own outcomes (``model.OUTCOMES``), apart from the status sent: a
    test that only the gate failed is ``failed`` by status and ``passed`` by outcome, so
    ``outcomes=["passed"]`` is every test that ran as it should. HeadSpin knows only the
    status, which stands for the outcome there."""

    flow: str | None = None
    session_ids: Sequence[str] = ()
    keys: Sequence[str] = ()
    statuses: Sequence[str] = ()
    start_time: str | float | None = None
    end_time: str | float | None = None
    limit: int | None = None
    offset: int | None = None
    run_ids: Sequence[str] = ()
    outcomes: Sequence[str] = ()


class History(Protocol):
    """Every run's tests and measurements, as the gate, the summary, the CLI and the report
    read them. A history that does not exist yet reads as empty."""

    #: Where it is, as shown to users.
    location: str

    @property
    def exists(self) -> bool: ...

    def check(self) -> None:
        """Raise StoreError now if the history could not be used, without making anything."""

    def close(self) -> None: ...

    # -- a run -----------------------------------------------------------------------------------

    def add_test(self, record: TestRecord, run: RunInfo) -> bool | None:
        """Commit one finished test with its measurements and checks (the run's row with its
        first test). A history that keys tests by their event id says whether it was new."""

    def finish_run(self, run_id: str, outcome: str, *, at: float | None = None) -> None:
        """Note the run's end (*at*: when, else now), when it recorded anything."""

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
        """The newest *limit* values of passed tests of one flow and key (a baseline); of one
        test and device when *nodeid* is given; of the runs on *branch* (the runs table's
        ``git_branch``) that started no later than the run *until*, when given (a branch's
        history up to a fork point: see ``gate.lineage``). Where an accept covers the series
        (``model.newest_accept``), only values from its run's start on, and with them those
        of tests that passed on their own (outcome Passed) and were recorded before the accept
        was made: a level the gate failed becomes the baseline once it is accepted, and what
        the gate fails after that stays out."""
        ...

    # -- accepts: levels said to be intended (``pytest-userflow accept``) -------------------------

    def add_accept(self, accept: Accept) -> Accept:
        """Keep *accept*; return it with its id and its run's start (``from_started``). An
        unknown run is a StoreError."""
        ...

    def accepts(
        self, *, flow: str | None = None, key: str | None = None, undone: bool = False
    ) -> list[Accept]:
        """The accepts in force, oldest first (with those taken back, given *undone*); of one
        flow and key when both are given."""
        ...

    def undo_accept(self, accept_id: int) -> Accept:
        """Take back one accept: it is kept, with ``undone_at``; return it. An unknown id or
        one taken back already is a StoreError."""
        ...

    # -- readers ---------------------------------------------------------------------------------

    def runs(self, limit: int | None = None, *, branch: str | None = None) -> list[dict[str, Any]]:
        """The runs, newest first, with their test and measurement counts (and each run's
        ``RunInfo`` fields); of one *branch* (``git_branch``) when given."""
        ...

    def flows(self) -> list[dict[str, Any]]: ...

    def match_runs(self, prefixes: Iterable[str]) -> list[str]:
        """The run id each prefix starts; an unknown or ambiguous one is a StoreError."""
        ...

    def run_tests(self) -> dict[str, set[str]]:
        """The node ids of the tests each run recorded."""
        ...

    def tests(self, run_id: str | None = None, worker: str | None = None) -> list[dict[str, Any]]:
        """The tests of one run (or of every run, oldest first), of one process given
        *worker*, each with its status, own outcome, measurements and where its data went."""
        ...

    def checks(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The budgets and regressions the gate checked in these runs, in the order made."""
        ...

    def measurements(self, query: Query) -> Iterator[dict[str, Any]]:
        """The API's measurement listing, with the API's filters and semantics, in time
        order and, within a test, in the order its values were recorded; each row also names
        its status (as sent), its test's own outcome, run, test, worker and device."""
        ...

    def run_summary(self, run_id: str, worker: str | bool | None = False) -> dict[str, Any]:
        """One run's tests per flow and status and its keys' statistics (of one process,
        given *worker*; False: all)."""
        ...

    def records(self, perf_event_ids: Sequence[str] | None = None) -> Iterator[Stored]:
        """Every test (or those of *perf_event_ids*) as it was committed, with its checks
        and its run, in the order recorded: what a copy into another history takes."""
        ...


class TeamStore(History, Protocol):
    """A history that keys tests by their event id, which the outbox delivers to."""

    def add_tests(self, tests: Sequence[Stored]) -> int:
        """Commit *tests* in one transaction (with their runs' ends when known); how many
        were new: a test that is there already is left as it is."""
        ...


class Outbox(Protocol):
    """This machine's uploads still to deliver, and how far each got. It keeps no copy of
    a test: an upload names the test's record, which is read back to deliver it."""

    location: str

    def uploads(self, states: Sequence[str] = (PENDING,)) -> list[Upload]:
        """The uploads in *states*, in the order their tests were recorded."""
        ...

    def count_uploads(self, states: Sequence[str] = (PENDING,)) -> int: ...

    def record(self, perf_event_id: str) -> TestRecord:
        """The test an upload delivers, as it was committed."""
        ...

    def mark(
        self,
        perf_event_id: str,
        state: str,
        *,
        error: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        """An upload's outcome: its new state, the last error, how far it got."""

    def save_progress(self, perf_event_id: str, progress: Progress) -> None:
        """How far an upload got, before it is done: a replay starts from there."""

    def claim(self, perf_event_id: str, owner: str, states: Sequence[str] = (PENDING,)) -> str:
        """Take an upload for one sender before it sends: ``"mine"``, ``"done"`` (no longer
        in *states*) or ``"busy"`` (another live sender holds it). A claim ends with
        ``mark``, or ``unclaim``."""
        ...

    def progress(self, perf_event_id: str) -> Progress:
        """How far an upload got, as the outbox has it now."""
        ...

    def unclaim(self, owner: str) -> None:
        """End the claims of the sender *owner*: what it did not finish is free again."""

    def deliveries(self, states: Sequence[str] = (PENDING,)) -> list[str]:
        """The local event ids of the tests to deliver to the team store (a PostgreSQL
        history), in *states*, in the order they were recorded."""
        ...

    def count_deliveries(self, states: Sequence[str] = (PENDING,)) -> int: ...

    def mark_deliveries(
        self, perf_event_ids: Sequence[str], state: str, *, error: str | None = None
    ) -> None:
        """Team store deliveries' outcome: their new state and the last error."""

    def records(self, perf_event_ids: Sequence[str] | None = None) -> Iterator[Stored]:
        """The tests of *perf_event_ids* as they were committed (see ``History.records``)."""
        ...


def is_url(location: str | Path) -> bool:
    """A store setting that names a server rather than a file."""
    return "://" in str(location) and not str(location).startswith("sqlite://")


def shown(location: str | Path) -> str:
    """*location* as it may be printed: a URL without its password."""
    text = str(location)
    if not is_url(text):
        return text
    url = urllib.parse.urlsplit(text)
    if url.password is None:
        return text
    host = url.hostname or ""
    netloc = f"{url.username}@{host}" if url.username else host
    if url.port is not None:
        netloc += f":{url.port}"
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))


def sqlite_path(location: str | Path) -> Path:
    """The file a path or ``sqlite:///path`` names."""
    text = str(location)
    return Path(text[len("sqlite:///") :] if text.startswith("sqlite:///") else text)


def is_postgres(location: str | Path) -> bool:
    """A store setting that names a PostgreSQL database."""
    return urllib.parse.urlsplit(str(location)).scheme in POSTGRES_SCHEMES and is_url(location)


def check_location(location: str | Path) -> None:
    """Raise StoreError unless *location* names a store there is: a file, or PostgreSQL."""
    if is_url(location) and not is_postgres(location):
        raise StoreError(
            f"{shown(location)}: the userflow store is a SQLite file (a path, or "
            "sqlite:///path) or a PostgreSQL database (postgresql://user@host:5432/db)"
        )


def open_store(location: str | Path, *, in_run: bool = False) -> History:
    """The history at *location*: a SQLite file path or ``sqlite:///path`` (which is also
    this machine's outbox), or a ``postgresql://`` URL (*in_run*: a pytest run's, whose
    statements wait a bounded time for a lock). Nothing is made until something is written."""
    check_location(location)
    if is_postgres(location):
        from .postgres import PostgresStore

        return PostgresStore(str(location), in_run=in_run)
    from .sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(location))


def open_outbox(location: str | Path) -> SQLiteStore:
    """This machine's outbox (and history, with the SQLite store) at *location*: a SQLite
    file path or ``sqlite:///path``."""
    if is_url(location):
        raise StoreError(
            f"{shown(location)}: the outbox is a SQLite file on this machine (a path, or "
            "sqlite:///path)"
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(location))
