"""The per-test buffer, the outcome-to-status rules, and the hand-over to a sink.

Reports are read by their attributes (``when``, ``outcome``, ``longrepr``,
``wasxfail``), so this module needs no pytest import and is easy to test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from .measurement import Measurement, Row, dedupe, truncate_message
from .sinks import FlushOutcome, Sink
from .store import EventRecord, new_event_id


class ReportLike(Protocol):
    when: str
    outcome: str
    longrepr: Any


class TestRecord:
    """What one test recorded; lives on ``item.stash`` from setup to teardown."""

    __test__ = False  # not a test class, whatever pytest's collection thinks of the name
    __slots__ = (
        "budgets",
        "checked",
        "description",
        "device",
        "flow",
        "measurements",
        "nodeid",
        "reports",
        "session_id",
        "started",
        "status_override",
        "used",
    )

    def __init__(self, nodeid: str, flow: str | None, device: str | None = None) -> None:
        self.nodeid = nodeid
        self.flow = flow
        self.description: str | None = None
        self.device = device
        self.session_id: str | None = None
        self.status_override: tuple[str, str | None] | None = None
        self.measurements: list[Row] = []  # as recorded: see measurement.Row
        self.used = False  # the test asked for record_measurement or userflow
        self.started = time.time()
        self.reports: dict[str, Any] = {}
        self.budgets: dict[str, Any] = {}  # key -> Budget from budget=
        self.checked = 0  # how many measurements were checked against budgets and baselines

    @property
    def wanted(self) -> bool:
        """Whether this test goes to a flow: it has a flow, or it recorded something."""
        return self.flow is not None or self.used or bool(self.measurements)


def _crash_line(report: Any) -> str:
    gate = getattr(report, "userflow_message", None)  # a budget or regression: said plainly
    if gate:
        return str(gate)
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message).strip().splitlines()[0] if str(crash.message).strip() else ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    text = str(longrepr or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _skip_reason(report: Any) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason
    return _crash_line(report) or None


def status_from_reports(reports: Sequence[Any]) -> tuple[str, str | None]:
    """The DESIGN's rules: a failure anywhere is Failed; skip and xfail are Excluded;
    xpass (non-strict) and a passing call are Passed."""
    for report in reports:
        if report.outcome == "failed":
            line = _crash_line(report)
            prefix = "" if report.when == "call" else f"error in {report.when}: "
            return "Failed", truncate_message(prefix + line if line else prefix + "failed")
    for report in reports:
        if report.outcome == "skipped":
            if getattr(report, "wasxfail", None) is not None:
                reason = str(report.wasxfail or "").removeprefix("reason: ")
                return "Excluded", truncate_message("xfail" + (f": {reason}" if reason else ""))
            skip_reason = _skip_reason(report)
            text = "skipped" + (f": {skip_reason}" if skip_reason else "")
            return "Excluded", truncate_message(text)
    return "Passed", None


class FlushResult(NamedTuple):
    """What ``pytest_userflow_flushed`` receives: where one test's data went."""

    nodeid: str
    flow: str
    status: str
    status_message: str | None
    destination: str
    perf_event_id: str
    measurements: list[Measurement]
    plan: list[dict[str, Any]] | None = None


class Recorder:
    """Turns a finished TestRecord into an event and hands it to the sink."""

    def __init__(self, sink: Sink, *, run_id: str, worker: str | None) -> None:
        self.sink = sink
        self.run_id = run_id
        self.worker = worker
        #: None when the sink needs an EventRecord for each test (to send it)
        self.write_event = sink.write_event

    def head(
        self, record: TestRecord, status: str, message: str | None, flow: str
    ) -> tuple[Any, ...]:
        """The test's fields, all but its measurements, in the order a journal keeps them."""
        now = time.time()
        return (
            self.run_id,
            flow,
            record.nodeid,
            status,
            truncate_message(message),
            record.description,
            self.worker,
            record.device,
            record.session_id,
            now,
            now - record.started,
            new_event_id(),
        )

    def keep(self, record: TestRecord, status: str, message: str | None, flow: str) -> None:
        """Hand the test to the sink the quick way (``write_event``): no EventRecord is made
        (what a test pays at its teardown)."""
        assert self.write_event is not None
        self.write_event(self.head(record, status, message, flow), record.measurements)

    def event_for(
        self, record: TestRecord, status: str, message: str | None, flow: str
    ) -> EventRecord:
        return EventRecord.from_head(
            self.head(record, status, message, flow),
            dedupe(list(map(Measurement._make, record.measurements))),
        )

    def flush(self, event: EventRecord) -> FlushOutcome:
        """Hand *event* (its measurements all checked) to the sink."""
        return self.sink.submit(event)


def flush_result(event: EventRecord, outcome: FlushOutcome) -> FlushResult:
    return FlushResult(
        event.nodeid,
        event.flow,
        event.status,
        event.status_message,
        outcome.destination,
        event.perf_event_id,
        event.measurements,
        outcome.plan,
    )
