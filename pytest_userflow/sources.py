"""What ``pytest-userflow`` reads: the local history, or HeadSpin (``--source headspin``).

Each command is written once over a :class:`Source`: the few reads the commands need. Where a
source cannot answer (HeadSpin knows no runs), it says so. No pytest import.

>>> with LocalSource(".userflow/userflow.db") as source:        # doctest: +SKIP
...     rows = list(source.measurements(Query("Login", keys=["Login Time"])))

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from .model import (
    Accept,
    UserflowError,
    headspin_token,
    headspin_url,
    parse_time,
)
from .options import TOKEN_ENV
from .storage import Query, is_url, open_store, sqlite_path

if TYPE_CHECKING:
    from .client import HeadSpinClient
    from .storage import History

#: What the HTML report is made of: measurement rows (in time order), their runs (oldest
#: first) and the gate's checks of those runs.
PageRows = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def local_page_rows(
    history: History, *, flow: str | None, last: int, branch: str | None = None
) -> PageRows:
    """The report's rows, runs and checks of the newest *last* runs (0: all) of *flow* (or
    every flow), of *branch* (None: every branch), from the history."""
    return page_rows_of(history, history.runs(limit=last or None, branch=branch), flow)


def page_rows_of(history: History, runs: list[dict[str, Any]], flow: str | None) -> PageRows:
    """The report's rows, runs and checks of *runs* (newest first) of *flow* (or every flow)."""
    shown = runs[::-1]  # oldest first
    ids = [r["run_id"] for r in shown]
    every = Query(flow, statuses=("passed", "failed", "excluded"), run_ids=ids)
    rows = history.measurements(every) if ids else iter(())
    return list(rows), shown, history.checks(ids)


class SourceError(UserflowError):
    """A source cannot answer: no store, no token, no such flow, or no runs on HeadSpin."""


#: The local store's measurement columns beyond the API's: the status sent and the test's own
#: outcome (they differ where only the gate failed it), which test, run and device.
LOCAL_COLUMNS = ("status", "outcome", "nodeid", "run_id", "worker", "device_address")


