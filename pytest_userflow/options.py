"""The plugin's options: declared once, resolved command line > environment > ini > default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

from .analysis import DEFAULT_NOISE
from .model import (
    DEFAULT_STORE,
    DEFAULT_URL,
    NEEDS_EXTRA,
    TOKEN_ENV,
    URL_ENV,
    MeasurementError,
    UserflowError,
    check_device_address,
    headspin_token,
    headspin_url,
)

if TYPE_CHECKING:
    from .gate import Budget

BACKENDS = ("auto", "local", "headspin", "off")
APIS = ("v0", "legacy")
DEFAULT_FLUSH_TIMEOUT = 60.0
#: The store setting from the environment, between the command line and the ini file.
STORE_ENV = "USERFLOW_STORE"
BASELINES = ("off", "local", "headspin")
MODES = ("fail", "warn")
DEFAULT_REGRESSION = 20.0
DEFAULT_BASELINE_RUNS = 10


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("userflow", "record performance measurements into user flows")
    group.addoption(
        "--userflow",
        dest="userflow",
        metavar="NAME",
        help="user flow for tests that carry no @pytest.mark.userflow marker (ini: userflow_name)",
    )
    group.addoption(
        "--userflow-backend",
        dest="userflow_backend",
        metavar="{auto,local,headspin,off}",
        help="where measurements go: auto (default) is headspin when a token is "
        "set, else local (ini: userflow_backend)",
    )
    group.addoption(
        "--headspin-token",
        dest="headspin_token",
        metavar="TOKEN",
        help=f"HeadSpin API token (env: {TOKEN_ENV}); never printed or stored",
    )
    group.addoption(
        "--headspin-url",
        dest="headspin_url",
        metavar="URL",
        help=f"HeadSpin API base URL (env: {URL_ENV}, ini: headspin_url; default {DEFAULT_URL})",
    )
    group.addoption(
        "--userflow-store",
        dest="userflow_store",
        metavar="PATH_OR_URL",
        help=f"the history: a SQLite file (a path or sqlite:///path), also the upload spool, "
        "or a PostgreSQL team store postgresql://user@host:5432/db (the [postgres] extra) "
        f"(ini: userflow_store; env: {STORE_ENV}; default {DEFAULT_STORE})",
    )
    group.addoption(
        "--userflow-outbox",
        dest="userflow_outbox",
        metavar="PATH",
        help="this machine's outbox, a SQLite file: each test is committed there first, and "
        "sent from there to a PostgreSQL store and HeadSpin (ini: userflow_outbox; default: "
        f"the SQLite store, else {DEFAULT_STORE})",
    )
    group.addoption(
        "--userflow-device",
        dest="userflow_devices",
        action="append",
        metavar="ADDR",
        help="device address device_id@hostname; repeat for one xdist worker per "
        "device (ini: userflow_devices)",
    )
    group.addoption(
        "--userflow-api",
        dest="userflow_api",
        metavar="{v0,legacy}",
        help="upload through /v0/userflows/... (v0, default) or /v0/perftests/upload "
        "(legacy) (ini: userflow_api)",
    )
    group.addoption(
        "--userflow-report",
        dest="userflow_report",
        metavar="PATH",
        help="write a JSON report of what was recorded and where it went",
    )
    group.addoption(
        "--userflow-html",
        dest="userflow_html",
        metavar="PATH",
        help="write the HTML report of the trends at the end of the run (the [html] extra; "
        "pytest-userflow report makes the same)",
    )
    group.addoption(
        "--userflow-dry-run",
        dest="userflow_dry_run",
        action="store_true",
        default=False,
        help="send nothing: print the HeadSpin requests that would be sent",
    )
    group.addoption(
        "--userflow-flush-timeout",
        dest="userflow_flush_timeout",
        metavar="SECONDS",
        help="longest wait at session end for pending uploads; the rest stays in the "
        f"spool for 'pytest-userflow push' (ini: userflow_flush_timeout; "
        f"default {DEFAULT_FLUSH_TIMEOUT:g})",
    )
    group.addoption(
        "--userflow-baseline",
        dest="userflow_baseline",
        metavar="{off,local,headspin}",
        help="regression gate: compare each value with the median of its last passed "
        "values in the local store or on HeadSpin (ini: userflow_baseline; "
        "default off)",
    )
    group.addoption(
        "--userflow-regression",
        dest="userflow_regression",
        metavar="PCT",
        help="a value worse than its baseline by more than PCT percent is a "
        f"regression (ini: userflow_regression; default {DEFAULT_REGRESSION:g})",
    )
    group.addoption(
        "--userflow-baseline-runs",
        dest="userflow_baseline_runs",
        metavar="N",
        help="the baseline is the median of the last N passed values "
        f"(ini: userflow_baseline_runs; default {DEFAULT_BASELINE_RUNS})",
    )
    group.addoption(
        "--userflow-noise",
        dest="userflow_noise",
        metavar="K",
        help="a regression must also be worse than K times the baseline's noise (1.4826 x "
        f"its median absolute deviation); 0: the threshold alone (ini: userflow_noise; "
        f"default {DEFAULT_NOISE:g})",
    )
    group.addoption(
        "--userflow-regression-mode",
        dest="userflow_regression_mode",
        metavar="{fail,warn}",
        help="a regression fails the test (default) or only "
        "shows in the summary (ini: userflow_regression_mode)",
    )
    parser.addini("userflow_name", "user flow for tests that carry no marker")
    parser.addini("userflow_backend", "auto, local, headspin or off", default="")
    parser.addini("headspin_url", f"HeadSpin API base URL (default {DEFAULT_URL})", default="")
    parser.addini(
        "userflow_store",
        f"the history: a SQLite file or a postgresql:// URL (default {DEFAULT_STORE})",
        default="",
    )
    parser.addini(
        "userflow_outbox",
        f"this machine's outbox, a SQLite file (default: the SQLite store, else {DEFAULT_STORE})",
        default="",
    )
    parser.addini(
        "userflow_devices",
        "device addresses device_id@hostname, one a line",
        type="linelist",
        default=[],
    )
    parser.addini("userflow_api", "v0 or legacy", default="")
    parser.addini(
        "userflow_flush_timeout", "seconds to wait for pending uploads at session end", default=""
    )
    parser.addini(
        "userflow_budgets",
        "budgets, one a line: 'flow :: key <= value' or 'flow :: key >= value' (flow * for any)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "userflow_baseline", "regression gate baseline: off, local or headspin", default=""
    )
    parser.addini("userflow_regression", "regression threshold in percent", default="")
    parser.addini(
        "userflow_baseline_runs", "how many last passed values make the baseline", default=""
    )
    parser.addini("userflow_regression_mode", "fail or warn", default="")
    parser.addini(
        "userflow_noise", "how many times the baseline's noise a regression must pass", default=""
    )
    parser.addini(
        "userflow_directions",
        "which way keys are better, one a line: 'flow :: key lower|higher|ignore' (flow * for any)",
        type="linelist",
        default=[],
    )


class Settings(NamedTuple):
    flow: str | None
    backend: str  # resolved: local, headspin or off
    url: str
    store: Path | str  # a SQLite file, or a URL
    devices: tuple[str, ...]
    api: str
    report: Path | None
    dry_run: bool
    flush_timeout: float
    budgets: tuple[Budget, ...] = ()
    baseline: str = "off"
    regression: float = DEFAULT_REGRESSION
    baseline_runs: int = DEFAULT_BASELINE_RUNS
    regression_mode: str = "fail"
    noise: float = DEFAULT_NOISE
    directions: tuple[Budget, ...] = ()
    token: str | None = None
    html: Path | None = None
    outbox: Path | None = None  # None: the store's file (a SQLite store)

    def __repr__(self) -> str:  # never the token, nor the store URL's password
        from .storage import shown

        fields = ", ".join(
            f"{name}={shown(self.store) if name == 'store' else getattr(self, name)!r}"
            for name in self._fields
            if name != "token"
        )
        return f"Settings({fields})"


def _pick(
    config: pytest.Config, option: str, ini: str | None, env: str | None = None
) -> tuple[str | None, str]:
    """(value, where it came from) by the documented precedence."""
    value = config.getoption(option)
    if value not in (None, ""):
        return str(value), "--" + option.replace("_", "-")  # dest names match the flags
    if env and os.environ.get(env, "").strip():
        return os.environ[env].strip(), f"environment variable {env}"
    if ini:
        ini_value = config.getini(ini)
        if isinstance(ini_value, str) and ini_value.strip():
            return ini_value.strip(), f"ini key {ini}"
    return None, "default"


def _choice(value: str | None, where: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value.strip().lower() not in allowed:
        raise pytest.UsageError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value.strip().lower()


def resolve(config: pytest.Config) -> Settings:
    """Read and check every option; a bad value is a UsageError naming where it came from."""
    flow, _ = _pick(config, "userflow", "userflow_name")
    backend_value, backend_where = _pick(config, "userflow_backend", "userflow_backend")
    backend = _choice(backend_value, backend_where, BACKENDS, "auto")
    try:
        token = headspin_token(config.getoption("headspin_token"))
        url = headspin_url(config.getoption("headspin_url"), config.getini("headspin_url").strip())
    except UserflowError as exc:
        raise pytest.UsageError(str(exc)) from None
    if backend == "auto":
        backend = "headspin" if token else "local"
    if backend == "headspin" and not token and not config.getoption("userflow_dry_run"):
        raise pytest.UsageError(
            f"--userflow-backend headspin needs an API token: set {TOKEN_ENV} or pass "
            "--headspin-token"
        )

    api_value, api_where = _pick(config, "userflow_api", "userflow_api")
    api = _choice(api_value, api_where, APIS, "v0")

    timeout_value, timeout_where = _pick(config, "userflow_flush_timeout", "userflow_flush_timeout")
    flush_timeout = DEFAULT_FLUSH_TIMEOUT
    if timeout_value is not None:
        try:
            flush_timeout = float(timeout_value)
        except ValueError:
            flush_timeout = float("nan")
        if not flush_timeout >= 0 or flush_timeout == float("inf"):
            raise pytest.UsageError(
                f"{timeout_where}: {timeout_value!r} is not a number of seconds >= 0"
            )

    from .storage import StoreError, check_location, is_url, sqlite_path

    # A path given on the command line or in the environment is the caller's; the ini's is
    # the project's, relative to its rootdir. A URL is left as it is (Path would fold its //).
    given = config.getoption("userflow_store") or os.environ.get(STORE_ENV, "").strip()
    if given:
        text, base = given, config.invocation_params.dir
    else:
        text, base = config.getini("userflow_store").strip() or DEFAULT_STORE, config.rootpath
    try:
        check_location(text)
    except StoreError as exc:
        raise pytest.UsageError(str(exc)) from None
    store = text if is_url(text) else Path(base, sqlite_path(text)).resolve()
    outbox = _outbox(config, store)

    devices_where = (
        "--userflow-device" if config.getoption("userflow_devices") else "ini key userflow_devices"
    )
    devices: list[str] = []
    for raw in configured_devices(config):
        try:
            device = check_device_address(raw)
        except MeasurementError as exc:
            raise pytest.UsageError(f"{devices_where}: {exc}") from None
        if device in devices:
            raise pytest.UsageError(
                f"{devices_where}: the device {device} is given twice; each xdist worker "
                "drives a device of its own"
            )
        devices.append(device)

    from .gate import Budget, parse_direction

    directions = []
    for line in config.getini("userflow_directions"):
        try:
            directions.append(parse_direction(line, where="ini key userflow_directions"))
        except MeasurementError as exc:
            raise pytest.UsageError(str(exc)) from None
    budgets = []
    for line in config.getini("userflow_budgets"):
        try:
            budgets.append(Budget.parse_line(line, where="ini key userflow_budgets"))
        except MeasurementError as exc:
            raise pytest.UsageError(str(exc)) from None
    baseline_value, baseline_where = _pick(config, "userflow_baseline", "userflow_baseline")
    baseline = _choice(baseline_value, baseline_where, BASELINES, "off")
    if baseline == "headspin" and not token:
        raise pytest.UsageError(
            f"{baseline_where} headspin needs an API token: set {TOKEN_ENV} or pass "
            "--headspin-token"
        )
    mode_value, mode_where = _pick(config, "userflow_regression_mode", "userflow_regression_mode")
    regression = _number(config, "userflow_regression", DEFAULT_REGRESSION, "a percentage >= 0")
    noise = _number(config, "userflow_noise", DEFAULT_NOISE, "a number >= 0")
    runs = _number(config, "userflow_baseline_runs", DEFAULT_BASELINE_RUNS, "a whole number >= 1")
    if runs < 1 or runs != int(runs):
        raise pytest.UsageError(f"userflow baseline runs: {runs:g} is not a whole number >= 1")

    for option in ("userflow_regression", "userflow_baseline_runs", "userflow_regression_mode",
                   "userflow_noise"):  # fmt: skip
        if config.getoption(option) not in (None, "") and baseline == "off":
            flag = "--" + option.replace("_", "-")
            raise pytest.UsageError(
                f"{flag} has no effect without --userflow-baseline local or headspin "
                "(the regression gate is off)"
            )
    report = _output_path(config, "userflow_report")
    html = _output_path(config, "userflow_html")
    if html is not None:  # said now, not after the tests
        if backend == "off":
            raise pytest.UsageError("--userflow-html: the backend is off, so nothing is recorded")
        try:
            import vl_convert  # noqa: F401
        except ImportError:
            raise pytest.UsageError(f"--userflow-html: {NEEDS_EXTRA}") from None
    return Settings(
        flow=flow,
        backend=backend,
        url=url,
        store=store,
        outbox=outbox,
        devices=tuple(devices),
        api=api,
        report=report,
        dry_run=bool(config.getoption("userflow_dry_run")),
        flush_timeout=flush_timeout,
        token=token,
        budgets=tuple(budgets),
        baseline=baseline,
        regression=regression,
        baseline_runs=int(runs),
        regression_mode=_choice(mode_value, mode_where, MODES, "fail"),
        noise=noise,
        directions=tuple(directions),
        html=html,
    )


def _outbox(config: pytest.Config, store: Path | str) -> Path | None:
    """The outbox file: given (command line, else ini), else with a URL store the default
    path under the rootdir; None with a SQLite store, whose file is its own outbox."""
    from .storage import is_postgres, is_url, sqlite_path

    given = config.getoption("userflow_outbox")
    if given:
        text, base, where = str(given), config.invocation_params.dir, "--userflow-outbox"
    else:
        text, base = config.getini("userflow_outbox").strip(), config.rootpath
        where = "ini key userflow_outbox"
    if text and is_url(text):
        raise pytest.UsageError(f"{where}: the outbox is a SQLite file on this machine, a path")
    path = Path(base, sqlite_path(text)).resolve() if text else None
    if not is_postgres(store):
        if path is not None and path != store:
            raise pytest.UsageError(
                f"{where}: with a SQLite store the store is its own outbox ({store}); an "
                "outbox of its own goes with a postgresql:// store"
            )
        return None
    return path or Path(config.rootpath, DEFAULT_STORE).resolve()


def _output_path(config: pytest.Config, option: str) -> Path | None:
    """A file the run writes at its end, checked now: its folder must exist and be writable
    (it is not made for you), so that a typo costs a line, not the report."""
    given = config.getoption(option)
    if not given:
        return None
    path = Path(config.invocation_params.dir, given)
    flag = "--" + option.replace("_", "-")
    if path.is_dir():
        raise pytest.UsageError(f"{flag}: {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise pytest.UsageError(
            f"{flag}: the folder {path.parent} does not exist; make it first, or give another path"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"{flag}: the folder {path.parent} is not writable")
    return path


def _number(config: pytest.Config, name: str, default: float, what: str) -> float:
    value, where = _pick(config, name, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= 0 or number == float("inf"):
        raise pytest.UsageError(f"{where}: {value!r} is not {what}")
    return number


def configured_devices(config: pytest.Config) -> list[str]:
    """The device addresses as given: ``--userflow-device`` wins over the ini key."""
    return list(config.getoption("userflow_devices") or config.getini("userflow_devices") or [])


def check_workers(config: pytest.Config, devices: tuple[str, ...]) -> None:
    """One xdist worker per device: the numbers must match (a UsageError otherwise)."""
    n = len(devices)
    if not n or hasattr(config, "workerinput"):
        return
    xdist = config.pluginmanager.hasplugin("xdist")
    distributed = xdist and getattr(config.option, "dist", "no") != "no"
    numprocesses = getattr(config.option, "numprocesses", None)
    workers = (numprocesses or len(getattr(config.option, "tx", None) or [])) if distributed else 0
    if n > 1 and not xdist:
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
