"""pytest-userflow's pytest hooks. Thin: options and wiring; the work is done elsewhere.

Roles: *in-process* (no xdist) and *worker* processes run tests and record them;
an xdist *controller* only merges what its workers hand back through ``workeroutput``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs, settings
from .fixtures import (  # noqa: F401  (userflow_device is found on the plugin module)
    DEVICE_KEY,
    Fixtures,
    default_flow_name,
    userflow_device,
)
from .journal import JournalWriter, recover
from .measurement import (
    Measurement,
    MeasurementError,
    UserflowError,
    normalize_status,
    plain_str,
)
from .recorder import Recorder, TestRecord, flush_result, status_from_reports
from .runinfo import new_run, run_from_dict
from .sinks import DryRunSink, HeadSpinSink, NullSink, Sender, Sink
from .store import EventRecord, RunInfo, Store, StoreError
from .summary import build_report, merge, process_summary, render, write_report

if TYPE_CHECKING:  # budgets.py is loaded only where budgets are used: see _gating
    from .budgets import BaselineSource, Gate

RUN_KEY = pytest.StashKey["UserflowRun"]()
MARKER = (
    "userflow(name, *, description=None): record this test into the user flow NAME "
    "(on a test, class or module; the nearest marker wins)"
)
BUDGET_MARKER = (
    "userflow_budget(key, max=None, min=None): fail the test when KEY is above max or below "
    "min (repeatable; the nearest marker for a key wins)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def _configured_devices(config: pytest.Config) -> list[str]:
    return list(config.getoption("userflow_devices") or config.getini("userflow_devices") or [])


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # Several devices and no -n: one xdist worker per device. A wrapper runs before
    # xdist's own (tryfirst) pytest_cmdline_main, which turns numprocesses into workers.
    # Workers run this hook too: they must never spawn workers of their own.
    devices = _configured_devices(config)
    if (
        len(devices) > 1
        and not hasattr(config, "workerinput")
        and config.pluginmanager.hasplugin("xdist")
        and getattr(config.option, "numprocesses", None) is None
        and not getattr(config.option, "tx", None)
        and getattr(config.option, "dist", "no") == "no"
    ):
        config.option.numprocesses = len(devices)
    return (yield)


def _check_devices(config: pytest.Config, devices: tuple[str, ...]) -> None:
    n = len(devices)
    if not n or hasattr(config, "workerinput"):
        return
    numprocesses = getattr(config.option, "numprocesses", None)
    distributed = (
        config.pluginmanager.hasplugin("xdist") and getattr(config.option, "dist", "no") != "no"
    )
    workers = (numprocesses or len(getattr(config.option, "tx", None) or [])) if distributed else 0
    if n > 1 and not config.pluginmanager.hasplugin("xdist"):
        raise pytest.UsageError(
            f"{n} devices were given (--userflow-device / userflow_devices) but pytest-xdist is "
            "not available: one worker per device needs it (pip install pytest-xdist), "
            "or give a single device"
        )
    if n > 1 and workers == 0:
        raise pytest.UsageError(
            f"{n} devices were given but xdist runs no workers (-n 0): drop -n 0 for one worker "
            "per device, or give a single device"
        )
    if workers and workers != n:
        raise pytest.UsageError(
            f"-n asks for {workers} xdist worker(s) but {n} device(s) were given "
            "(--userflow-device / userflow_devices): each worker drives one device, so the "
            "numbers must match; leave -n out to get one worker per device"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    config.addinivalue_line("markers", BUDGET_MARKER)
    if config.option.help or config.option.version:
        return
    resolved = settings.resolve(config)
    _check_devices(config, resolved.devices)
    run = UserflowRun(config, resolved)
    config.stash[RUN_KEY] = run
    config.pluginmanager.register(run, "userflow-run")


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.close()
        config.pluginmanager.unregister(run)
        del config.stash[RUN_KEY]


def _flow_of(item: pytest.Item, marker: pytest.Mark) -> tuple[str, str | None]:
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    description = marker.kwargs.get("description")
    if not isinstance(name, str) or not name.strip():
        raise MeasurementError(
            f"@pytest.mark.userflow needs a flow name, a non-empty str, as its first argument; "
            f"got {name!r} on {item.nodeid}"
        )
    if description is not None and not isinstance(description, str):
        raise MeasurementError(
            f"@pytest.mark.userflow(description=...) must be a str, got "
            f"{type(description).__name__} on {item.nodeid}"
        )
    unknown = set(marker.kwargs) - {"name", "description"}
    if unknown or len(marker.args) > 1:
        raise MeasurementError(
            f"@pytest.mark.userflow takes (name, *, description=None), got extra "
            f"{sorted(unknown) or list(marker.args[1:])} on {item.nodeid}"
        )
    return plain_str(name), None if description is None else plain_str(description)


def _worker_device(worker: str, devices: tuple[str, ...]) -> str | None:
    """Worker gwN drives the N-th device."""
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    return devices[index] if 0 <= index < len(devices) else None


#: The options (by dest) of reports that write user_properties: --junitxml, --report-log
#: (pytest-reportlog), --html (pytest-html), --json-report (pytest-json-report).
REPORTS_READING_PROPERTIES = ("xmlpath", "report_log", "htmlpath", "json_report")


class _Gatekeeper:
    """The budgets and the regression gate, registered only once something can fail a test
    on its measurements (``--userflow-budget``, a baseline, a ``userflow_budget`` marker or
    ``budget=``): a hook wrapper costs every test a few microseconds, at each of its three
    reports. It turns a passing report into a failure before anything sees it (the terminal,
    report files, pytest-rerunfailures)."""

    def __init__(self, run: UserflowRun) -> None:
        self.run = run

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        testing = self.run.testing
        if testing is not None and testing[0] is item and report.when != "setup":
            record = testing[1]
            if len(record.measurements) > record.checked:
                self.run._gate(item, record, report)
        return report


class UserflowRun:
    """One pytest process's part of the run: its store, sink and summary."""

    def __init__(self, config: pytest.Config, resolved: settings.Settings) -> None:
        self.config = config
        self.settings = resolved
        self.workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.worker: str | None = self.workerinput["workerid"] if self.workerinput else None
        self.device = self._device()
        config.stash[DEVICE_KEY] = self.device
        self.fixtures = Fixtures(self.device, self._gating)
        config.pluginmanager.register(self.fixtures, "userflow-fixtures")
        opt = config.option
        # Measurements ride on each report's user_properties only when a report file reads
        # them: pytest keeps every report until the end, so they would cost memory per test.
        self.properties = any(getattr(opt, dest, None) for dest in REPORTS_READING_PROPERTIES)
        self.active = not (
            opt.collectonly or getattr(opt, "setupplan", False) or getattr(opt, "setuponly", False)
        )
        self.controller = False
        self.run: RunInfo | None = None
        self.store: Store | None = None
        self.sink: Sink | None = None
        self.journal: JournalWriter | None = None
        self.recorder: Recorder | None = None
        self.gatekeeper: _Gatekeeper | None = None  # see _gating
        self.testing: tuple[pytest.Item, TestRecord] | None = None  # from setup to teardown
        self.hooked: dict[str, bool] = {}  # see _hooked
        self.quick: bool | None = None  # see _quick
        # id(parent) -> (parent, its userflow markers, its userflow_budget markers): see _markers
        self.inherited: dict[int, tuple[Any, list[pytest.Mark], list[pytest.Mark]]] = {}
        # id(marker) -> (marker, flow, description): see _flow
        self.flows: dict[int, tuple[pytest.Mark, str, str | None]] = {}
        self.whole: dict[str, Any] | None = None
        self.gate: Gate | None = None
        self.summaries: list[dict[str, Any]] = []
        self.crashed: list[str] = []
        self.errors: list[str] = []

    def _device(self) -> str | None:
        devices = self.settings.devices
        if self.worker is not None:
            return _worker_device(self.worker, devices)
        return devices[0] if len(devices) == 1 else None

    @property
    def backend(self) -> str:
        return self.settings.backend

    # -- session start: open the store and pick the sink --------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.active:
            return
        self.controller = self.config.pluginmanager.hasplugin("dsession")
        if self.workerinput and "userflow_run" in self.workerinput:
            self.run = run_from_dict(self.workerinput["userflow_run"])
        else:
            self.run = new_run(self.config.rootpath, self.backend)
        if self.backend == "off":
            self.sink = NullSink()
        else:
            try:
                self.store = Store(self.settings.store)
                recover(self.store, self.errors)  # what dead processes left in journals
                self.store.start_run(self.run)
                if not self.controller:
                    self.journal = JournalWriter(self.store)
            except (StoreError, sqlite3.Error, OSError) as exc:
                raise pytest.UsageError(str(exc)) from None
            self.sink = self._make_sink()
        if not self.controller:
            self.recorder = Recorder(
                self.sink,
                run_id=self.run.run_id,
                worker=self.worker,
            )
            baselines = self._baselines()
            if self.settings.budgets or baselines is not None:
                self._gating(baselines)

    def _baselines(self) -> BaselineSource | None:
        s = self.settings
        assert self.run is not None
        if s.baseline == "local" and self.store is not None:
            from .budgets import BaselineSource, local_fetch

            return BaselineSource(local_fetch(self.store, self.run.run_id), s.baseline_runs)
        if s.baseline == "headspin":
            from .budgets import BaselineSource, headspin_fetch
            from .client import HeadSpinClient

            assert s.token is not None
            client = HeadSpinClient(s.token, base_url=s.url, retries=2)
            return BaselineSource(headspin_fetch(client), s.baseline_runs)
        return None

    def _make_sink(self) -> Sink:
        s = self.settings
        journal = self.journal
        if journal is None:  # the xdist controller records nothing itself
            return NullSink()
        write = journal.write
        if s.dry_run:
            return DryRunSink(write, s.url, s.api)
        if s.backend == "headspin":
            from .client import HeadSpinClient  # requests is imported only when it is needed

            assert s.token is not None
            return HeadSpinSink(
                write, Sender(HeadSpinClient(s.token, base_url=s.url), write), s.api
            )
        return Sink(write, journal.write_event)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.run is not None:
            node.workerinput["userflow_run"] = self.run.as_dict()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        if "userflow" in output:
            self.summaries.append(json.loads(output["userflow"]))
        elif self.active and self.run is not None:
            worker = str(node.gateway.id)
            self.crashed.append(worker)
            if self.store is not None:
                # What the dead worker finished is in its journal when it shares this host's
                # file system (popen workers); remote workers' stores are on their hosts.
                recover(self.store, self.errors)
                self.summaries.append(
                    process_summary(
                        self.store,
                        self.run.run_id,
                        worker=worker,
                        device=_worker_device(worker, self.settings.devices),
                        backend=self.backend,
                        dry_run=self.settings.dry_run,
                        notes={},
                    )
                )

    # -- per test ------------------------------------------------------------------------------

    def _markers(self, item: pytest.Item) -> tuple[list[pytest.Mark], list[pytest.Mark]]:
        """The item's ``userflow`` and ``userflow_budget`` markers, each nearest first (as
        ``iter_markers`` gives them), with the parents' part kept per parent: a module's or
        class's markers are looked up once, not at every test. Kept by the parent's id (with
        the parent, so the id stays its own): hashing a node is a Python call."""
        parent = item.parent
        inherited = self.inherited.get(id(parent))
        if inherited is None:
            inherited = self.inherited[id(parent)] = (
                parent,
                list(parent.iter_markers("userflow")) if parent is not None else [],
                list(parent.iter_markers("userflow_budget")) if parent is not None else [],
            )
        flows, budgets = inherited[1], inherited[2]
        for mark in item.own_markers:  # usually none of ours: one pass, nothing made
            if mark.name == "userflow" or mark.name == "userflow_budget":
                own = [m for m in item.own_markers if m.name == "userflow"]
                own_budgets = [m for m in item.own_markers if m.name == "userflow_budget"]
                return own + flows, own_budgets + budgets
        return flows, budgets

    def _flow(self, item: pytest.Item, marker: pytest.Mark | None) -> tuple[str | None, str | None]:
        """The flow and description that *marker* (the nearest ``userflow`` marker) gives.

        A marker is checked once, not at each of the tests that share it (a module's, a
        class's, a parametrized function's); one that is wrong fails every test it marks."""
        if marker is None:
            return self.settings.flow, None
        known = self.flows.get(id(marker))
        if known is None or known[0] is not marker:
            name, description = _flow_of(item, marker)
            known = self.flows[id(marker)] = (marker, name, description)
        return known[1], known[2]

    def _hooked(self, name: str) -> bool:
        """Whether anything implements our hook *name*: a hook nobody implements is not
        called, which spares each test a few microseconds per hook. Known until a plugin
        or conftest is registered."""
        hooked = self.hooked.get(name)
        if hooked is None:
            hooked = self.hooked[name] = bool(getattr(self.config.hook, name).get_hookimpls())
        return hooked

    def _quick(self) -> bool:
        """Whether nothing asks for a finished test's EventRecord, so that the sink keeps the
        test without one (see _finish): the sink can, no report file reads user properties,
        and no ``pytest_userflow_flushed`` is implemented."""
        assert self.recorder is not None
        return (
            self.recorder.write_event is not None
            and not self.properties
            and not self._hooked("pytest_userflow_flushed")
        )

    def pytest_plugin_registered(self) -> None:
        self.hooked.clear()
        self.quick = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        record = TestRecord(item.nodeid, None, device=self.device)
        if self.recorder is not None:  # else nothing is kept (--setup-plan, say)
            self.testing = (item, record)
        self.fixtures.current = record
        flows, budgets = self._markers(item)
        record.flow, record.description = self._flow(item, flows[0] if flows else None)
        if not budgets:
            return
        from .budgets import Budget  # loaded where budgets are used

        flow = record.flow or default_flow_name(item.nodeid)
        for marker in reversed(budgets):  # nearest last: wins
            key = marker.args[0] if marker.args else marker.kwargs.get("key")
            unknown = set(marker.kwargs) - {"key", "max", "min"}
            where = f"@pytest.mark.userflow_budget on {item.nodeid}"
            if unknown or len(marker.args) > 1:
                raise MeasurementError(f"{where} takes (key, max=None, min=None), got {marker}")
            budget = Budget.create(
                flow, key, marker.kwargs.get("max"), marker.kwargs.get("min"), where=where
            )
            record.budgets[budget.key] = budget
        self._gating()

    def _gating(self, baselines: BaselineSource | None = None) -> None:
        """Make the gate and hook it in (once): from now on each report is checked.

        *baselines*: the regression gate's history, known when the session starts."""
        if self.gatekeeper is None:
            from .budgets import Gate

            s = self.settings
            self.gate = Gate(
                s.budgets, baselines, pct=s.regression, warn_only=s.regression_mode == "warn"
            )
            self.gatekeeper = _Gatekeeper(self)
            self.config.pluginmanager.register(self.gatekeeper, "userflow-gate")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep the test's reports; at its teardown report, hand it to the sink.

        Logged reports, not made ones: pytest-rerunfailures runs an attempt whole and then
        logs its reports, the one that asks for a rerun with the outcome "rerun", and then
        the attempt is dropped (the final one is kept). First of the hook's implementations,
        so that report files read the user properties added here."""
        testing = self.testing
        if testing is None or report.nodeid != testing[1].nodeid:
            return  # the xdist controller, or a test set up outside this plugin's hooks
        outcome: str = report.outcome  # pytest-rerunfailures' "rerun" is none of pytest's
        if outcome == "rerun":
            self.testing = None
            return
        record = testing[1]
        record.reports[report.when] = report
        if report.when == "teardown":
            self.testing = None  # the record (and its reports) go with the test
            if record.wanted:
                self._finish(testing[0], record, report)

    def _finish(self, item: pytest.Item, record: TestRecord, report: pytest.TestReport) -> None:
        """Hand the finished test to the sink."""
        assert self.recorder is not None
        status, message = self._status(item, record)
        if self._hooked("pytest_userflow_measurements"):
            measurements = list(map(Measurement._make, record.measurements))
            validated = {id(m) for m in measurements}  # checked by record_measurement already
            item.ihook.pytest_userflow_measurements(item=item, measurements=measurements)
            record.measurements = [m.row() for m in self._checked(item, measurements, validated)]
        flow = record.flow or default_flow_name(item.nodeid)
        quick = self.quick
        if quick is None:
            quick = self.quick = self._quick()
        if quick:  # the common case: a teardown costs about a third less without the event
            try:
                self.recorder.keep(record, status, message, flow)
            except (UserflowError, OSError) as exc:
                self.errors.append(f"could not record {item.nodeid}: {exc}")
            return
        event = self.recorder.event_for(record, status, message, flow)
        if self.properties:
            report.user_properties.append(("userflow", event.flow))
            report.user_properties.append(("userflow_status", event.status))
            report.user_properties.extend(
                (f"userflow:{m.key}", m.value) for m in event.measurements
            )
        self._flush(item, event)

    def _gate(self, item: pytest.Item, record: TestRecord, report: pytest.TestReport) -> None:
        """Budgets and the regression gate for what was recorded since the last check.

        Runs right after the call phase (and again after teardown for values that fixture
        teardowns recorded); a breach turns a passing report into a failure.
        """
        if self.gate is None or not self.gate.active(record.budgets):
            record.checked = len(record.measurements)
            return
        new = list(map(Measurement._make, record.measurements[record.checked :]))
        record.checked = len(record.measurements)
        flow = record.flow or default_flow_name(item.nodeid)
        failing = self.gate.check(
            item.nodeid,
            flow,
            new,
            record.budgets,
            lambda m, baseline: item.ihook.pytest_userflow_verdict(
                item=item, measurement=m, baseline=baseline
            ),
        )
        if failing and report.passed:
            from .budgets import BudgetExceeded

            message = "; ".join(check.message() for check in failing)
            try:
                raise BudgetExceeded(message)
            except BudgetExceeded:
                excinfo = pytest.ExceptionInfo[BudgetExceeded].from_current()
            report.outcome = "failed"
            report.longrepr = excinfo.getrepr(style="no")
            report.userflow_message = message  # type: ignore[attr-defined]  # the flow's status

    def _status(self, item: pytest.Item, record: TestRecord) -> tuple[str, str | None]:
        if record.status_override is not None:
            return record.status_override
        reports = list(record.reports.values())  # setup, call, teardown: in the order made
        status, message = status_from_reports(reports)
        if self._hooked("pytest_userflow_status"):
            decided = item.ihook.pytest_userflow_status(item=item, reports=reports)
            if decided is not None:
                try:
                    status, message = self._hook_status(item, decided)
                except MeasurementError as exc:
                    self.errors.append(f"{exc}; the built-in status {status} was used")
        return status, message

    def _hook_status(self, item: pytest.Item, decided: Any) -> tuple[str, str | None]:
        where = f"pytest_userflow_status for {item.nodeid}"
        if not (isinstance(decided, tuple) and len(decided) == 2):
            raise MeasurementError(
                f"{where} must return (status, message) or None, got {decided!r}"
            )
        message = decided[1]
        return normalize_status(decided[0], where=where), None if message is None else str(message)

    def _checked(
        self, item: pytest.Item, measurements: list[Any], validated: set[int]
    ) -> list[Measurement]:
        """Check what the measurements hook added or changed (the rest was checked at the
        call of record_measurement)."""
        good = []
        for m in measurements:
            if id(m) in validated:
                good.append(m)
                continue
            try:
                good.append(
                    Measurement.coerce(m, where=f"pytest_userflow_measurements for {item.nodeid}")
                )
            except MeasurementError as exc:
                self.errors.append(str(exc))
        return good

    def _flush(self, item: pytest.Item, event: EventRecord) -> None:
        assert self.recorder is not None
        try:
            outcome = self.recorder.flush(event)
        except (UserflowError, sqlite3.Error, OSError) as exc:
            self.errors.append(f"could not record {event.nodeid}: {exc}")
            return
        if self._hooked("pytest_userflow_flushed"):
            item.ihook.pytest_userflow_flushed(item=item, result=flush_result(event, outcome))

    # -- session end -----------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.active or self.run is None:
            return
        if self.sink is not None and not self.controller:
            timeout = self.settings.flush_timeout
            if exitstatus == pytest.ExitCode.INTERRUPTED:
                timeout = min(timeout, 2.0)  # Ctrl-C: be quick, the spool keeps the rest
            self.sink.finish(timeout)
            if self.journal is not None and not self.journal.flush(aggregates=True, last=True):
                self.errors.append(
                    f"the local store {self.settings.store} could not take this run's data yet "
                    f"({self.journal.error or 'timeout'}); it is kept in {self.journal.path} "
                    "and folded in by the next run or pytest-userflow command"
                )
            summary = process_summary(
                self.store,
                self.run.run_id,
                worker=self.worker,
                device=self.device,
                backend=self.backend,
                dry_run=self.settings.dry_run,
                notes=self._notes(),
                with_events=self.settings.report is not None,
                aggregates=self.journal.aggregates if self.journal is not None else None,
            )
            if self.workerinput is not None:
                self.config.workeroutput["userflow"] = json.dumps(summary, default=str)  # type: ignore[attr-defined]
            else:
                self.summaries.append(summary)
        if self.workerinput is None:
            if self.controller and self.errors:  # the workers' summaries carry their own
                self.summaries.append({"errors": list(self.errors)})
            if self.store is not None:
                self.store.finish_run(self.run.run_id)
                if self.controller:
                    self.whole = self._whole_run()
            if self.settings.report is not None:
                write_report(
                    self.settings.report,
                    build_report(
                        self.run,
                        self.summaries,
                        backend=self.backend,
                        store=self.settings.store if self.store else None,
                        url=self.settings.url,
                        crashed=self.crashed,
                    ),
                )

    def _whole_run(self) -> dict[str, Any] | None:
        """The run's summary read from this host's store, when the workers shared it (popen
        workers do; --tx workers on other hosts do not): exact medians across workers."""
        assert self.store is not None and self.run is not None
        whole = process_summary(
            self.store,
            self.run.run_id,
            worker=False,
            device=None,
            backend=self.backend,
            dry_run=self.settings.dry_run,
            notes={},
        )
        merged = merge(self.summaries)
        tests = sum(f["tests"] for f in whole["flows"].values())
        return whole if tests == sum(f["tests"] for f in merged["flows"].values()) else None

    def _notes(self) -> dict[str, Any]:
        notes: dict[str, Any] = {
            "errors": list(self.errors),
            "send_errors": [],
            "checks": [],  # the gate's, made only once a budget or baseline is in play
            "no_history": [],
        }
        if self.gate is not None:
            notes["checks"] = [c.as_dict() for c in self.gate.checks]
            notes["no_history"] = sorted(self.gate.no_history)
            if self.gate.baselines is not None:
                notes["errors"] += self.gate.baselines.errors
        if isinstance(self.sink, DryRunSink):
            notes["dry_run_lines"] = self.sink.lines
        if isinstance(self.sink, HeadSpinSink):
            stats = self.sink.sender.stats
            notes["unroutable"] = self.sink.unroutable
            notes["auth_error"] = stats.auth_error
            notes["send_errors"] += stats.errors
        return notes

    def _where(self) -> str:
        s = self.settings
        if s.backend == "off":
            return "userflow backend off: nothing recorded"
        if s.dry_run:
            return f"dry run (nothing sent), recorded in the local store {s.store}"
        if s.backend == "headspin":
            return f"HeadSpin {s.url} (spool: {s.store})"
        return f"local store {s.store}"

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        if not self.active:
            return None
        device = f", devices: {', '.join(self.settings.devices)}" if self.settings.devices else ""
        return f"userflow: {self._where()}{device}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.workerinput is not None or not self.active:
            return
        lines = render(
            self.summaries,
            run=self.run,
            where=self._where(),
            crashed=self.crashed,
            whole=self.whole,
        )
        if not lines:
            return
        terminalreporter.write_sep("=", "userflow")
        for text, markup in lines:
            terminalreporter.write_line(text, **markup)

    def close(self) -> None:
        self.config.pluginmanager.unregister(self.fixtures)
        if self.gatekeeper is not None:
            self.config.pluginmanager.unregister(self.gatekeeper)
        if self.sink is not None:
            self.sink.close()
        if self.journal is not None:
            self.journal.close()
        if self.store is not None:
            self.store.close()
