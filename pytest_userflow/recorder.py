"""A test's way from its setup to its record, and the run's end: one pytest process's part.

``UserflowRun`` is made and registered as a plugin by ``plugin.run_of`` when a test first
records (or the project asked for a report): the run's facts (git), its store, its gate and
its sink are made then. It makes each recording test's record, gates its values as its
reports are made, and at its teardown decides its status and commits it once. At the
session's end it flushes the uploads and builds this process's summary. The store, the
senders and the summary's modules are imported only when the backend is on
(``--userflow-backend off`` loads none of them).

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .model import (
    SESSION_NODEID,
    Measurement,
    MeasurementError,
    ProcessSummary,
    RunInfo,
    RunSummary,
    TestRecord,
    UserflowError,
    check_text,
    normalize_status,
    own_outcome,
    status_from_reports,
)
from .options import DEFAULT_STORE
from .runinfo import git_ancestors, new_run
from .settings import where
from .storage import StoreError

if TYPE_CHECKING:
    from .gate import BaselineSource, Budget, Gate
    from .plugin import State
    from .settings import Settings
    from .storage import History
    from .storage.sqlite import SQLiteStore
    from .upload import Sink

#: A recording test's record, from its setup (or its first record) to its teardown.
RECORD_KEY = pytest.StashKey[TestRecord]()
#: How many attempts of a test pytest-rerunfailures has run so far (on its item).
ATTEMPTS_KEY = pytest.StashKey[int]()
#: The run's outcome in the store, by pytest's exit code.
OUTCOMES = {0: "passed", 1: "failed", 2: "interrupted", 5: "no tests"}


def _markers(item: pytest.Item) -> tuple[pytest.Mark | None, bool, list[pytest.Mark]]:
    """In one walk over the test's markers, nearest first: the nearest ``userflow`` marker
    that is ours, whether the test also carries a bare ``@pytest.mark.userflow`` (it names no
    flow and is taken for another project's tag of the same name), and its
    ``userflow_budget`` markers."""
    ours = None
    bare = False
    budgets = []
    for mark in item.iter_markers():
        name = mark.name
        if name == "userflow":
            if not (mark.args or mark.kwargs):
                bare = True
            elif ours is None:
                ours = mark
        elif name == "userflow_budget":
            budgets.append(mark)
    return ours, bare, budgets


def _flow_of(nodeid: str, marker: pytest.Mark) -> tuple[str, str | None]:
    """The flow name and description of a ``userflow`` marker, checked."""
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    description = marker.kwargs.get("description")
    if not isinstance(name, str) or not name.strip():
        raise MeasurementError(
            f"@pytest.mark.userflow needs a flow name, a non-empty str, as its first argument; "
            f"got {name!r} on {nodeid}"
        )
    if description is not None and not isinstance(description, str):
        raise MeasurementError(
            f"@pytest.mark.userflow(description=...) must be a str, got "
            f"{type(description).__name__} on {nodeid}"
        )
    unknown = set(marker.kwargs) - {"name", "description"}
    if unknown or len(marker.args) > 1:
        raise MeasurementError(
            f"@pytest.mark.userflow takes (name, *, description=None), got extra "
            f"{sorted(unknown) or list(marker.args[1:])} on {nodeid}"
        )
    where = f"@pytest.mark.userflow on {nodeid}"
    flow = check_text("the flow name", name, where)
    assert flow is not None
    if description is not None:
        description = check_text("description", description, where, required=False, limit=10_000)
    return flow, description


def _budgets_of(markers: list[pytest.Mark], nodeid: str, flow: str) -> dict[str, Budget]:
    """The test's ``userflow_budget`` *markers* by key, the nearest winning."""
    budgets: dict[str, Budget] = {}
    where = f"@pytest.mark.userflow_budget on {nodeid}"
    for marker in markers:  # nearest first
        from .gate import Budget  # a test with no budget marker does not load the gate

        unknown = set(marker.kwargs) - {"key", "max", "min", "direction"}
        if unknown or len(marker.args) > 1:
            raise MeasurementError(
                f"{where} takes (key, max=None, min=None, direction=None), got {marker}"
            )
        key = marker.args[0] if marker.args else marker.kwargs.get("key")
        budget = Budget.create(
            flow,
            key,
            marker.kwargs.get("max"),
            marker.kwargs.get("min"),
            where=where,
            direction=marker.kwargs.get("direction"),
        )
        budgets.setdefault(budget.key, budget)
    return budgets


def _session_breached(summary: RunSummary) -> bool:
    """Whether a ``userflow_session`` value failed its budget or regression check (in any
    worker): it has no test report to fail, so the run's exit status says it."""
    from .gate import FAILING_VERDICTS

    return any(
        check.nodeid == SESSION_NODEID and check.verdict in FAILING_VERDICTS
        for process in summary.processes
        for check in process.checks
    )


class UserflowRun:
    """One pytest process's part of the run: its store, sink, gate and summary."""

    def __init__(self, config: pytest.Config, settings: Settings, state: State) -> None:
        """The run's facts, its store, its gate and its sink. The store is not checked or
        made here: one that cannot take a test is said in the summary. A team store is asked
        only the run's lineage (a server that is down costs the run that question, said
        once), and its tests wait in the outbox."""
        from .gate import Gate, local_since

        self.config = config
        self.settings = s = settings
        self.state = state
        self.workerinput = state.workerinput
        self.worker: str | None = self.workerinput["workerid"] if self.workerinput else None
        self.device = state.device
        self.active = state.recording
        self.controller = state.controller
        self.recording = self.active and not self.controller
        self.store: SQLiteStore | None = None  # this machine's outbox (the SQLite history)
        self.history: History | None = None  # what the gate, changes and HTML read
        self.team_error: str | None = None  # the team store failed: said once, not retried
        self.sink: Sink | None = None  # None: this process records nothing
        self.running: pytest.Item | None = None  # the recording item, to its teardown
        self.summary = RunSummary()
        self.errors: list[str] = []
        self.unstored: list[str] = []  # tests the store could not take
        self.stored = 0  # tests the store took
        self.foreign_tags: list[str] = []  # tests that recorded under a bare userflow marker
        self.bare_tagged: set[str] = set()  # tests that carry a bare userflow marker
        self.damaged: str | None = None  # why the store is known to be damaged
        self.run: RunInfo = new_run(config.rootpath, s.backend, state.run_seed())
        if s.backend != "off":
            from .storage import open_outbox, open_store

            self.store = open_outbox(s.outbox or s.store)
            self.history = open_store(s.store, in_run=True) if s.outbox is not None else self.store
            self.run = self._lineage(self.run)
        local = s.baseline == "local" and self.store is not None
        self.gate: Gate = Gate(
            s.budgets,
            None if self.controller else self._baselines(),
            pct=s.regression,
            warn_only=s.regression_mode == "warn",
            noise=s.noise,
            directions=s.directions,
            min_changes=s.min_changes,
            since=local_since(self.history, self.run) if self.history and local else None,
            store=self._store_argument(),
        )
        if not self.controller:  # it only merges what the workers hand back
            self.sink = self._make_sink(self.run)

    def _lineage(self, run: RunInfo) -> RunInfo:
        """*run* with its baseline branch, and with the local gate its fork point (git is
        asked for the run's line of commits only on a branch other than the baseline's). A
        history that cannot answer leaves the run as it is: said once, and not asked again."""
        from .gate import lineage

        history = self.history
        assert history is not None
        root = self.config.rootpath
        gated = self.settings.baseline == "local"
        commits = lambda: git_ancestors(root) if gated else None  # noqa: E731
        try:
            return lineage(history, run, self.settings.baseline_branch, commits)
        except StoreError as exc:
            if history is not self.store:
                self.team_error = str(exc)
            self.errors.append(f"the history could not be read: {exc}")
            return run

    def _store_argument(self) -> str | None:
        """The store as the CLI is told it, or None where the CLI finds it by itself."""
        from .storage import shown

        store = self.settings.store
        default = Path(self.config.rootpath, DEFAULT_STORE).resolve()
        if store == default and Path.cwd().resolve() == self.config.rootpath.resolve():
            return None
        return shown(store)

    def _make_sink(self, run: RunInfo) -> Sink:
        from .upload import DryRunSink, HeadSpinSink, NullSink, Sink

        s = self.settings
        if self.store is None:
            return NullSink(run)
        if s.dry_run:
            return DryRunSink(self.store, run, s.url, s.api)
        team = None
        if s.outbox is not None:
            from .storage.postgres import PostgresStore
            from .upload import TeamSender

            team = TeamSender(PostgresStore(str(s.store), in_run=True), self.store)
        if s.backend == "headspin":
            from .client import HeadSpinClient  # requests is imported only when it is needed

            assert s.token is not None
            client = HeadSpinClient(s.token, base_url=s.url)
            return HeadSpinSink(self.store, run, client, s.api, team)
        return Sink(self.store, run, team)

    def _baselines(self) -> BaselineSource | None:
        from .gate import BaselineSource, headspin_fetch, local_fetch

        s = self.settings
        if s.baseline == "local" and self.history is not None:
            fetch = local_fetch(self.history, self.run)
            return BaselineSource(self._once(fetch), s.baseline_runs)
        if s.baseline == "headspin":
            from .client import HeadSpinClient

            assert s.token is not None
            # In the test's own thread: a HeadSpin that hangs costs a test a few seconds, once.
            client = HeadSpinClient(s.token, base_url=s.url, timeout=5.0, retries=1)
            return BaselineSource(headspin_fetch(client), s.baseline_runs)
        return None

    def _once(self, fetch: Any) -> Any:
        """*fetch*, given up after the team store's first failure: a server that is down or
        slow costs each test nothing more than once, and it is said once."""
        if self.history is self.store:
            return fetch

        def once(*args: Any) -> list[float]:
            if self.team_error is not None:
                raise StoreError(self.team_error)
            try:
                return list(fetch(*args))
            except StoreError as exc:
                self.team_error = str(exc)
                raise

        return once

    def worker_died(self, worker: str, device: str | None) -> None:
        """What the dead *worker* (driving *device*) finished, read from the store, for the
        summary."""
        if self.store is None or not self.store.exists:
            return  # nothing was recorded: nothing to say of it
        self.summary.crashed.append(worker)
        self.summary.processes.append(self._read(ProcessSummary(worker, device)))

    # -- per test --------------------------------------------------------------------------------

    def start_test(self, item: pytest.Item, started: float) -> TestRecord:
        """*item*'s record, made at its setup (or at its first record; *started*: when its
        setup began): its flow, description and budgets from its markers, checked."""
        self.running = item
        nodeid = item.nodeid
        marker, bare, budget_markers = _markers(item)
        flow, description = _flow_of(nodeid, marker) if marker else (self.settings.flow, None)
        record = TestRecord(nodeid, flow, description, device=self.device, worker=self.worker)
        record.started = started
        record.attempts = item.stash.get(ATTEMPTS_KEY, 0) + 1
        item.stash[RECORD_KEY] = record
        if bare:
            self.bare_tagged.add(nodeid)
        record.budgets = _budgets_of(budget_markers, nodeid, record.flow)
        return record

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Budgets and regressions, right after the call phase (and again after teardown for
        values that fixture teardowns recorded): a breach turns a passing report into a
        failure before anything sees it (the terminal, report files, pytest-rerunfailures)."""
        report = yield
        record = item.stash.get(RECORD_KEY, None)
        if (
            report.when != "setup"
            and record is not None
            and len(record.measurements) > record.checked
            and self.gate.active(record.budgets)
        ):
            self._gate(item, record, report)
        return report

    def _gate(self, item: pytest.Item, record: TestRecord, report: pytest.TestReport) -> None:
        new = record.measurements[record.checked :]
        record.checked = len(record.measurements)
        checks = self.gate.check(
            record.nodeid,
            record.flow,
            new,
            record.budgets,
            lambda m, baseline: item.ihook.pytest_userflow_verdict(
                item=item, measurement=m, baseline=baseline
            ),
            record.device_address,
        )
        record.checks += checks
        failing = [check for check in checks if check.failed]
        if failing and report.passed:
            from .gate import BudgetExceeded

            message = "; ".join(check.message() for check in failing)
            advice = [text for text in (check.advice() for check in failing) if text]
            try:  # an ExceptionInfo needs a traceback, which only raising gives
                raise BudgetExceeded("\n".join([message, *advice]))
            except BudgetExceeded:
                excinfo = pytest.ExceptionInfo[BudgetExceeded].from_current()
            report.outcome = "failed"
            report.longrepr = excinfo.getrepr(style="no")
            record.breaches[report.when] = message  # the flow's status says it plainly

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep the test's reports; at its teardown report, finish and keep its record.

        Logged reports, not made ones: pytest-rerunfailures runs an attempt whole and then
        logs its reports, the one that asks for a rerun with the outcome "rerun", and then
        the attempt is dropped (the final one is kept). First of the hook's implementations,
        so that report files read the user properties added here."""
        item = self.running
        if item is None or report.nodeid != item.nodeid:
            return  # the xdist controller, or a test set up outside this plugin's hooks
        outcome: str = report.outcome  # pytest-rerunfailures' "rerun" is none of pytest's
        if outcome == "rerun" or report.when == "teardown":
            self.running = None
        record = item.stash.get(RECORD_KEY, None)
        if record is None:
            return
        if outcome == "rerun":
            item.stash[ATTEMPTS_KEY] = record.attempts
            del item.stash[RECORD_KEY]
            return
        record.reports.append(report)
        if report.when == "teardown":
            del item.stash[RECORD_KEY]  # the record (and its reports) go with the test
            if record.wanted:
                self._finish(item, record, report)

    def _finish(self, item: pytest.Item, record: TestRecord, report: pytest.TestReport) -> None:
        """The test is over: its status, its last measurements, its user properties, and
        its one write to the store."""
        hook = item.ihook
        status, message, outcome = self._status(item, record, hook)
        if hook.pytest_userflow_measurements.get_hookimpls():
            measurements: list[Any] = list(record.measurements)
            hook.pytest_userflow_measurements(item=item, measurements=measurements)
            record.measurements = self._checked(record, measurements)
        record.end(status, message, outcome)
        if record.nodeid in self.bare_tagged:
            self.foreign_tags.append(record.nodeid)
        if record.budgets or self.gate.budgets:
            keys = [m.key for m in record.measurements]
            self.gate.note_test(record.nodeid, record.flow, keys, record.budgets)
        properties = report.user_properties
        properties.append(("userflow", record.flow))
        properties.append(("userflow_status", record.status))
        if record.attempts > 1:
            properties.append(("userflow_attempts", record.attempts))
        for m in record.measurements:
            properties.append((f"userflow:{m.key}", m.value))
            if m.units:  # a CI page shows the number with its units beside it
                properties.append((f"userflow_units:{m.key}", m.units))
        self._keep(record)
        if hook.pytest_userflow_flushed.get_hookimpls():  # a call costs, even to nobody
            hook.pytest_userflow_flushed(item=item, result=record)

    def _keep(self, record: TestRecord) -> None:
        """The record's one write: a store that cannot take it is said in the summary."""
        assert self.sink is not None
        try:
            if self.damaged is not None:  # not written to once known damaged
                raise StoreError(self.damaged)
            self.sink.keep(record)
            self.stored += 1
        except (StoreError, OSError) as exc:
            record.destination = "unstored"
            self.unstored.append(f"{record.nodeid}: {exc}")
            if isinstance(exc, StoreError) and exc.damaged:
                self.damaged = str(exc)

    def _status(
        self, item: pytest.Item, record: TestRecord, hook: Any
    ) -> tuple[str, str | None, str]:
        """The status sent, its message, and the test's own outcome: the built-in status
        without the gate's breaches, or the status that ``set_status`` or the hook decided."""
        if record.status_override is not None:
            return (*record.status_override, record.status_override[0])
        status, message = status_from_reports(record.reports, record.breaches)
        decided = None
        if hook.pytest_userflow_status.get_hookimpls():
            decided = hook.pytest_userflow_status(item=item, reports=list(record.reports))
        if decided is None:  # with no breach of the gate's, the status is the test's own
            own = own_outcome(record.reports, record.breaches) if record.breaches else status
            return status, message, own
        where = f"pytest_userflow_status for {record.nodeid}"
        try:
            if not (isinstance(decided, tuple) and len(decided) == 2):
                raise MeasurementError(
                    f"{where} must return (status, message) or None, got {decided!r}"
                )
            text = check_text("message", decided[1], where, required=False, limit=10_000)
            chosen = normalize_status(decided[0], where=where)
            return chosen, text, chosen
        except MeasurementError as exc:
            self.errors.append(f"{exc}; the built-in status {status} was used")
            return status, message, own_outcome(record.reports, record.breaches)

    def _checked(self, record: TestRecord, measurements: list[Any]) -> list[Measurement]:
        """What the measurements hook left, each checked as record_measurement checks."""
        good = []
        for m in measurements:
            try:
                good.append(
                    Measurement.coerce(m, where=f"pytest_userflow_measurements for {record.nodeid}")
                )
            except MeasurementError as exc:
                self.errors.append(str(exc))
        return good

    # -- session end -----------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.active:
            return
        s = self.settings
        if self.recording:
            self._finish_session(session, exitstatus)
        if self.sink is not None:
            timeout = s.flush_timeout
            if exitstatus == pytest.ExitCode.INTERRUPTED:
                timeout = min(timeout, 2.0)  # Ctrl-C: be quick, the store keeps the rest
            try:
                self.sink.finish(timeout, self._say if self.workerinput is None else None)
            except KeyboardInterrupt:  # ends the wait only: the rest stays pending for push
                self.sink.stop()
            summary = self._notes()
            if s.backend == "off" and s.report is None and not self._worth_saying(summary):
                return  # nothing recorded and nothing to say: the summary's modules stay unloaded
            if self.stored:  # a store nothing was written to is not read (nor made)
                summary = self._read(summary)
            if self.workerinput is not None:
                output = json.dumps(summary.to_dict(), default=str)
                self.config.workeroutput["userflow"] = output  # type: ignore[attr-defined]
                return
            self.summary.processes.append(summary)
        if self.controller:  # the workers' summaries carry their own
            self.summary.errors += self.errors
        if session.exitstatus == pytest.ExitCode.OK and _session_breached(self.summary):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # no test's report could say it
        recorded = self.stored or any(p.flows for p in self.summary.processes)
        if self.store is not None and self.damaged is None and recorded:
            outcome = OUTCOMES.get(exitstatus, str(exitstatus))
            try:
                self.store.finish_run(self.run.run_id, outcome)
            except StoreError as exc:
                self.summary.errors.append(f"could not note the run's end: {exc}")
            if self.history is not self.store and self._team_answers():
                assert self.history is not None
                try:
                    self.history.finish_run(self.run.run_id, outcome)
                except StoreError as exc:
                    self.team_error = str(exc)
                    self.summary.errors.append(f"could not note the run's end: {exc}")
            self._changes()
            self._units()
            if s.html is not None:
                self._html(s.html)
        if s.markdown is not None:
            self._markdown(s.markdown)
        if s.report is not None:
            from .report import build_report, write_report

            report = build_report(
                self.run,
                self.summary,
                backend=s.backend,
                store=s.store if self.store is not None and self.store.exists else None,
                outbox=s.outbox,
                url=s.url,
            )
            try:
                write_report(s.report, report)
            except OSError as exc:  # the run's outcome is the tests' own
                error = f"could not write the report {s.report}: {exc.strerror or exc}"
                self.summary.errors.append(error)

    def _say(self, line: str) -> None:
        """A line on the terminal now (the wait at the session's end)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    def _finish_session(self, session: pytest.Session, exitstatus: int) -> None:
        """What ``userflow_session`` recorded: one record with this process's outcome."""
        record = self.state.session
        if record is None or not record.measurements:
            return
        if self.gate.active(record.budgets):
            # The ini's budgets and the baseline hold for the run's own values too.
            record.checks += self.gate.check(
                record.nodeid, record.flow, record.measurements, record.budgets,
                device=record.device_address,
            )  # fmt: skip
        breached = [check.message() for check in record.checks if check.failed]
        failed = session.testsfailed
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            status, message = "Failed", "the run was interrupted"
        elif failed:
            status, message = "Failed", f"{failed} test(s) failed"
        elif breached:
            status, message = "Failed", "; ".join(breached)
        elif exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            status, message = "Failed", f"the run ended with exit code {int(exitstatus)}"
        else:
            status, message = "Passed", None
        record.end(status, message)
        self._keep(record)

    def _read(self, summary: ProcessSummary) -> ProcessSummary:
        """*summary* with what the store holds of its process in this run; a store that
        cannot be read is said so, and never raised into pytest."""
        s = self.settings
        from .report import read_process

        store = None if self.damaged is not None else self.store  # said once, in the notes
        try:
            return read_process(
                store,
                self.run.run_id,
                summary,
                backend=s.backend,
                dry_run=s.dry_run,
                with_events=s.report is not None,
            )
        except StoreError as exc:
            summary.errors.append(f"could not read the local store {s.store}: {exc}")
            return summary

    def _changes(self) -> None:
        """With the local baseline, the worse changes this run confirms, for the summary."""
        from .gate import confirmed_changes

        if self.settings.baseline != "local" or self.history is None:
            return
        if not self._team_answers():
            return
        try:
            found = confirmed_changes(
                self.history, self.run, self.gate.key_direction, self.gate.key_min_change
            )
        except StoreError as exc:  # said in the summary, never raised
            self.summary.errors.append(f"could not look for changes: {exc}")
            return
        self.summary.changes = found

    def _units(self) -> None:
        """Tests that recorded a key in other units than their last RECENT_RUNS runs did: one
        warning each, for the summary."""
        from .gate import RECENT_RUNS

        assert self.store is not None
        from .analysis import unit_changes

        try:
            earlier = [r["run_id"] for r in self.store.runs(limit=RECENT_RUNS + 1)]
            earlier = [run_id for run_id in earlier if run_id != self.run.run_id][:RECENT_RUNS]
            if not earlier:
                return
            found = unit_changes(self.store.unit_changes(self.run.run_id, earlier))
        except StoreError as exc:  # said in the summary, never raised
            self.summary.errors.append(f"could not compare the units: {exc}")
            return
        self.summary.unit_changes = sorted(set(found))

    def _html(self, path: Path) -> None:
        """The HTML report of this run and the last runs of its baseline (its baseline
        branch's up to its fork point, or every run's); a failure is said, not raised."""
        from .gate import baseline_runs

        assert self.history is not None
        from . import html
        from .sources import page_rows_of

        run, last = self.run, html.DEFAULT_RUNS
        # The page says the branch whose runs it draws, when they are one branch's.
        branch = run.baseline_branch if run.git_branch == run.baseline_branch else None
        try:
            history = self.history
            if run.baseline_branch is None:
                runs = history.runs(limit=last)
            else:
                own = history.runs(limit=last, branch=run.git_branch)
                own = [r for r in own if r["run_id"] == run.run_id]
                runs = [*own, *baseline_runs(history, run, last - 1)]
            data = html.collect(
                *page_rows_of(history, runs, None), direction=self.gate.key_direction,
                min_change=self.gate.key_min_change, accepts=history.accepts(), branch=branch,
            )  # fmt: skip
            size = html.write(path, data)
        except (UserflowError, OSError) as exc:
            text = getattr(exc, "strerror", None) or exc
            self.summary.errors.append(f"could not write the HTML report {path}: {text}")
            return
        self.summary.html = f"{path} ({len(data['charts'])} key(s), {size // 1024} KB)"

    def _markdown(self, path: Path) -> None:
        """The markdown summary of the run; a failure is said, not raised."""
        from .report import markdown, write_markdown

        text = markdown(self.summary, run=self.run, where=where(self.settings))
        try:
            write_markdown(path, text)
        except OSError as exc:
            error = f"could not write the markdown summary {path}: {exc.strerror or exc}"
            self.summary.errors.append(error)

    def _team_answers(self) -> bool:
        """Whether the team store may be asked: it took every test of this run (else it is
        down or slow, and push brings it the run's end) and has not failed here or in a
        worker (a failure is said once)."""
        total = self.summary.total()
        return self.team_error is None and not total.pending_team and not total.sink.team_error

    def _notes(self) -> ProcessSummary:
        """This process's notes: its errors, what its gate checked, what its sender said."""
        assert self.sink is not None
        errors = list(self.errors)
        if self.damaged is not None:
            errors.append(
                f"the local store {self.settings.store} is damaged ({self.damaged}): "
                f"{len(self.unstored)} test(s) of this run could not be stored and their records "
                "are lost (their outcomes are not); it was left as it is and not written to "
                "again: move it away and run again"
            )
        elif self.unstored:
            errors.append(
                f"the local store {self.settings.store} could not take {len(self.unstored)} "
                f"test(s), whose records are lost (their outcomes are not); the first: "
                f"{self.unstored[0]}"
            )
        summary = ProcessSummary(
            self.worker,
            self.device,
            errors=errors,
            foreign_tags=self.foreign_tags,
            sink=self.sink.notes(),
        )
        summary.checks = list(self.gate.checks)
        summary.no_history = sorted(self.gate.no_history)
        summary.budget_use = self.gate.use  # the controller merges the workers'
        if self.gate.baselines is not None:
            summary.errors += self._unread_baselines(self.gate.baselines.errors, summary)
        delivery = summary.sink.team_error
        if delivery is not None:  # a read that failed as the delivery did: said once, there
            summary.errors = [e for e in summary.errors if delivery not in e]
        return summary

    def _unread_baselines(self, unread: list[str], summary: ProcessSummary) -> list[str]:
        """The baselines the gate could not read, a line a key; those of the team store's
        history, which failed for one cause, in one line (the cause said there unless the
        delivery's line or the run's start said it already)."""
        team = self.team_error
        if team is None or self.settings.baseline != "local":
            return list(unread)
        keys = [e for e in unread if team in e]
        lines = [e for e in unread if team not in e]
        if keys:
            said = team == summary.sink.team_error or any(team in e for e in summary.errors)
            lines.append(
                f"no regression verdict for {len(keys)} key(s): the team store's history "
                "could not be read" + ("" if said else f" ({team})")
            )
        return lines

    def _worth_saying(self, summary: ProcessSummary) -> bool:
        """Whether a run that recorded nothing still has something for its summary: an error,
        a budget or regression checked, a budget nobody used."""
        unused = self.gate.unused_budgets()
        return bool(summary.errors or summary.checks or summary.no_history or unused)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        nothing = self.summary == RunSummary()
        if self.workerinput is not None or not self.active or nothing:
            return
        from .report import render

        lines = render(
            self.summary,
            run=self.run,
            where=where(self.settings),
            push=push_command(self.settings),
            budgets=self.settings.budgets,
        )
        if not lines:
            return
        terminalreporter.write_sep("=", "userflow")
        for text, markup in lines:
            terminalreporter.write_line(text, **markup)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.history is not None and self.history is not self.store:
            self.history.close()
        if self.store is not None:
            self.store.close()


def push_command(settings: Settings) -> str:
    """The command that sends this run's pending uploads: with ``--store`` when the store is
    not the default, which ``pytest-userflow`` would not find by itself."""
    if "store" not in settings.given:
        return "pytest-userflow push"
    return f"pytest-userflow --store {shlex.quote(str(settings.store))} push"
