"""pytest-userflow's pytest hooks: options, markers, fixtures, and the start of a run.

Every pytest process with the plugin installed loads this module, and most of them record
nothing: it imports only the settings' table (``options``) and the hook specifications.
The run (``recorder``) is made when a test first records: one that asks for a fixture of
ours, carries a ``userflow`` or ``userflow_budget`` marker, or runs under ``--userflow``.
Until then no setting is read unless the project set one, no store is opened and no git
command is run.

PYTEST_DONT_REWRITE: pytest rewrites the asserts of every module of a plugin it loads
through an entry point, at each start without a bytecode cache; ours are invariants, not
tests, so each module of the package says so in its docstring.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs, options

if TYPE_CHECKING:
    from .fixtures import RecordMeasurement, SessionRecorder, UserflowHandle
    from .model import TestRecord
    from .recorder import UserflowRun
    from .settings import Settings

MARKER = (
    "userflow(name, *, description=None): record this test into the user flow NAME "
    "(on a test, class or module; the nearest marker wins)"
)
BUDGET_MARKER = (
    "userflow_budget(key, max=None, min=None, direction=None): fail the test when KEY is above "
    "max or below min; direction lower, higher or ignore says which way it is better for the "
    "regression gate (repeatable; the nearest marker for a key wins)"
)
RUN_NAME = "userflow-run"
#: The fixtures that record into the running test's record.
RECORDING_FIXTURES = frozenset(("record_measurement", "userflow"))


class State:
    """What the plugin holds of one pytest process's run before a test records: the settings
    when the project set any (read and checked at the start), and the run once made."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        # Nothing is recorded when tests are only collected or their fixtures planned.
        self.recording = not (
            opt.collectonly or getattr(opt, "setupplan", False) or getattr(opt, "setuponly", False)
        )
        workerinput = getattr(config, "workerinput", None)  # xdist's, when it is a dict
        self.workerinput: dict[str, Any] | None = (
            workerinput if isinstance(workerinput, dict) else None
        )
        # The xdist controller runs no test: it merges what its workers hand back. xdist
        # distributes only with workers to start (--dist alone runs the tests here).
        self.controller = (
            self.workerinput is None
            and config.pluginmanager.hasplugin("xdist")
            and getattr(opt, "dist", "no") != "no"
            and bool(getattr(opt, "tx", None))
        )
        self.given = False  # whether the project set an option, ini key or variable of ours
        self.settings: Settings | None = None
        self.run: UserflowRun | None = None
        self.seed: dict[str, Any] | None = None  # the run's id and start, for every worker
        self.session: TestRecord | None = None  # what userflow_session recorded
        self.workers: dict[str, str | None] = {}  # the xdist controller's live workers' devices
        self.outer: tuple[pytest.Item | None, TestRecord | None] = (None, None)

    @property
    def flow(self) -> str | None:
        """The flow of tests with no marker (--userflow), None: each test's own."""
        return self.settings.flow if self.settings is not None else None

    @property
    def device(self) -> str | None:
        """This process's device: the controller's choice in an xdist worker."""
        if self.workerinput is not None:
            return self.workerinput.get("userflow_device")
        devices = self.settings.devices if self.settings is not None else ()
        return devices[0] if len(devices) == 1 else None

    def run_seed(self) -> dict[str, Any]:
        """The run's id and start: the controller's in an xdist worker, else made once."""
        if self.workerinput is not None and "userflow_run" in self.workerinput:
            return dict(self.workerinput["userflow_run"])
        if self.seed is None:
            self.seed = {"run_id": os.urandom(8).hex(), "started_at": time.time()}
        return self.seed


STATE_KEY = pytest.StashKey[State]()


class Running:
    """The test between its setup and the next test's: the function fixtures find its record
    here rather than take ``request``, which pytest resolves again at every use of a fixture
    that asks for it."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None
        self.record: TestRecord | None = None
        self.started = 0.0  # when the item's setup began


RUNNING = Running()


def settings_of(config: pytest.Config) -> Settings:
    """The run's settings, read and checked once."""
    state = config.stash[STATE_KEY]
    if state.settings is None:
        from .settings import check_workers, resolve_config

        # Read at the start when the project set anything of ours; else now, as the start
        # saw it: no variable of ours (a conftest may have set one since).
        env = os.environ if state.given else {}
        state.settings = resolve_config(config, env)
        check_workers(config, state.settings.devices)
    return state.settings


def run_of(config: pytest.Config) -> UserflowRun:
    """The run, made (and registered as a plugin) when first needed."""
    state = config.stash[STATE_KEY]
    if state.run is None:
        from .recorder import UserflowRun

        state.run = UserflowRun(config, settings_of(config), state)
        config.pluginmanager.register(state.run, RUN_NAME)
    return state.run


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # Several devices and no -n: one xdist worker per device. A wrapper runs before
    # xdist's own (tryfirst) pytest_cmdline_main, which turns numprocesses into workers.
    # Workers run this hook too: they must never spawn workers of their own.
    if (
        not hasattr(config, "workerinput")
        and config.pluginmanager.hasplugin("xdist")
        and getattr(config.option, "numprocesses", None) is None
        and not getattr(config.option, "tx", None)
        and getattr(config.option, "dist", "no") == "no"
        and len(devices := options.configured_devices(config)) > 1
    ):
        config.option.numprocesses = len(devices)
    return (yield)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    config.addinivalue_line("markers", BUDGET_MARKER)
    state = config.stash[STATE_KEY] = State(config)
    if config.option.help or config.option.version:
        return
    state.given = options.given(config)
    if not state.given:
        return
    s = settings_of(config)  # what the project set is checked now, not at a first record
    if (
        state.recording
        and state.workerinput is None
        and (s.report or s.markdown or s.html or s.budgets)
    ):
        run_of(config)  # they are written, or checked, at the end whatever records


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.run is not None:
        state.run.close()
        config.pluginmanager.unregister(state.run)
        state.run = None


