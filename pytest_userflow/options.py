"""The settings' table: each one's option, ini key, environment variable, default and help,
declared once for pytest's options and ini keys and the CLI's arguments (``settings`` reads
and checks the values given, by name: command line > environment > ini > default).

Every pytest process with the plugin installed loads this module through ``plugin``: it is
a table of plain values and imports nothing, not even pytest.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import os
from typing import Any

BACKENDS = ("auto", "local", "headspin", "off")
APIS = ("v0", "legacy")
BASELINES = ("off", "local", "headspin")
MODES = ("fail", "warn")
DEFAULT_FLUSH_TIMEOUT = 60.0
DEFAULT_REGRESSION = 20.0
DEFAULT_BASELINE_RUNS = 10
#: HeadSpin's API base, and the variables its token and URL are read from.
DEFAULT_URL = "https://api-dev.headspin.io"
TOKEN_ENV = "HEADSPIN_API_TOKEN"
URL_ENV = "HEADSPIN_API_URL"
#: The local store, relative to the rootdir (the plugin) or the working folder (the CLI).
DEFAULT_STORE = ".userflow/userflow.db"
#: The store setting from the environment, between the command line and the ini file.
STORE_ENV = "USERFLOW_STORE"
#: How many times its noise a change must pass to count (the gate's and compare's default).
DEFAULT_NOISE = 3.0


class Setting:
    """One setting: its field of ``settings.Settings``, its pytest option and ini key, its
    environment variable, its default, and how a given value is read (*parse*: the name of
    one of ``settings.PARSERS``; *choices* and *what* are its arguments)."""

    __slots__ = (
        "action", "choices", "cli", "default", "dest", "env", "gate", "help", "ini",
        "linelist", "metavar", "name", "option", "parse", "what",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        option: str | None,
        help: str,
        *,
        ini: str | None = None,
        env: str | None = None,
        default: Any = None,
        parse: str = "text",
        choices: tuple[str, ...] = (),
        what: str = "",
        metavar: str | None = None,
        action: str | None = None,
        linelist: bool = False,
        cli: tuple[str, ...] = (),
        gate: bool = False,
        dest: str = "",
    ) -> None:
        self.name = name
        self.option = option
        self.help = help
        self.ini = ini
        self.env = env
        self.default = default
        self.parse = parse
        self.choices = choices
        self.what = what
        self.metavar = metavar
        #: ``append`` (repeatable) or ``store_true`` (a flag); None: one value.
        self.action = action
        self.linelist = linelist
        #: The CLI's own flags for it (the first names it in errors); the CLI reads every
        #: setting from the environment and the ini, and takes on its command line those it
        #: acts on.
        self.cli = cli
        #: A regression gate setting: on the command line it needs the gate on.
        self.gate = gate
        self.dest = dest or (option[2:].replace("-", "_") if option else "")

    def full_help(self) -> str:
        """The option's help, with its ini key, variable and default."""
        said = [f"ini: {self.ini}"] if self.ini else []
        said += [f"env: {self.env}"] if self.env else []
        if isinstance(self.default, float):
            said.append(f"default {self.default:g}")
        elif isinstance(self.default, (str, int)) and not isinstance(self.default, bool):
            said.append(f"default {self.default}")
        return f"{self.help} ({'; '.join(said)})" if said else self.help


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "flow",
        "--userflow",
        "user flow for tests that carry no @pytest.mark.userflow marker",
        ini="userflow_name",
        metavar="NAME",
    ),
    Setting(
        "backend",
        "--userflow-backend",
        "where measurements go: auto is headspin when a token is set, else local",
        ini="userflow_backend",
        default="auto",
        parse="choice",
        choices=BACKENDS,
        metavar="{auto,local,headspin,off}",
    ),
    Setting(
        "token",
        "--headspin-token",
        "HeadSpin API token; never printed or stored",
        env=TOKEN_ENV,
        parse="token",
        metavar="TOKEN",
        cli=("--headspin-token",),
    ),
    Setting(
        "url",
        "--headspin-url",
        "HeadSpin API base URL",
        ini="headspin_url",
        env=URL_ENV,
        default=DEFAULT_URL,
        parse="url",
        metavar="URL",
        cli=("--headspin-url",),
    ),
    Setting(
        "store",
        "--userflow-store",
        "the history: a SQLite file (a path or sqlite:///path), also the upload spool, or a "
        "PostgreSQL team store postgresql://user@host:5432/db (the [postgres] extra)",
        ini="userflow_store",
        env=STORE_ENV,
        default=DEFAULT_STORE,
        parse="store",
        metavar="PATH_OR_URL",
        cli=("--store", "--userflow-store"),
    ),
    Setting(
        "outbox",
        "--userflow-outbox",
        "this machine's outbox, a SQLite file: each test is committed there first, and sent "
        "from there to a PostgreSQL store and HeadSpin (default: the SQLite store, else "
        f"{DEFAULT_STORE})",
        ini="userflow_outbox",
        parse="outbox",
        metavar="PATH",
        cli=("--outbox", "--userflow-outbox"),
    ),
    Setting(
        "devices",
        "--userflow-device",
        "device address device_id@hostname; repeat for one xdist worker per device",
        ini="userflow_devices",
        default=(),
        parse="devices",
        metavar="ADDR",
        action="append",
        linelist=True,
        dest="userflow_devices",
    ),
    Setting(
        "api",
        "--userflow-api",
        "upload through /v0/userflows/... (v0) or /v0/perftests/upload (legacy)",
        ini="userflow_api",
        default="v0",
        parse="choice",
        choices=APIS,
        metavar="{v0,legacy}",
    ),
    Setting(
        "report",
        "--userflow-report",
        "write a JSON report of what was recorded and where it went",
        parse="output",
        metavar="PATH",
    ),
    Setting(
        "html",
        "--userflow-html",
        "write the HTML report of the trends at the end of the run (the [html] extra; "
        "pytest-userflow report makes the same)",
        parse="output",
        metavar="PATH",
    ),
    Setting(
        "markdown",
        "--userflow-markdown",
        "write a GitHub-flavoured markdown summary of the run at its end, for a CI page or a "
        "pull-request comment (appended to when it is $GITHUB_STEP_SUMMARY)",
        parse="output",
        metavar="PATH",
    ),
    Setting(
        "dry_run",
        "--userflow-dry-run",
        "send nothing: print the HeadSpin requests that would be sent",
        default=False,
        action="store_true",
    ),
    Setting(
        "flush_timeout",
        "--userflow-flush-timeout",
        "longest wait at session end for pending uploads; the rest stays in the spool for "
        "'pytest-userflow push'",
        ini="userflow_flush_timeout",
        default=DEFAULT_FLUSH_TIMEOUT,
        parse="number",
        what="a number of seconds >= 0",
        metavar="SECONDS",
    ),
    Setting(
        "budgets",
        None,
        "budgets, one a line: 'flow :: key <= value' or 'flow :: key >= value' (flow * for any)",
        ini="userflow_budgets",
        default=(),
        parse="budgets",
        linelist=True,
    ),
    Setting(
        "directions",
        None,
        "which way keys are better, one a line: 'flow :: key lower|higher|ignore' (flow * for any)",
        ini="userflow_directions",
        default=(),
        parse="directions",
        linelist=True,
    ),
    Setting(
        "min_changes",
        None,
        "the least change of a key that 'changes', the report and the run's change line "
        "count, one a line: 'flow :: key PCT%' (flow * for any); without one, the key's own "
        "noise decides",
        ini="userflow_min_change",
        default=(),
        parse="min_changes",
        linelist=True,
    ),
    Setting(
        "baseline",
        "--userflow-baseline",
        "regression gate: compare each value with the median of its last passed values in "
        "the local store or on HeadSpin",
        ini="userflow_baseline",
        default="off",
        parse="choice",
        choices=BASELINES,
        metavar="{off,local,headspin}",
    ),
    Setting(
        "baseline_branch",
        "--userflow-baseline-branch",
        "the branch whose history is the baseline: a run on another branch is gated against "
        "it, up to where the run's branch forked from it (default: a pull request's base, "
        "else main, else master)",
        ini="userflow_baseline_branch",
        env="USERFLOW_BASELINE_BRANCH",
        metavar="BRANCH",
        cli=("--baseline-branch",),
    ),
    Setting(
        "regression",
        "--userflow-regression",
        "a value worse than its baseline by more than PCT percent is a regression",
        ini="userflow_regression",
        default=DEFAULT_REGRESSION,
        parse="number",
        what="a percentage >= 0",
        metavar="PCT",
        gate=True,
    ),
    Setting(
        "baseline_runs",
        "--userflow-baseline-runs",
        "the baseline is the median of the last N passed values",
        ini="userflow_baseline_runs",
        default=DEFAULT_BASELINE_RUNS,
        parse="whole",
        what="a whole number >= 1",
        metavar="N",
        gate=True,
    ),
    Setting(
        "noise",
        "--userflow-noise",
        "a regression must also be worse than K times the baseline's noise (1.4826 x its "
        "median absolute deviation); 0: the threshold alone",
        ini="userflow_noise",
        default=DEFAULT_NOISE,
        parse="number",
        what="a number >= 0",
        metavar="K",
        gate=True,
    ),
    Setting(
        "regression_mode",
        "--userflow-regression-mode",
        "a regression fails the test or only shows in the summary",
        ini="userflow_regression_mode",
        default="fail",
        parse="choice",
        choices=MODES,
        metavar="{fail,warn}",
        gate=True,
    ),
)


