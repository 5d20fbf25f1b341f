"""Shared fixtures: pytester for plugin runs, and the stand-in HeadSpin server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# In-process pytester runs drop the modules they imported when they end. The plugin imports
# requests only for HeadSpin, so the first such run would import it and the next run a second
# copy, and the first copy's classes no longer match the second's ("You can only merge into
# CookieJar"): whether a test passed depended on which test ran first. Imported here, it is
# one module for the whole session.
import requests  # noqa: F401

import pytest_userflow.client

pytest_plugins = ["pytester"]


def store_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the store a pytester run wrote, with plain sqlite3 (not our own code)."""
    db = sqlite3.connect(str(path))
    try:
        return list(db.execute(sql, args))
    finally:
        db.close()


def run_cli(store: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``pytest-userflow --store STORE ARGS...`` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_userflow", "--store", str(store), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture
def store_path(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".userflow" / "userflow.db"


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