def pytest_report_header(config: pytest.Config) -> str | None:
    # Said only where the project set something of ours: most runs that load the plugin
    # record nothing, and a run that records says where in its summary.
    state = config.stash[STATE_KEY]
    if not state.recording or state.settings is None or not state.given:
        return None
    from .settings import where

    devices = state.settings.devices
    return f"userflow: {where(state.settings)}" + (
        f", devices: {', '.join(devices)}" if devices else ""
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # An in-process inner run (pytester) gives the outer test's record back at its end.
    session.config.stash[STATE_KEY].outer = (RUNNING.item, RUNNING.record)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    RUNNING.item, RUNNING.record = session.config.stash[STATE_KEY].outer


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    RUNNING.item, RUNNING.record, RUNNING.started = item, None, time.time()
    state = item.config.stash[STATE_KEY]
    if state.recording and (
        state.flow is not None
        or not RECORDING_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        or any(_starts(mark) for mark in item.iter_markers())
    ):
        _start(item)


def _starts(mark: pytest.Mark) -> bool:
    """Whether *mark* makes its test record: a named ``userflow`` marker or a
    ``userflow_budget`` one (a bare userflow marker is another project's tag)."""
    return mark.name == "userflow_budget" or (
        mark.name == "userflow" and bool(mark.args or mark.kwargs)
    )


def _start(item: pytest.Item) -> TestRecord:
    """The running *item*'s record, made by the run (made first if need be)."""
    record = RUNNING.record = run_of(item.config).start_test(item, RUNNING.started)
    return record


def current_record() -> TestRecord:
    """The running test's record, made now for a test that asked for a fixture of ours by
    name (``request.getfixturevalue``); a run that records nothing (``--setup-only``) has
    none, and gets one that nothing keeps."""
    record = RUNNING.record
    item = RUNNING.item
    if record is None and item is not None and item.config.stash[STATE_KEY].recording:
        record = _start(item)
    if record is None:
        from .model import TestRecord

        record = TestRecord("(a test this run does not record)", None)
    record.used = True
    return record


@pytest.fixture
def record_measurement() -> RecordMeasurement:
    """Record a measurement for this test: ``record_measurement(key, value, type=, units=)``."""
    from .fixtures import RecordMeasurement

    return RecordMeasurement(current_record())


@pytest.fixture
def userflow() -> UserflowHandle:
    """This test's flow: ``.name``, ``.device``, ``.attach_session()``, ``.set_status()``."""
    from .fixtures import UserflowHandle

    return UserflowHandle(current_record())


@pytest.fixture(scope="session")
def userflow_device(pytestconfig: pytest.Config) -> str | None:
    """This worker's device (``device_id@hostname``) or None, to build a driver once."""
    return pytestconfig.stash[STATE_KEY].device


@pytest.fixture(scope="session")
def userflow_session(pytestconfig: pytest.Config) -> SessionRecorder:
    """Record values that belong to the whole run: ``userflow_session("Install Time", 12.5)``."""
    from .fixtures import SessionRecorder
    from .model import SESSION_FLOW, SESSION_NODEID, TestRecord

    state = pytestconfig.stash[STATE_KEY]
    if state.session is None:
        state.session = TestRecord(
            SESSION_NODEID,
            state.flow or SESSION_FLOW,
            device=state.device,
            worker=state.workerinput.get("workerid") if state.workerinput else None,
        )
        if state.recording:
            run_of(pytestconfig)  # it keeps the record at the session's end
    return SessionRecorder(state.session)


# -- the xdist controller: it hands the run to its workers and takes back their summaries ----


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    state = node.config.stash.get(STATE_KEY, None)
    if state is None:  # a config parsed but never configured (xdist's own tests make one)
        return
    node.workerinput["userflow_run"] = state.run_seed()  # one run id for every worker
    devices = state.settings.devices if state.settings is not None else ()
    if devices:
        from .xdist import device_for

        worker = str(node.gateway.id)
        device = device_for(worker, devices, set(state.workers.values()))
        state.workers[worker] = node.workerinput["userflow_device"] = device


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    config = node.config
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    device = state.workers.pop(str(node.gateway.id), None)
    output = getattr(node, "workeroutput", None) or {}
    # A worker that died without a summary may have kept tests in the store: read it when
    # there is one (the default store's file, when the project set nothing of ours).
    if "userflow" in output or (
        error is not None
        and state.recording
        and (state.settings is not None or config.rootpath.joinpath(options.DEFAULT_STORE).exists())
    ):
        from .xdist import worker_down

        worker_down(run_of(config), str(node.gateway.id), device, output.get("userflow"))
