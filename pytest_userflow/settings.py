"""The settings' one resolution, for the plugin and the CLI alike: each setting of the table
(``options.SETTINGS``) read from the command line, else the environment, else the ini file,
else its default, and checked; a bad value names where it came from.

>>> settings = resolve(Inputs(options={}, ini={"userflow_noise": "2"}))  # doctest: +SKIP

A pytest run loads this module only when the project set something of ours, or a test
records.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from .model import (
    NEEDS_EXTRA,
    MeasurementError,
    UserflowError,
    check_device_address,
    check_token,
    check_url,
)
from .options import (
    DEFAULT_BASELINE_RUNS,
    DEFAULT_NOISE,
    DEFAULT_REGRESSION,
    DEFAULT_STORE,
    SETTINGS,
    TOKEN_ENV,
    Setting,
)

if TYPE_CHECKING:
    import argparse

    from .gate import Budget, MinChangeLine


class SettingError(UserflowError):
    """A setting's value is wrong; the message names where the value came from."""


class Given(NamedTuple):
    """A setting's value as given: where it came from, and the folder a path in it is
    relative to (the caller's for the command line and environment, the rootdir for the ini)."""

    value: Any
    where: str
    base: Path


def _text(given: Given) -> Any:
    return given.value.strip() if isinstance(given.value, str) else given.value


def _choice(allowed: tuple[str, ...], given: Given) -> str:
    value = str(given.value).strip().lower()
    if value not in allowed:
        raise SettingError(f"{given.where}: {given.value!r} is not one of {', '.join(allowed)}")
    return value


def _number(what: str, given: Given, whole: bool = False) -> float:
    try:
        number = float(given.value)
    except ValueError:
        number = math.nan
    if not (number >= (1 if whole else 0) and math.isfinite(number)) or (
        whole and number != int(number)
    ):
        raise SettingError(f"{given.where}: {given.value!r} is not {what}")
    return int(number) if whole else number


def _store(given: Given) -> Path | str:
    from .storage import StoreError, check_location, is_url, sqlite_path

    # A URL stays as it is (Path would fold its //); a path is the caller's or the rootdir's.
    text = given.value.strip()
    try:
        check_location(text)
    except StoreError as exc:
        raise SettingError(str(exc)) from None
    return text if is_url(text) else Path(given.base, sqlite_path(text)).resolve()


def _outbox(given: Given) -> Path:
    from .storage import is_url, sqlite_path

    text = given.value.strip()
    if is_url(text):
        raise SettingError(f"{given.where}: the outbox is a SQLite file on this machine, a path")
    return Path(given.base, sqlite_path(text)).resolve()


def _devices(given: Given) -> tuple[str, ...]:
    devices: list[str] = []
    for raw in given.value:
        try:
            device = check_device_address(raw)
        except MeasurementError as exc:
            raise SettingError(f"{given.where}: {exc}") from None
        if device in devices:
            raise SettingError(
                f"{given.where}: the device {device} is given twice; each xdist worker "
                "drives a device of its own"
            )
        devices.append(device)
    return tuple(devices)


def _budgets(given: Given) -> tuple[Budget, ...]:
    from .gate import Budget

    return tuple(Budget.parse_line(line, where=given.where) for line in given.value)


def _min_changes(given: Given) -> tuple[MinChangeLine, ...]:
    from .gate import parse_min_change

    return tuple(parse_min_change(line, where=given.where) for line in given.value)


def _directions(given: Given) -> tuple[Budget, ...]:
    from .gate import parse_direction

    return tuple(parse_direction(line, where=given.where) for line in given.value)


def _output(given: Given) -> Path:
    """A file the run writes at its end, checked now: its folder must exist and be writable
    (it is not made for you), so that a typo costs a line, not the report."""
    path = Path(given.base, given.value)
    if path.is_dir():
        raise SettingError(f"{given.where}: {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise SettingError(
            f"{given.where}: the folder {path.parent} does not exist; make it first, or give "
            "another path"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise SettingError(f"{given.where}: the folder {path.parent} is not writable")
    return path


#: How each setting's given value is read, by the name its row in the table gives.
PARSERS: dict[str, Callable[[Setting, Given], Any]] = {
    "text": lambda setting, given: _text(given),
    "choice": lambda setting, given: _choice(setting.choices, given),
    "number": lambda setting, given: _number(setting.what, given),
    "whole": lambda setting, given: _number(setting.what, given, whole=True),
    "token": lambda setting, given: check_token(given.value, given.where),
    "url": lambda setting, given: check_url(given.value, given.where),
    "store": lambda setting, given: _store(given),
    "outbox": lambda setting, given: _outbox(given),
    "devices": lambda setting, given: _devices(given),
    "budgets": lambda setting, given: _budgets(given),
    "directions": lambda setting, given: _directions(given),
    "min_changes": lambda setting, given: _min_changes(given),
    "output": lambda setting, given: _output(given),
}


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
    min_changes: tuple[MinChangeLine, ...] = ()
    token: str | None = None
    html: Path | None = None
    outbox: Path | None = None  # None: the store's file (a SQLite store)
    markdown: Path | None = None
    baseline_branch: str | None = None
    #: Where each setting that was given came from (its flag, variable or ini key).
    given: Mapping[str, str] = {}

    def __repr__(self) -> str:  # never the token
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._fields if name != "token"
        )
        return f"Settings({shown})"


