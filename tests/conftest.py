"""Shared fixtures: pytester for plugin runs, and the stand-in HeadSpin server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

# In-process pytester runs drop the modules they imported when they end. The plugin imports
# requests only for HeadSpin, so the first such run would import it and the next run a second
# copy, and the first copy's classes no longer match the second's ("You can only merge into
# CookieJar"): whether a test passed depended on which test ran first. Imported here, it is
# one module for the whole session.
import requests  # noqa: F401

# The same for the HTML report's renderer, whose native module can be loaded only once, and for
# psycopg, whose native part keeps raising the first copy's exception classes: a second copy's
# ``except psycopg.Error`` would not catch them.
with contextlib.suppress(ImportError):
    import vl_convert  # noqa: F401
with contextlib.suppress(ImportError):
    import psycopg  # noqa: F401

# And the plugin's modules a recording run loads on first use (the command's import loads the
# rest): imported once here, as in a user's one run, not again in each in-process run.
import pytest_userflow.client
import pytest_userflow.fixtures
import pytest_userflow.recorder
import pytest_userflow.storage.sqlite
from pytest_userflow import cli
from pytest_userflow.storage import Query

pytest_plugins = ["pytester"]


def run_cli(
    store: str | Path, *args: str, own_process: bool = False
) -> subprocess.CompletedProcess[str]:
    """``pytest-userflow --store STORE ARGS...``: the command's ``main``, run in this process for
    speed, with its output and exit status. *own_process*: in a process of its own, as a second
    program beside a run, or for ``plot``, whose numpy loads only once in a process (an
    in-process pytester run may have loaded and dropped it)."""
    argv = ["--store", str(store), *args]
    if own_process:
        command = [sys.executable, "-m", "pytest_userflow", *argv]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return subprocess.CompletedProcess(
        ["pytest-userflow", *argv], code, out.getvalue(), err.getvalue()
    )


@pytest.fixture(autouse=True)
def outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the branch of a CI that runs this suite: a pull request's base there
    would make every run's baseline that branch's (empty) history."""
    from pytest_userflow.runinfo import CI_BASE_VARS, CI_BRANCH_VARS

    for name in (*CI_BRANCH_VARS, *CI_BASE_VARS, "USERFLOW_BASELINE_BRANCH"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store_path(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".userflow" / "userflow.db"


#: Every row of the history: ``History.measurements`` lists passed and failed tests only (the
#: API's default) unless asked for every status.
EVERY_ROW = Query(statuses=("passed", "failed", "excluded"))


@pytest.fixture
def history() -> Iterator[Callable[[Path], Any]]:
    """Open the history a run wrote, as ``open_store`` does, closed when the test ends: tests
    read it through the ``History`` interface (and its outbox), not its tables, so that they
    hold for every implementation.

    >>> history(store_path).tests()   # every test of every run, with its measurements
    """
    from pytest_userflow.storage import open_store

    opened: dict[Path, Any] = {}

    def open_history(location: Path) -> Any:
        if location not in opened:
            opened[location] = open_store(location)
        return opened[location]

    yield open_history
    for store in opened.values():
        store.close()


def pick(rows: Iterable[Mapping[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    """The fields *names* of each row, as a tuple a row: ``pick(tests, "nodeid", "status")``."""
    return [tuple(row[name] for name in names) for row in rows]


def upload_states(outbox: Any) -> dict[str, int]:
    """How many uploads the outbox holds in each state, leaving out the states it has none in."""
    from pytest_userflow.storage import FAILED, LOCAL_ONLY, PENDING, SENT

    counts = {s: outbox.count_uploads([s]) for s in (PENDING, SENT, FAILED, LOCAL_ONLY)}
    return {state: n for state, n in counts.items() if n}


@pytest.fixture
def read_report(pytester: pytest.Pytester):
    def read(name: str = "report.json") -> dict[str, Any]:
        return json.loads((pytester.path / name).read_text())

    return read


TOKEN = "hs-test-token-0123456789abcdef"


@pytest.fixture
def headspin():
    """A strict stand-in HeadSpin server on a free loopback port."""
    from headspin_server import StandInServer

    with StandInServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def hs_env(headspin, monkeypatch: pytest.MonkeyPatch):
    """Point pytester runs (inline and subprocess) at the stand-in, token in the environment."""
    monkeypatch.setenv("HEADSPIN_API_TOKEN", TOKEN)
    monkeypatch.setenv("HEADSPIN_API_URL", headspin.url)
    return headspin


#: The client's module-wide defaults, which a pytester conftest may shorten for its own run.
CLIENT_DEFAULTS = ("DEFAULT_TIMEOUT", "DEFAULT_RETRIES", "DEFAULT_BACKOFF")


@pytest.fixture(autouse=True)
def _client_defaults_unchanged() -> Iterator[None]:
    """Fail a test that leaves the client's defaults changed: in-process pytester runs share
    this interpreter, so every later test's client would get them. They are put back first."""
    client = pytest_userflow.client
    before = {name: getattr(client, name) for name in CLIENT_DEFAULTS}
    yield
    changed = {
        name: (value, getattr(client, name))
        for name, value in before.items()
        if getattr(client, name) != value
    }
    if changed:
        for name, value in before.items():
            setattr(client, name, value)
        pytest.fail(
            f"this test left pytest_userflow.client changed, (before, after): {changed}; set "
            "them in the inner run's pytest_configure and undo them with config.add_cleanup",
            pytrace=False,
        )


@pytest.fixture
def git_calls(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that notes its arguments in the returned file (made at its first
    call) and fails: a run that records nothing must never call it."""
    bin_dir = pytester.path / "bin"
    bin_dir.mkdir()
    calls = pytester.path / "git-calls"
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


#: The PostgreSQL server the tests use (trust authentication); each test gets a schema of its
#: own in it, dropped after.
TEST_PG = os.environ.get("USERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin() -> Any:
    """A connection to the test server, or a skip saying why there is none."""
    psycopg = pytest.importorskip(
        "psycopg", reason="psycopg is not installed (the [postgres] extra)"
    )
    try:
        return psycopg.connect(TEST_PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server answers at {TEST_PG} ({' '.join(str(exc).split())})")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL schema of this test's own (its search path)."""
    admin = _pg_admin()
    schema = f"userflow_test_{uuid.uuid4().hex[:16]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    split = urllib.parse.urlsplit(TEST_PG)
    query = urllib.parse.urlencode({"options": f"-csearch_path={schema}"})
    joined = f"{split.query}&{query}" if split.query else query
    try:
        yield urllib.parse.urlunsplit(split._replace(query=joined))
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh history's location: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return str(tmp_path / "history.db")
    return str(request.getfixturevalue("pg_url"))