def add_options(parser: Any) -> None:
    """The table's options and ini keys, in the group "userflow" of ``pytest --help``."""
    group = parser.getgroup("userflow", "record performance measurements into user flows")
    for setting in SETTINGS:
        if setting.option:
            extra: dict[str, Any] = {"action": setting.action} if setting.action else {}
            if setting.action == "store_true":
                extra["default"] = False
            else:
                extra["metavar"] = setting.metavar
            group.addoption(setting.option, dest=setting.dest, help=setting.full_help(), **extra)
        if setting.ini:
            if setting.linelist:
                parser.addini(setting.ini, setting.help, type="linelist", default=[])
            else:
                parser.addini(setting.ini, setting.help, default="")


def given(config: Any) -> bool:
    """Whether the project set anything of ours: an option, an ini key or a variable (a
    run that records nothing and was told nothing says nothing, and reads nothing)."""
    option = config.option
    for setting in SETTINGS:
        if setting.option and getattr(option, setting.dest, None) not in (None, False, []):
            return True
        if setting.ini and config.getini(setting.ini) not in ("", []):
            return True
        if setting.env and os.environ.get(setting.env, "").strip():
            return True
    return False


def configured_devices(config: Any) -> list[str]:
    """The device addresses as given: ``--userflow-device`` wins over the ini key."""
    return list(config.getoption("userflow_devices") or config.getini("userflow_devices") or [])
