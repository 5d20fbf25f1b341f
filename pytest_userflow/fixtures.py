"""What the fixtures give tests: ``record_measurement``, ``userflow`` and ``userflow_session``.

The fixtures themselves are declared in ``plugin``, which imports this module when a test
first asks for one. Each object records into one :class:`~pytest_userflow.model.TestRecord`,
and refuses once its test has ended.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from .model import (
    Measurement,
    MeasurementError,
    TestRecord,
    UserflowWarning,
    check_session_id,
    check_text,
    normalize_status,
    truncate_message,
)


class Timer:
    """The result of ``record_measurement.timer``: ``elapsed`` is set when the block ends."""

    def __init__(self) -> None:
        self.elapsed: float | None = None


def _open(record: TestRecord, where: str) -> TestRecord:
    """*record*, as long as its test has not ended: a value recorded later would be lost."""
    __tracebackhide__ = True
    if record.ended:
        raise MeasurementError(
            f"{where} was called after {record.nodeid} ended: a fixture's value belongs to "
            "its own test (ask for record_measurement in the test that records, and do not "
            "keep it for a later test or a thread that outlives it)"
        )
    return record


class RecordMeasurement:
    """``record_measurement(key, value, *, type=None, units=None, budget=None)`` records one
    measurement for the current test.

    >>> def test_login(record_measurement):                       # doctest: +SKIP
    ...     record_measurement("Login Time", 1.8, units="seconds")
    ...     with record_measurement.timer("Search Time"):
    ...         app.search("shoes")
    """

    def __init__(self, record: TestRecord) -> None:
        self._record = record
        self._where = f"record_measurement() of {record.nodeid}"

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
        record = self._record
        if record.ended:
            _open(record, self._where)
        m = Measurement.create(key, value, type=type, units=units, where=self._where)
        if budget is not None:
            self._budget(m, budget, self._where, stacklevel=3)
        record.measurements.append(m)

    def _budget(self, m: Measurement, budget: object, where: str, stacklevel: int) -> None:
        """``budget=MAX``: the test fails when the value is above MAX. It wins over a
        ``userflow_budget`` marker's max for the key (it is the nearer of the two), whose
        min and direction still hold; when the two maxima differ, a warning says so."""
        __tracebackhide__ = True
        if isinstance(m.value, str):
            raise MeasurementError(
                f"budget= needs a numeric value, {m.key!r} is {m.value!r} in {where}"
            )
        from .gate import Budget

        marked = self._record.budgets.get(m.key)  # flow "*": from an earlier budget=
        new = Budget.create(
            "*",
            m.key,
            max=budget,
            min=marked.min if marked else None,
            where=where,
            direction=marked.direction if marked else None,
        )
        if marked and marked.flow != "*" and marked.max is not None and marked.max != new.max:
            warnings.warn(
                UserflowWarning(
                    f"{where}: budget={new.max:g} for {m.key!r} wins over the userflow_budget "
                    f"marker's max={marked.max:g} (the call's budget is the nearer one)"
                ),
                stacklevel=stacklevel,
            )
        self._record.budgets[m.key] = new

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
        checked = Measurement.create(key, 0.0, type=type, units=units, where=where)  # first
        if budget is not None:
            self._budget(checked, budget, where, stacklevel=4)
        result = Timer()
        start = time.perf_counter()
        yield result
        result.elapsed = time.perf_counter() - start
        _open(self._record, where).measurements.append(
            Measurement.create(key, result.elapsed, type=type, units=units, where=where)
        )


class SessionRecorder(RecordMeasurement):
    """``userflow_session``: ``userflow_session(key, value, *, type=None, units=None)`` and
    ``.timer(key)`` record values that belong to the whole run (install time, app size).

    They are one record, written at the end of the session with the run's status: Passed,
    or Failed when a test failed. ``.name`` is its flow (``--userflow``'s, else
    "pytest session"); set it to choose another. Under xdist each worker keeps its own, with
    its device. Budgets belong to tests: ``budget=`` is refused here.
    """

    @property
    def name(self) -> str:
        return self._record.flow

    @name.setter
    def name(self, value: object) -> None:
        __tracebackhide__ = True
        _open(self._record, "userflow_session.name")
        self._record.marked_flow = check_text("the flow name", value, "userflow_session.name")

    def _budget(self, m: Measurement, budget: object, where: str, stacklevel: int) -> None:
        __tracebackhide__ = True
        raise MeasurementError(
            f"budget= belongs to a test's record_measurement, not to {where}: give the key a "
            "userflow_budgets ini line or check the value yourself"
        )


class UserflowHandle:
    """The current test's user flow: its name, device, session and status override."""

    def __init__(self, record: TestRecord) -> None:
        self._record = record

    @property
    def name(self) -> str:
        return self._record.flow

    @property
    def device(self) -> str | None:
        return self._record.device_address

    @property
    def session_id(self) -> str | None:
        return self._record.session_id

    def attach_session(self, session_id: object) -> str:
        """Attach a HeadSpin capture session (Appium's ``driver.session_id``) to this test."""
        __tracebackhide__ = True
        where = f"userflow.attach_session() of {self._record.nodeid}"
        checked = check_session_id(session_id, where=where)
        _open(self._record, where).session_id = checked
        return checked

    def set_status(self, status: str, message: str | None = None) -> None:
        """Decide the status sent for this test ("Passed", "Failed" or "Excluded")."""
        __tracebackhide__ = True
        where = f"userflow.set_status() of {self._record.nodeid}"
        text = check_text("message", message, where, required=False, limit=10_000)
        _open(self._record, where).status_override = (
            normalize_status(status, where=where),
            truncate_message(text),
        )

    def __repr__(self) -> str:
        return f"<userflow {self.name!r} device={self.device!r} session={self.session_id!r}>"
