"""The values pytest-userflow records, their validation, and the outcome-to-status rules.

No pytest import: the store, the client and the CLI use this module too. Reports are read
by their attributes (``when``, ``outcome``, ``longrepr``, ``wasxfail``).

>>> Measurement.create("Login Time", 1.25, units="seconds")
Measurement(key='Login Time', value=1.25, type=None, units='seconds')

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import random
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from .options import DEFAULT_URL, TOKEN_ENV, URL_ENV

if TYPE_CHECKING:
    from .gate import BudgetUse, Check

Value = int | float | str

#: Statuses a test can have in a user flow (the API document's spelling).
STATUSES = ("Passed", "Failed", "Excluded")
#: Statuses the measurement listing filters on (``status=`` query parameter).
FILTER_STATUSES = ("passed", "failed", "not_set", "excluded")
#: A test's own outcomes, which the history filters on apart from its status: a test that
#: only the gate failed has the status Failed (as HeadSpin has it) and the outcome passed.
OUTCOMES = ("passed", "failed", "excluded")
#: The tests whose values the summaries and ``stats`` count, as the API's listing does by default.
COUNTED_STATUSES = ("Passed", "Failed")
#: The columns of the API's measurement listing, in the API's CSV order.
API_COLUMNS = (
    "user_flow_id",
    "user_flow_name",
    "perf_event_id",
    "event_time",
    "session_id",
    "perf_key_id",
    "key_name",
    "key_type",
    "key_units",
    "value",
)
#: The ints the store keeps (SQLite's 64-bit INTEGER).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: The API document's limit for a status message we send.
MAX_STATUS_MESSAGE = 255
#: The longest key, type or units we accept, and the longest string value.
MAX_LABEL = 255
MAX_TEXT = 64 * 1024

#: The node id of the record of values that belong to the whole run (``userflow_session``),
#: and its flow when neither it nor --userflow names one.
SESSION_NODEID = "userflow_session"
SESSION_FLOW = "pytest session"
#: What to do when vl-convert-python is missing.
NEEDS_EXTRA = (
    "the HTML report needs vl-convert-python, which bundles its charts into the page: "
    "pip install 'pytest-userflow[html]'"
)


class UserflowError(Exception):
    """Base of every error pytest-userflow raises on purpose."""

    __module__ = "pytest_userflow"  # a traceback names it where users import it


class MeasurementError(UserflowError, ValueError):
    """A measurement, status or identifier that the API would not accept."""

    __module__ = "pytest_userflow"


class UserflowWarning(UserWarning):
    """A choice pytest-userflow made for you that you may not have meant (pytest lists it)."""

    __module__ = "pytest_userflow"


def _where(where: str | None) -> str:
    return f" in {where}" if where else ""


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float that statistics may use (bool is not one).

    >>> is_number(1.5), is_number(True), is_number("1.5")
    (True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: What a terminal obeys rather than shows: C0 and C1 controls (escape sequences, line
#: breaks), DEL, and the marks that reorder text (bidirectional overrides and isolates).
CONTROLS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def escape_controls(text: str) -> str:
    r"""*text* with its control characters (``CONTROLS``) written as escapes, for a terminal.

    >>> escape_controls("a\x1b[2J\nb\u202e")
    'a\\x1b[2J\\nb\\u202e'
    """
    return CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def check_text(
    name: str,
    value: object,
    where: str | None = None,
    *,
    required: bool = True,
    limit: int = MAX_LABEL,
    label: bool | None = None,
) -> str | None:
    """*value* as an exact str that the store and the wire can carry, or MeasurementError.

    A str subclass (a StrEnum member, numpy's str_) is kept as its text. Refused: a
    non-str, an empty or blank required text, more than *limit* characters, a NUL, and
    what UTF-8 cannot encode (a lone surrogate). A *label* (a key, type, units or flow name;
    by default, a text of at most ``MAX_LABEL`` characters) is shown on terminals and in
    charts as it is: one with a control character (``CONTROLS``) is refused too.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if (
        value.__class__ is str
        and value.isprintable()  # no control, NUL or lone surrogate: what most labels are
        and len(value) <= limit
        and (not required or (value and not value.isspace()))
    ):
        return value
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise MeasurementError(
            f"{name} must be a str{'' if required else ' or None'}, "
            f"got {type(value).__name__} {value!r}{_where(where)}"
        )
    text = value if value.__class__ is str else str.__str__(value)
    if required and not text.strip():
        raise MeasurementError(f"{name} must be a non-empty str, got {text!r}{_where(where)}")
    if len(text) > limit:
        raise MeasurementError(
            f"{name} is {len(text)} characters long, more than the {limit} allowed: "
            f"{text[:40]!r}...{_where(where)}"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MeasurementError(
                f"{name} cannot be encoded as UTF-8 ({exc.reason} at position {exc.start}): "
                f"{text[:40]!r}{_where(where)}"
            ) from None
    if "\x00" in text:
        raise MeasurementError(f"{name} holds a NUL character: {text[:40]!r}{_where(where)}")
    if (limit <= MAX_LABEL if label is None else label) and (bad := CONTROLS.search(text)):
        raise MeasurementError(
            f"{name} holds the control character {bad.group()!r} at position "
            f"{bad.start()} (labels are shown on terminals as they are): {text[:40]!r}"
            f"{_where(where)}"
        )
    return text


def check_value(value: object, *, key: str = "?", where: str | None = None) -> Value:
    """Return *value* as the API takes it, or raise :class:`MeasurementError`.

    A finite int or float (any real number type, numpy's included) or a str of at most
    ``MAX_TEXT`` characters. bool is refused even though it is an int: it is almost always
    a mistake. An int must fit in 64 bits, as the store (SQLite) keeps it.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    kind = value.__class__
    if kind is float:
        if value - value == 0.0:  # type: ignore[operator]  # finite: inf - inf and nan are nan
            return value  # type: ignore[return-value]
    elif kind is int and INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        text = check_text(
            f"value for key {key!r}", value, where, required=False, limit=MAX_TEXT, label=False
        )
        assert text is not None
        return text
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MeasurementError(
            f"value for key {key!r} must be a finite int, float or str, "
            f"got {type(value).__name__} {value!r}{_where(where)}"
        )
    if isinstance(value, numbers.Integral):
        integer = int(value)
        if not INT_MIN <= integer <= INT_MAX:
            raise MeasurementError(
                f"value for key {key!r} is an int beyond 64 bits ({integer}), which the store "
                f"cannot keep; pass it as a float (float(value)){_where(where)}"
            )
        return integer
    number = float(value)
    if not math.isfinite(number):
        raise MeasurementError(
            f"value for key {key!r} must be finite, got {number!r}{_where(where)}"
        )
    return number


class Measurement(NamedTuple):
    """One key/value pair of a test, with the optional type (category) and units."""

    key: str
    value: Value
    type: str | None = None
    units: str | None = None

    @classmethod
    def create(
        cls,
        key: object,
        value: object,
        *,
        type: object = None,
        units: object = None,
        where: str | None = None,
    ) -> Measurement:
        """Validate and build: the one check every measurement passes, wherever it comes
        from (``record_measurement``, its timer, a hook, the client). *where* names the
        test (or call) in error messages."""
        __tracebackhide__ = True  # pytest shows the caller's line, not ours
        checked_key = check_text("key", key, where)
        assert checked_key is not None
        # tuple's own constructor: the named tuple's __new__ is one more Python call a value
        # (it checks no arity: a field added to the class must be added here too)
        return tuple.__new__(
            cls,
            (
                checked_key,
                check_value(value, key=checked_key, where=where),
                None if type is None else check_text("type", type, where, required=False),
                None if units is None else check_text("units", units, where, required=False),
            ),
        )

    @classmethod
    def coerce(cls, item: object, *, where: str | None = None) -> Measurement:
        """Check a Measurement or a ``{key, value, type?, units?}`` mapping."""
        __tracebackhide__ = True  # pytest shows the caller's line, not ours
        if isinstance(item, Measurement):
            return cls.create(item.key, item.value, type=item.type, units=item.units, where=where)
        if isinstance(item, Mapping):
            unknown = set(item) - {"key", "value", "type", "units"}
            if unknown or "key" not in item or "value" not in item:
                raise MeasurementError(
                    "a measurement mapping needs 'key' and 'value' (and optionally 'type', "
                    f"'units'), got keys {sorted(map(str, item))}{_where(where)}"
                )
            return cls.create(
                item["key"],
                item["value"],
                type=item.get("type"),
                units=item.get("units"),
                where=where,
            )
        raise MeasurementError(
            f"a measurement must be a Measurement or a mapping, "
            f"got {type(item).__name__}{_where(where)}"
        )

    def to_api(self) -> dict[str, Any]:
        """The measurement as an element of the API's ``data`` list."""
        data: dict[str, Any] = {"key": self.key, "value": self.value}
        if self.type is not None:
            data["type"] = self.type
        if self.units is not None:
            data["units"] = self.units
        return data


#: A measurement's (key, type): what names it in its test.
_KEY_TYPE = operator.itemgetter(0, 2)


def dedupe(measurements: Sequence[Measurement]) -> list[Measurement]:
    """Keep the last value of each (key, type), as the API does when it overwrites."""
    if len(set(map(_KEY_TYPE, measurements))) == len(measurements):  # most tests
        return list(measurements)
    last: dict[tuple[str, str | None], Measurement] = {}
    for m in measurements:
        last.pop((m.key, m.type), None)  # the order is that of the last values
        last[(m.key, m.type)] = m
    return list(last.values())


def normalize_status(status: object, *, where: str | None = None) -> str:
    """``"passed"`` -> ``"Passed"``; anything but the three statuses is an error."""
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(status, str):
        for known in STATUSES:
            if status.strip().lower() == known.lower():
                return known
    raise MeasurementError(
        f"status must be one of {', '.join(STATUSES)}, got {status!r}{_where(where)}"
    )


def normalize_filter_status(status: object) -> str:
    """A status for the listing filter: passed, failed, not_set or excluded."""
    if isinstance(status, str):
        value = status.strip().lower().replace(" ", "_").replace("-", "_")
        if value in FILTER_STATUSES:
            return value
    raise MeasurementError(
        f"status filter must be one of {', '.join(FILTER_STATUSES)}, got {status!r}"
    )


def truncate_message(message: str | None, limit: int = MAX_STATUS_MESSAGE) -> str | None:
    """One line, at most *limit* characters (an ellipsis marks a cut), with no NUL (which
    neither a store nor every server takes: a test's failure text may hold one)."""
    if message is None:
        return None
    line = " ".join(message.replace("\x00", "\ufffd").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_session_id(session_id: object, *, where: str | None = None) -> str:
    """A HeadSpin capture session id is a UUID; return it in canonical form."""
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    if isinstance(session_id, str):
        try:
            return str(uuid.UUID(session_id.strip()))
        except ValueError:
            pass
    raise MeasurementError(
        f"session_id must be a HeadSpin session UUID such as "
        f"'9f527e3f-daa1-11ec-ac12-06c4c57ba6cd', got {session_id!r}{_where(where)}"
    )


def check_device_address(address: object, *, where: str | None = None) -> str:
    """A device address is ``device_id@hostname``, both parts non-empty, no spaces."""
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(address, str):
        device_id, at, host = address.strip().partition("@")
        if (
            at
            and device_id
            and host
            and "@" not in host
            and not any(c.isspace() for c in address.strip())
        ):
            return address.strip()
    raise MeasurementError(
        f"device address must look like 'device_id@hostname' "
        f"(for example 'R58M41@proxy-us-mvo-5.headspin.io'), got {address!r}{_where(where)}"
    )


def headspin_token(given: str | None) -> str | None:
    """The API token: *given* (``--headspin-token``), else ``HEADSPIN_API_TOKEN``; None when
    there is none. A token that cannot go into a header safely is refused, and never shown."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    token = (given or "").strip() or env
    return check_token(token, "--headspin-token" if given else TOKEN_ENV) if token else None


def check_token(token: str, where: str) -> str:
    """*token* (from *where*) if an HTTP header can carry it; never shown."""
    token = token.strip()
    if not all(c.isprintable() and not c.isspace() for c in token):
        raise UserflowError(
            f"the HeadSpin API token from {where} holds spaces, a newline or other control "
            "characters, which an HTTP header cannot carry: set it to the token alone"
        )
    if not token.isascii():
        raise UserflowError(
            f"the HeadSpin API token from {where} holds a character that is not ASCII, which "
            "an HTTP header cannot carry: copy the token again"
        )
    return token


def headspin_url(given: str | None, fallback: str | None = None) -> str:
    """The API base: *given* (``--headspin-url``), else ``HEADSPIN_API_URL``, else
    *fallback* (the URL an upload was recorded with), else the default."""
    env = os.environ.get(URL_ENV, "").strip()
    source = "--headspin-url" if given else URL_ENV if env else "the configured URL"
    return check_url(given or env or fallback or DEFAULT_URL, source)


def check_url(url: str, where: str) -> str:
    """*url* (from *where*) without its trailing slash, if it is an http(s) URL without
    credentials: the token is the only credential sent, and they are never shown."""
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url if "@" not in url else "(not shown: it has an @)"
        raise UserflowError(f"{where}: {shown} is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise UserflowError(
            f"{where} holds a user name or password (user:pass@...); they are not shown, and "
            f"not used: the API token is the credential. Give the URL without them, such as "
            f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"
        )
    return url


# -- times ------------------------------------------------------------------------------------


def utc_text(ts: float) -> str:
    """UNIX seconds as the API writes event times: ``2022-03-30 16:48:22`` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def parse_time(value: str | float | int | datetime) -> float:
    """An ISO time (UTC unless it says otherwise), UNIX number or datetime to UNIX seconds."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.timestamp()
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return parse_time(datetime.fromisoformat(text))
        except ValueError:
            pass
    raise UserflowError(
        f"time must be ISO (such as '2022-03-30 16:48:22') or a UNIX timestamp, got {value!r}"
    )


# -- a run and its tests ---------------------------------------------------------------------


class RunInfo(NamedTuple):
    """What is known of one pytest run (also the head of the JSON report).

    *git_branch*: git's branch, else the CI's (a detached checkout); *base_branch*: a pull
    request's base, from the CI's variables. What the run is gated against, concluded at its
    start (``gate.lineage``): *baseline_branch*, the branch whose history is its baseline
    (None: the branch is unknown, every run's history is), and *fork_run*, the newest run of
    that branch on this run's own line of commits (None: that branch's newest runs).
    """

    run_id: str
    started_at: float
    host: str
    git_commit: str | None = None
    git_branch: str | None = None
    ci_build_id: str | None = None
    backend: str = "local"
    base_branch: str | None = None
    baseline_branch: str | None = None
    fork_run: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": utc_text(self.started_at),
            "started_ts": self.started_at,
            "host": self.host,
            "git_commit": self.git_commit,
            "git_branch": self.git_branch,
            "base_branch": self.base_branch,
            "baseline_branch": self.baseline_branch,
            "fork_run": self.fork_run,
            "ci_build_id": self.ci_build_id,
            "backend": self.backend,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], host: str) -> RunInfo:
        """The controller's RunInfo as an xdist worker on *host* receives it."""
        return cls(
            run_id=str(data["run_id"]),
            started_at=float(data["started_ts"]),
            host=host,
            git_commit=data.get("git_commit"),
            git_branch=data.get("git_branch"),
            ci_build_id=data.get("ci_build_id"),
            backend=str(data.get("backend", "local")),
            base_branch=data.get("base_branch"),
            baseline_branch=data.get("baseline_branch"),
            fork_run=data.get("fork_run"),
        )


@dataclass(frozen=True)
class Accept:
    """A level said to be intended (``pytest-userflow accept``): from run *from_run* on, the
    gate's baseline of the series it covers starts there. A series is the flow and key's, of
    one test (*nodeid*, parameters included) and *device*; None covers every test or device.

    The history fills in *id*, *from_started* (the run's start) and, once taken back,
    *undone_at*; *created_at*, *user* and *host* say when and by whom, *reason* why.
    """

    flow: str
    key: str
    from_run: str
    nodeid: str | None = None
    device: str | None = None
    reason: str | None = None
    user: str | None = None
    host: str | None = None
    created_at: float = 0.0
    id: int | None = None
    from_started: float | None = None
    undone_at: float | None = None

    def covers(self, flow: str, key: str, nodeid: str | None, device: str | None) -> bool:
        """Whether the series of *flow*, *key*, test *nodeid* and *device* is one of its own."""
        return (
            (self.flow, self.key) == (flow, key)
            and self.nodeid in (None, nodeid)
            and self.device in (None, device)
        )

    @property
    def who(self) -> str:
        return f"{self.user or '?'}@{self.host or '?'}"


def newest_accept(
    accepts: Sequence[Accept], flow: str, key: str, nodeid: str | None, device: str | None
) -> Accept | None:
    """The accept that decides a series' baseline: the newest made that covers it."""
    covering = [a for a in accepts if a.undone_at is None and a.covers(flow, key, nodeid, device)]
    return max(covering, key=lambda a: a.created_at, default=None)


def default_flow_name(nodeid: str) -> str:
    """A test with no marker and no --userflow records into a flow named after it
    (parametrized cases share it)."""
    return nodeid.split("[", 1)[0]


class TestRecord:
    """One test: what it recorded, and once it has ended, its status and where it went.

    Made at the test's setup and kept on ``item.stash``; at its teardown it is finished,
    written to the store once, and handed to ``pytest_userflow_flushed`` as it is.
    """

    __test__ = False  # not a test class, whatever pytest's collection thinks of the name

    def __init__(
        self,
        nodeid: str,
        flow: str | None,
        description: str | None = None,
        *,
        device: str | None = None,
        worker: str | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.marked_flow = flow  # from a marker or --userflow; None: named after the test
        self.description = description
        self.device_address = device
        self.worker = worker
        self.session_id: str | None = None
        self.status_override: tuple[str, str | None] | None = None
        self.measurements: list[Measurement] = []
        self.budgets: dict[str, Any] = {}  # key -> gate.Budget, from markers and budget=
        self.checked = 0  # how many measurements the gate has seen
        self.checks: list[Any] = []  # gate.Check: the budgets and regressions checked
        self.breaches: dict[str, str] = {}  # phase -> the gate's message, where it failed it
        self.attempts = 1  # pytest-rerunfailures: this is the attempts-th run of the test
        self.used = False  # the test asked for record_measurement or userflow
        self.reports: list[Any] = []  # setup, call, teardown: as they were logged
        self.started = time.time()
        self.ended = False
        # Set when the test ends: the status sent, and the test's own outcome, which differ
        # when the gate alone failed it (its verdict is in ``checks``).
        self.status = "Passed"
        self.status_message: str | None = None
        self.outcome = "Passed"
        self.event_ts = self.started
        self.duration = 0.0
        self.perf_event_id = ""
        self.destination = ""  # local, queued, local-only, dry-run, off, unstored

    @property
    def flow(self) -> str:
        return self.marked_flow or default_flow_name(self.nodeid)

    @property
    def wanted(self) -> bool:
        """Whether this test goes to a flow: it has a flow, or it recorded something."""
        return self.marked_flow is not None or self.used or bool(self.measurements)

    def end(self, status: str, message: str | None, outcome: str | None = None) -> None:
        """The test is over: its status (and its own *outcome*, the status when not given)
        is known and its measurements final."""
        now = time.time()
        self.ended = True
        self.status = status
        self.outcome = outcome or status
        self.status_message = truncate_message(message)
        self.event_ts, self.duration = now, now - self.started
        self.measurements = dedupe(self.measurements)
        self.perf_event_id = new_event_id()

    def __repr__(self) -> str:
        return f"<TestRecord {self.nodeid} {self.flow!r} {self.status} {self.destination}>"


#: The ids' own generator: a test that seeds the global ``random`` (``random.seed(42)`` in an
#: autouse fixture) must not give every test the same id. A forked child reseeds it.
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)


#: A version 4 UUID's fixed bits (version 4, RFC 4122's variant), and the bits they replace.
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48))


def new_event_id() -> str:
    """A local event id in the form of HeadSpin's: a random (version 4) UUID, not from the
    operating system's entropy: an id names a test in one store, it guards nothing. Written
    out here as ``uuid.UUID`` writes it, without building one (a write a test)."""
    h = f"{_IDS.getrandbits(128) & _UUID4_KEEP | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _crash_line(report: Any) -> str:
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        text = str(crash.message).strip()
        return text.splitlines()[0] if text else ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    lines = [line for line in str(longrepr or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _skip_reason(report: Any) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return _crash_line(report) or None


def own_outcome(reports: Sequence[Any], breaches: Mapping[str, str]) -> str:
    """The test's own outcome: its status had the gate not failed the phases in *breaches*
    (each of which passed before the gate failed it)."""
    return status_from_reports([r for r in reports if r.when not in breaches])[0]


def status_from_reports(
    reports: Sequence[Any], breaches: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """The DESIGN's rules: a failure anywhere is Failed; skip and xfail are Excluded;
    xpass (non-strict) and a passing call are Passed. *breaches*: the gate's message for
    each phase it failed, said plainly instead of the exception's line."""
    for report in reports:
        if report.outcome == "failed":
            line = (breaches or {}).get(report.when) or _crash_line(report)
            prefix = "" if report.when == "call" else f"error in {report.when}: "
            return "Failed", truncate_message(prefix + line if line else prefix + "failed")
    for report in reports:
        if report.outcome == "skipped":
            if getattr(report, "wasxfail", None) is not None:
                reason = str(report.wasxfail or "").removeprefix("reason: ")
                return "Excluded", truncate_message("xfail" + (f": {reason}" if reason else ""))
            skip = _skip_reason(report)
            return "Excluded", truncate_message("skipped" + (f": {skip}" if skip else ""))
    return "Passed", None


# -- the run's summary -----------------------------------------------------------------------


@dataclass
class FlowTally:
    """One flow's tests in a run: how many, by status, and where their measurements went."""

    tests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: destination ("local", "headspin", "pending", ...) -> measurements
    places: dict[str, int] = field(default_factory=dict)
    left_out: int = 0  # values of excluded tests, which the key statistics leave out
    by_gate: int = 0  # failed tests that only the gate failed

    def add(self, other: FlowTally) -> None:
        self.tests += other.tests
        self.left_out += other.left_out
        self.by_gate += other.by_gate
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        for place, n in other.places.items():
            self.places[place] = self.places.get(place, 0) + n


@dataclass
class KeyValues:
    """One key's values in a run (of passed and failed tests), per flow, type, device and
    units: a key recorded in two units is two of these, never one summary of both."""

    flow: str
    key: str
    type: str | None
    device: str | None
    units: str | None
    count: int = 0  # text values included
    values: list[float] = field(default_factory=list)  # the numeric ones, all of them

    @property
    def series(self) -> tuple[str, str, str | None, str | None, str | None]:
        return (self.flow, self.key, self.type, self.device, self.units)


@dataclass(frozen=True)
class SessionShare:
    """A HeadSpin session that several tests of one process attached."""

    flow: str
    tests: int
    status: str


@dataclass
class SinkNotes:
    """What one process's sender has to say: what it could not send, and why."""

    dry_run_lines: list[str] = field(default_factory=list)
    unroutable: list[str] = field(default_factory=list)  # no session and no device
    auth_error: str | None = None
    unreachable: str | None = None
    send_errors: list[str] = field(default_factory=list)
    shared_sessions: dict[str, SessionShare] = field(default_factory=dict)
    legacy: bool = False
    team_store: str | None = None  # the PostgreSQL team store fed, as shown
    team_delivered: int = 0  # tests delivered there by this process
    team_error: str | None = None  # why delivery there stopped

    def add(self, other: SinkNotes) -> None:
        """*other*'s notes with these: lists joined, the first error of a kind kept."""
        self.team_store = self.team_store or other.team_store
        self.team_delivered += other.team_delivered
        self.team_error = self.team_error or other.team_error
        self.dry_run_lines += other.dry_run_lines
        self.unroutable += other.unroutable
        self.auth_error = self.auth_error or other.auth_error
        self.unreachable = self.unreachable or other.unreachable
        self.send_errors += other.send_errors
        self.shared_sessions.update(other.shared_sessions)
        self.legacy = self.legacy or other.legacy


@dataclass
class ProcessSummary:
    """What one pytest process (an xdist worker, or the only one) recorded and has to say.

    An xdist worker hands it to the controller as plain JSON (:meth:`to_dict`); :func:`merge`
    makes one of several, with every value of a key, so its median is the run's.

    >>> ProcessSummary.from_dict(ProcessSummary(worker="gw0").to_dict()).worker
    'gw0'
    """

    worker: str | None = None
    device: str | None = None
    flows: dict[str, FlowTally] = field(default_factory=dict)
    keys: list[KeyValues] = field(default_factory=list)
    pending_tests: int = 0  # still to send, with pending_measurements measurements
    pending_measurements: int = 0
    pending_team: int = 0  # tests still to deliver to the team store
    reruns: list[tuple[str, int]] = field(default_factory=list)  # (test, attempts)
    #: the JSON report's tests, as the store gives them (only when a report is asked for)
    tests: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)  # budgets and regressions
    no_history: list[str] = field(default_factory=list)  # keys too new for a verdict
    budget_use: BudgetUse | None = None
    errors: list[str] = field(default_factory=list)
    foreign_tags: list[str] = field(default_factory=list)  # tests of a bare userflow marker
    sink: SinkNotes = field(default_factory=SinkNotes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "worker": self.worker,
            "device": self.device,
            "flows": {name: asdict(flow) for name, flow in self.flows.items()},
            "keys": [asdict(k) for k in self.keys],
            "pending_tests": self.pending_tests,
            "pending_measurements": self.pending_measurements,
            "pending_team": self.pending_team,
            "reruns": [list(rerun) for rerun in self.reruns],
            "tests": self.tests,
            "checks": [check._asdict() for check in self.checks],
            "no_history": self.no_history,
            "budget_use": self.budget_use.as_data() if self.budget_use else None,
            "errors": self.errors,
            "foreign_tags": self.foreign_tags,
            "sink": asdict(self.sink),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessSummary:
        from .gate import BudgetUse, Check  # the gate imports this module

        sink = dict(data["sink"])
        sink["shared_sessions"] = {
            sid: SessionShare(**share) for sid, share in sink["shared_sessions"].items()
        }
        use = data["budget_use"]
        return cls(
            worker=data["worker"],
            device=data["device"],
            flows={name: FlowTally(**flow) for name, flow in data["flows"].items()},
            keys=[KeyValues(**k) for k in data["keys"]],
            pending_tests=data["pending_tests"],
            pending_measurements=data["pending_measurements"],
            pending_team=data["pending_team"],
            reruns=[(nodeid, attempts) for nodeid, attempts in data["reruns"]],
            tests=list(data["tests"]),
            checks=[Check(**check) for check in data["checks"]],
            no_history=list(data["no_history"]),
            budget_use=None if use is None else BudgetUse.from_data(use),
            errors=list(data["errors"]),
            foreign_tags=list(data["foreign_tags"]),
            sink=SinkNotes(**sink),
        )


def merge(parts: Iterable[ProcessSummary]) -> ProcessSummary:
    """Several processes' summaries as one: counts added, each key's values joined (so its
    median is the median of all of them, not of the workers' medians), notes joined."""
    from .gate import BudgetUse  # the gate imports this module

    total = ProcessSummary(budget_use=BudgetUse())
    assert total.budget_use is not None
    keys: dict[tuple[str, str, str | None, str | None, str | None], KeyValues] = {}
    for part in parts:
        for name, flow in part.flows.items():
            total.flows.setdefault(name, FlowTally()).add(flow)
        for k in part.keys:
            into = keys.setdefault(k.series, KeyValues(*k.series))
            into.count += k.count
            into.values += k.values
        total.pending_tests += part.pending_tests
        total.pending_measurements += part.pending_measurements
        total.pending_team += part.pending_team
        total.reruns += part.reruns
        total.tests += part.tests
        total.checks += part.checks
        total.no_history = sorted({*total.no_history, *part.no_history})
        if part.budget_use is not None:
            total.budget_use.merge(part.budget_use)
        total.errors += part.errors
        total.foreign_tags += part.foreign_tags
        total.sink.add(part.sink)
    total.flows = dict(sorted(total.flows.items()))
    total.keys = list(keys.values())
    return total


@dataclass
class RunSummary:
    """The run's summary: each process's, and what the run's end found (in the process that
    prints the summary: the xdist controller, or the only one)."""

    processes: list[ProcessSummary] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)  # xdist workers that died
    errors: list[str] = field(default_factory=list)  # the run's own, after its processes'
    #: worse changes this run confirmed, as ``analysis.find_changes`` gives them
    changes: list[dict[str, Any]] = field(default_factory=list)
    unit_changes: list[str] = field(default_factory=list)  # tests whose units changed
    html: str | None = None  # the HTML report written, as the summary names it

    def total(self) -> ProcessSummary:
        """Every process's summary as one."""
        return merge(self.processes)