@dataclass(frozen=True)
class Inputs:
    """What the settings are read from: the command line's values by setting name (None:
    not given), the ini's by key (a str, or a list for a linelist), the environment."""

    options: Mapping[str, Any]
    ini: Mapping[str, Any]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    invocation_dir: Path = field(default_factory=Path.cwd)
    rootdir: Path = field(default_factory=Path.cwd)
    #: The flag that names a setting given on the command line (default: its pytest option).
    flags: Mapping[str, str] = field(default_factory=dict)


def _lines(value: Any) -> list[str]:
    """A linelist ini value as pytest reads it: one item a non-blank line."""
    items = value.split("\n") if isinstance(value, str) else list(value or ())
    return [item.strip() for item in items if str(item).strip()]


def pick(setting: Setting, inputs: Inputs) -> Given | None:
    """*setting*'s value by the documented precedence, or None when it was not given."""
    value = inputs.options.get(setting.name)
    if value not in (None, "", [], False):
        flag = inputs.flags.get(setting.name) or setting.option or setting.name
        return Given(value, flag, inputs.invocation_dir)
    env = inputs.env.get(setting.env, "").strip() if setting.env else ""
    if env:
        return Given(env, str(setting.env), inputs.invocation_dir)
    if setting.ini:
        ini = inputs.ini.get(setting.ini)
        if setting.linelist and _lines(ini):
            return Given(_lines(ini), f"ini key {setting.ini}", inputs.rootdir)
        text = "" if setting.linelist or ini is None else str(ini).strip()  # TOML: 2, not "2"
        if text:
            return Given(text, f"ini key {setting.ini}", inputs.rootdir)
    return None


