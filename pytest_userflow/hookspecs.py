"""The plugin's own hooks, added with ``pytest_addhooks``.

Implement them in a ``conftest.py`` or a plugin::

    def pytest_userflow_status(item, reports):
        if item.get_closest_marker("flaky_network"):
            return ("Excluded", "network flake, not a performance result")

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .gate import Baseline
    from .model import Measurement, TestRecord


@pytest.hookspec(firstresult=True)
def pytest_userflow_status(item: pytest.Item, reports: list[pytest.TestReport]) -> Any:
    """Decide the status of *item* from its setup/call/teardown *reports*.

    Return ``(status, message)`` with status one of "Passed", "Failed", "Excluded"
    (message may be None), or None to leave it to the built-in rules. The first
    non-None answer wins; ``userflow.set_status`` in the test wins over any hook.
    """


@pytest.hookspec
def pytest_userflow_measurements(item: pytest.Item, measurements: list[Measurement]) -> None:
    """Add, change or remove measurements of *item* before they are stored and sent.

    *measurements* is the list itself: append ``Measurement.create(...)`` objects or
    remove items in place.
    """


@pytest.hookspec(firstresult=True)
def pytest_userflow_verdict(item: pytest.Item, measurement: Measurement, baseline: Baseline) -> Any:
    """Decide whether *measurement* regressed against *baseline* (the regression gate).

    ``baseline.values`` are the last passed values (newest first), ``baseline.median`` their
    median. Return True for a regression, False for none, or None for the built-in rule
    (worse than the median by more than ``--userflow-regression`` percent).
    """


@pytest.hookspec
def pytest_userflow_flushed(item: pytest.Item, result: TestRecord) -> None:
    """Called at *item*'s teardown once its record was stored, queued for upload or spooled.

    *result* is the test's record: ``nodeid``, ``flow``, ``status``, ``status_message``,
    ``measurements``, ``perf_event_id`` and
    ``destination``, one of "local", "queued", "local-only", "dry-run", "off", or
    "unstored" when the store could not take it.
    """
