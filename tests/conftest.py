"""Shared fixtures: pytester for plugin runs, and the stand-in HeadSpin server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# In-process pytester runs drop the modules they imported when they end. The plugin imports
# requests only for HeadSpin, so the first such run would import it and the next run a second
# copy, and the first copy's classes no longer match the second's ("You can only merge into
# CookieJar"): whether a test passed depended on which test ran first. Imported here, it is
# one module for the whole session.
import requests  # noqa: F401

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
