"""The fixtures tests use: ``record_measurement``, ``userflow`` and ``userflow_device``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from .measurement import (
    INT_MAX,
    INT_MIN,
    Measurement,
    MeasurementError,
    Row,
    check_session_id,
    normalize_status,
    truncate_message,
)
from .recorder import TestRecord

DEVICE_KEY = pytest.StashKey["str | None"]()


class Timer:
    """The result of ``record_measurement.timer``: ``elapsed`` is set when the block ends."""

    __slots__ = ("elapsed",)

    def __init__(self) -> None:
        self.elapsed: float | None = None


class RecordMeasurement:
    """``record_measurement(key, value, *, type=None, units=None)`` buffers one measurement.

    >>> def test_login(record_measurement):                       # doctest: +SKIP
    ...     record_measurement("Login Time", 1.8, units="seconds")
    ...     with record_measurement.timer("Search Time"):
    ...         app.search("shoes")
    """

    __slots__ = ("_gating", "_record")  # one a test, without a __dict__

    def __init__(self, record: TestRecord, gating: Callable[[], None]) -> None:
        self._record = record
        self._gating = gating  # hooks the gate in: a budget= may fail the test

    def __call__(
        self,
        key: str,
        value: int | float | str,
        *,
        type: str | None = None,
        units: str | None = None,
        budget: float | None = None,
    ) -> None:
        __tracebackhide__ = True
        # The common measurement, checked here with a few class tests and no message built
        # (a call less for each of a test's values): exactly str, int and float. Anything
        # else (subclasses, bool, numpy, Decimal, a wrong value) goes to Measurement.create,
        # which decides and says what is wrong.
        kind = value.__class__
        if (
            key.__class__ is str
            and (
                (kind is float and value - value == 0.0)  # type: ignore[operator]  # finite
                or (kind is int and INT_MIN <= value <= INT_MAX)  # type: ignore[operator]
                or kind is str
            )
            and (units is None or units.__class__ is str)
            and (type is None or type.__class__ is str)
            and key
            and not key.isspace()
        ):
            row: Row = (key, value, type, units)
        else:
            row = Measurement.create(key, value, type=type, units=units, where=self._where).row()
        if budget is not None:
            self._budget(key, value, budget, self._where)
        self._record.measurements.append(row)

    @property
    def _where(self) -> str:
        return f"record_measurement() of {self._record.nodeid}"

    def _budget(self, key: str, value: object, budget: object, where: str) -> None:
        """``budget=MAX``: the test fails when the value is above MAX."""
        __tracebackhide__ = True
        if isinstance(value, str):
            raise MeasurementError(
                f"budget= needs a numeric value, {key!r} is {value!r} in {where}"
            )
        from .budgets import Budget  # loaded where budgets are used

        self._record.budgets[key] = Budget.create("*", key, max=budget, where=where)
        self._gating()

    @contextmanager
    def timer(
        self,
        key: str,
        *,
        type: str | None = None,
        units: str = "seconds",
        budget: float | None = None,
    ) -> Iterator[Timer]:
        """Record the wall time the block took (perf_counter), in seconds by default.

        Nothing is recorded when the block raises: a half-done operation is no timing.
        """
        __tracebackhide__ = True
        where = f"record_measurement.timer() of {self._record.nodeid}"
        Measurement.create(key, 0, type=type, units=units, where=where)  # check before timing
        if budget is not None:
            self._budget(key, 0, budget, where)
        result = Timer()
        start = time.perf_counter()
        yield result
        result.elapsed = time.perf_counter() - start
        self._record.measurements.append((key, result.elapsed, type, units))


class UserflowHandle:
    """The current test's user flow: its name, device, session and status override."""

    __slots__ = ("_record",)

    def __init__(self, record: TestRecord) -> None:
        self._record = record

    @property
    def name(self) -> str:
        return self._record.flow or default_flow_name(self._record.nodeid)

    @property
    def device(self) -> str | None:
        return self._record.device

    @property
    def session_id(self) -> str | None:
        return self._record.session_id

    def attach_session(self, session_id: object) -> str:
        """Attach a HeadSpin capture session (Appium's ``driver.session_id``) to this test."""
        __tracebackhide__ = True
        self._record.session_id = check_session_id(
            session_id, where=f"userflow.attach_session() of {self._record.nodeid}"
        )
        return self._record.session_id

    def set_status(self, status: str, message: str | None = None) -> None:
        """Decide the status sent for this test ("Passed", "Failed" or "Excluded")."""
        __tracebackhide__ = True
        where = f"userflow.set_status() of {self._record.nodeid}"
        if message is not None and not isinstance(message, str):
            raise MeasurementError(
                f"message must be a str or None, got {type(message).__name__} in {where}"
            )
        self._record.status_override = (
            normalize_status(status, where=where),
            truncate_message(message),
        )

    def __repr__(self) -> str:
        return f"<userflow {self.name!r} device={self.device!r} session={self.session_id!r}>"


def default_flow_name(nodeid: str) -> str:
    """A test with no marker and no --userflow records into a flow named after it
    (parametrized cases share it)."""
    return nodeid.split("[", 1)[0]


class Fixtures:
    """The fixtures, as methods of an object the plugin registers.

    Why not plain functions taking ``request``: pytest builds a new fixture definition,
    with a signature inspection, each time a fixture asks for ``request``, and that showed
    in the per-test cost. The plugin sets ``current`` when each test's setup starts.
    """

    def __init__(self, device: str | None, gating: Callable[[], None]) -> None:
        self.device = device
        self.gating = gating  # called when a test sets a budget (budget=)
        self.current: TestRecord | None = None

    def _record(self) -> TestRecord:
        if self.current is None:  # set up outside the plugin's hooks: nothing is kept
            self.current = TestRecord("<no test>", None)
        self.current.used = True
        return self.current

    @pytest.fixture
    def record_measurement(self) -> RecordMeasurement:
        """Record a measurement for this test: ``record_measurement(key, value, type=, units=)``."""
        return RecordMeasurement(self._record(), self.gating)

    @pytest.fixture
    def userflow(self) -> UserflowHandle:
        """This test's flow: ``.name``, ``.device``, ``.attach_session()``, ``.set_status()``."""
        return UserflowHandle(self._record())


@pytest.fixture(scope="session")
def userflow_device(request: pytest.FixtureRequest) -> str | None:
    """This worker's device (``device_id@hostname``) or None, to build a driver once.

    A module-level function: pytest deprecates session-scoped fixtures that are methods.
    """
    return request.config.stash.get(DEVICE_KEY, None)