def resolve(inputs: Inputs) -> Settings:
    """Every setting read and checked; a bad value is a SettingError naming where it came
    from. The default store, like the ini's, is relative to the rootdir."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for setting in SETTINGS:
        found = pick(setting, inputs)
        if found is None:
            default = Given(setting.default, "default", inputs.rootdir)
            values[setting.name] = _store(default) if setting.parse == "store" else setting.default
            continue
        try:
            values[setting.name] = PARSERS[setting.parse](setting, found)
        except MeasurementError as exc:  # the gate's budget lines say their own where
            raise SettingError(str(exc)) from None
        given[setting.name] = found.where
    if values["backend"] == "auto":
        values["backend"] = "headspin" if values["token"] else "local"
    values["outbox"] = _outbox_of(values["store"], values["outbox"], given.get("outbox"), inputs)
    return Settings(**values, given=given)


def _outbox_of(
    store: Path | str, outbox: Path | None, where: str | None, inputs: Inputs
) -> Path | None:
    """The outbox file: given, else with a PostgreSQL store the default path under the
    rootdir; None with a SQLite store, whose file is its own outbox."""
    from .storage import is_postgres

    if not is_postgres(store):
        if outbox is not None and outbox != store:
            raise SettingError(
                f"{where}: with a SQLite store the store is its own outbox ({store}); an outbox "
                "of its own goes with a postgresql:// store"
            )
        return None
    return outbox or Path(inputs.rootdir, DEFAULT_STORE).resolve()


def check_run(settings: Settings) -> None:
    """The checks across settings that a test run needs (the CLI reads settings it does not
    act on): a backend or baseline on HeadSpin has a token, the gate's options have a gate,
    an HTML report has something to draw and the extra to draw it."""
    given = settings.given
    if settings.backend == "headspin" and not settings.token and not settings.dry_run:
        raise SettingError(
            f"--userflow-backend headspin needs an API token: set {TOKEN_ENV} or pass "
            "--headspin-token"
        )
    if settings.baseline == "headspin" and not settings.token:
        raise SettingError(
            f"{given.get('baseline', '--userflow-baseline')} headspin needs an API token: set "
            f"{TOKEN_ENV} or pass --headspin-token"
        )
    for setting in SETTINGS:
        where = given.get(setting.name, "")
        if setting.gate and where.startswith("--") and settings.baseline == "off":
            raise SettingError(
                f"{where} has no effect without --userflow-baseline local or headspin "
                "(the regression gate is off)"
            )
    if settings.html is not None:  # said now, not after the tests
        if settings.backend == "off":
            raise SettingError("--userflow-html: the backend is off, so nothing is recorded")
        try:
            import vl_convert  # noqa: F401
        except ImportError:
            raise SettingError(f"--userflow-html: {NEEDS_EXTRA}") from None


# -- the CLI -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, *, given_only: bool = False) -> None:
    """The table's settings the CLI takes, and pytest's ``-c FILE`` and ``--rootdir`` that find
    the ini file. *given_only*: no defaults, for a command's parser, whose defaults would
    otherwise replace the values given before the command."""
    import argparse

    unset = argparse.SUPPRESS if given_only else None
    for setting in SETTINGS:
        if setting.cli:
            parser.add_argument(
                *setting.cli,
                dest=setting.dest,
                metavar=setting.metavar,
                default=unset,
                help=setting.full_help(),
            )
    parser.add_argument(
        "-c",
        "--config-file",
        dest="inifile",
        metavar="FILE",
        default=unset,
        help="the ini file to read the settings from, as pytest's -c (default: the one pytest "
        "finds from the current folder)",
    )
    parser.add_argument(
        "--rootdir",
        default=unset,
        help="the folder the ini file's paths are relative to, as pytest's --rootdir",
    )


def from_arguments(args: argparse.Namespace, invocation_dir: Path | None = None) -> Inputs:
    """The CLI's inputs: its arguments, the environment, and the ini file pytest would use
    from *invocation_dir* (default: the current folder), found as pytest finds it."""
    from _pytest.config.findpaths import determine_setup

    here = invocation_dir or Path.cwd()
    known: dict[str, Any] = {
        "inifile": getattr(args, "inifile", None),
        "args": [],
        "rootdir_cmd_arg": getattr(args, "rootdir", None),
        "invocation_dir": here,
        "override_ini": None,
    }
    wanted = inspect.signature(determine_setup).parameters  # pytest 9 added override_ini
    try:
        rootdir, _, inicfg, *_ = determine_setup(**{k: v for k, v in known.items() if k in wanted})
    except pytest.UsageError as exc:
        raise SettingError(str(exc)) from None
    return Inputs(
        options={s.name: getattr(args, s.dest, None) for s in SETTINGS if s.cli},
        # pytest 9 wraps each value with where it came from
        ini={key: getattr(value, "value", value) for key, value in inicfg.items()},
        invocation_dir=here,
        rootdir=Path(rootdir),
        flags={s.name: s.cli[0] for s in SETTINGS if s.cli},
    )


# -- pytest -----------------------------------------------------------------------------------


def from_config(config: pytest.Config, env: Mapping[str, str] | None = None) -> Inputs:
    """The inputs of a pytest run: its options, its ini file, the environment (*env*, else
    the process's)."""
    return Inputs(
        options={s.name: config.getoption(s.dest) for s in SETTINGS if s.option},
        ini={s.ini: config.getini(s.ini) for s in SETTINGS if s.ini},
        env=dict(os.environ) if env is None else env,
        invocation_dir=config.invocation_params.dir,
        rootdir=config.rootpath,
    )


def resolve_config(config: pytest.Config, env: Mapping[str, str] | None = None) -> Settings:
    """The run's settings, checked; a bad value is a UsageError naming where it came from."""
    try:
        settings = resolve(from_config(config, env))
        check_run(settings)
    except UserflowError as exc:
        raise pytest.UsageError(str(exc)) from None
    return settings


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


def where(settings: Settings) -> str:
    """Where the run's tests go, in a few words: the header's and the summary's."""
    from .storage import shown

    s = settings
    store = shown(s.store)
    if s.backend == "off":
        return "userflow backend off: nothing recorded"
    if s.dry_run:
        return f"dry run (nothing sent), recorded in the local store {s.outbox or store}"
    team = "" if s.outbox is None else f"team store {store} (outbox: {s.outbox})"
    if s.backend == "headspin":
        if team:
            return f"HeadSpin {s.url} and {team}"
        return f"HeadSpin {s.url} (spool: {store})"
    return team or f"local store {store}"