class Source(Protocol):
    """The reads the commands make, from the local history or from HeadSpin."""

    #: The columns ``flows`` lists after the API's flow fields.
    flow_columns: tuple[str, ...]
    #: The measurement columns after the API's (csv and json), and the table's last columns.
    measurement_columns: tuple[str, ...]
    table_columns: tuple[str, ...]

    def flows(self) -> list[dict[str, Any]]: ...

    def measurements(self, query: Query) -> Iterator[dict[str, Any]]:
        """The API's measurement listing, in time order; the query's *run_ids* are run id
        prefixes (the local store's)."""
        ...

    def runs(
        self, limit: int | None = None, *, needed: str | None = None, branch: str | None = None
    ) -> list[dict[str, Any]]:
        """The runs, newest first, of *branch* when given. A source that knows none gives
        none; or, when *needed* says what for, raises SourceError saying so."""
        ...

    def baseline_branch(self, given: str | None) -> str | None:
        """The branch whose runs the commands read by default: *given* (the setting, else a
        pull request's base), else ``main``, else ``master`` where the history has runs of
        it; None: every branch's (a source that knows no branches)."""
        ...

    def match_runs(self, prefixes: Iterable[str]) -> list[str]:
        """The run id each prefix starts."""
        ...

    def run_tests(self) -> dict[str, set[str]]:
        """The node ids of the tests each run recorded."""
        ...

    def store_runs(self, limit: int | None) -> list[dict[str, Any]]:
        """The local store's runs, newest first, as ``pytest-userflow runs`` lists them
        (HeadSpin has none: it says so, and lists the local store's)."""
        ...

    def page_rows(self, flow: str | None, last: int, branch: str | None = None) -> PageRows:
        """The report's rows (each with its status), runs and checks: the newest *last* runs
        (of *branch*) or events (0: all) of *flow* (or every flow)."""
        ...

    def accepts(self) -> list[Accept]:
        """The levels said to be intended (``pytest-userflow accept``), in force: the local
        history's (HeadSpin keeps none)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


def open_existing(location: str) -> History:
    """The history at *location*: a SQLite file, which must exist, or a PostgreSQL
    database, which must answer."""
    if not is_url(location) and not sqlite_path(location).exists():
        raise SourceError(
            f"no store at {location}: run pytest with pytest-userflow first, or pass --store"
        )
    store = open_store(location)
    store.check()
    return store


def api_token(given: str | None) -> str:
    """The HeadSpin API token (``--headspin-token``, else the environment), which must be set."""
    token = headspin_token(given)
    if not token:
        raise SourceError(f"HeadSpin needs an API token: set {TOKEN_ENV} or pass --headspin-token")
    return token


class LocalSource:
    """The local history, opened at its first read."""

    flow_columns: tuple[str, ...] = ("tests", "measurements")
    measurement_columns: tuple[str, ...] = LOCAL_COLUMNS
    table_columns: tuple[str, ...] = ("status", "nodeid", "device_address", "run_id")

    def __init__(self, location: str) -> None:
        self.location = location
        self._history: History | None = None

    @property
    def history(self) -> History:
        if self._history is None:
            self._history = open_existing(self.location)
        return self._history

    def flows(self) -> list[dict[str, Any]]:
        return self.history.flows()

    def measurements(self, query: Query) -> Iterator[dict[str, Any]]:
        history = self.history
        return history.measurements(replace(query, run_ids=history.match_runs(query.run_ids)))

    def runs(
        self, limit: int | None = None, *, needed: str | None = None, branch: str | None = None
    ) -> list[dict[str, Any]]:
        return self.history.runs(limit=limit, branch=branch)

    def baseline_branch(self, given: str | None) -> str | None:
        from .gate import baseline_branch

        return baseline_branch(self.history, given)

    def match_runs(self, prefixes: Iterable[str]) -> list[str]:
        return self.history.match_runs(prefixes)

    def run_tests(self) -> dict[str, set[str]]:
        return self.history.run_tests()

    def store_runs(self, limit: int | None) -> list[dict[str, Any]]:
        return self.history.runs(limit=limit)

    def page_rows(self, flow: str | None, last: int, branch: str | None = None) -> PageRows:
        return local_page_rows(self.history, flow=flow, last=last, branch=branch)

    def accepts(self) -> list[Accept]:
        return self.history.accepts()

    def close(self) -> None:
        if self._history is not None:
            self._history.close()

    def __enter__(self) -> LocalSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeadSpinSource:
    """HeadSpin's API, through one client made at the first request. HeadSpin's rows know
    flows, sessions and keys: no runs, tests or devices, and no status of their own."""

    flow_columns: tuple[str, ...] = ()
    measurement_columns: tuple[str, ...] = ()
    table_columns: tuple[str, ...] = ("session_id",)

    def __init__(self, token: str | None, url: str | None, store: str) -> None:
        self._token = token
        self._url = url
        self.store = store  # the local store, whose runs ``pytest-userflow runs`` lists
        self._client: HeadSpinClient | None = None

    @property
    def client(self) -> HeadSpinClient:
        if self._client is None:
            from .client import HeadSpinClient

            token = api_token(self._token)
            self._client = HeadSpinClient(token, base_url=headspin_url(self._url))
        return self._client

    def flows(self) -> list[dict[str, Any]]:
        return self.client.list_user_flows()

    def flow_id(self, flow: str | None) -> str:
        """The id of the flow *flow* names: its id, or its name."""
        if not flow:
            raise SourceError(
                "--flow (the user flow's name or id) is required with --source headspin"
            )
        flows = self.client.list_user_flows()
        for candidate in flows:
            if flow in (candidate.get("user_flow_id"), candidate.get("name")):
                return str(candidate["user_flow_id"])
        raise SourceError(
            f"HeadSpin has no user flow named or with id {flow!r} ({len(flows)} flows)"
        )

    def measurements(self, query: Query) -> Iterator[dict[str, Any]]:
        if query.run_ids:
            raise SourceError("runs are known only to the local store: use times with HeadSpin")
        client = self.client
        flow_id = self.flow_id(query.flow)
        filters: dict[str, Any] = {
            "session_ids": query.session_ids,
            "keys": query.keys,
            "statuses": query.statuses or query.outcomes,  # its only status is the outcome
            "start_time": query.start_time,
            "end_time": query.end_time,
        }
        if query.limit is None and query.offset is None:  # every page
            return client.iter_measurements(flow_id, **filters)
        return iter(
            client.get_measurements(flow_id, limit=query.limit, offset=query.offset, **filters)
        )

    def runs(
        self, limit: int | None = None, *, needed: str | None = None, branch: str | None = None
    ) -> list[dict[str, Any]]:
        if needed:
            raise SourceError(f"HeadSpin knows no runs: {needed}")
        if branch is not None:
            raise SourceError("HeadSpin knows no branches: --branch reads the local store")
        return []

    def baseline_branch(self, given: str | None) -> str | None:
        return None

    def match_runs(self, prefixes: Iterable[str]) -> list[str]:
        if list(prefixes):
            raise SourceError("runs are known only to the local store: use times with HeadSpin")
        return []

    def run_tests(self) -> dict[str, set[str]]:
        return {}

    def store_runs(self, limit: int | None) -> list[dict[str, Any]]:
        print(f"HeadSpin has no runs: these are the local store's ({self.store})", file=sys.stderr)
        with LocalSource(self.store) as local:
            return local.runs(limit)

    def page_rows(self, flow: str | None, last: int, branch: str | None = None) -> PageRows:
        self.runs(branch=branch)  # it knows none
        # HeadSpin's rows carry no status: one listing for each; each event is one point.
        tagged = [
            {**row, "status": status.capitalize()}
            for status in ("passed", "failed")
            for row in self.measurements(Query(flow, statuses=[status]))
        ]
        rows = sorted(tagged, key=lambda r: parse_time(r["event_time"]))
        if last:  # the newest events
            keep = set(list(dict.fromkeys(r["perf_event_id"] for r in rows))[-last:])
            rows = [r for r in rows if r["perf_event_id"] in keep]
        return rows, [], []

    def accepts(self) -> list[Accept]:
        return []

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> HeadSpinSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
