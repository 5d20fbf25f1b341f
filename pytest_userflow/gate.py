"""Performance budgets and the regression gate (no pytest import).

A *budget* bounds one key: ``<= max`` (lower is better) and/or ``>= min`` (higher is better,
frames per second for instance). The *regression gate* compares a value with the median of
the last N passed values of the same flow, key, test and device (its *baseline*) and calls it a
regression when it is worse by more than a percentage **and** by more than K times the
baseline's own noise (a robust spread: 1.4826 times the median absolute deviation, never less
than the step the values are written in). A baseline with no spread or a median near zero
decides in the key's units: inside the range it has shown is no regression. An *accept*
(``pytest-userflow accept``) says a new level is intended: the baselines of the series it
covers start at its run.

*Branches*: a run whose branch is known is gated against its *baseline branch*'s history (the
``userflow_baseline_branch`` setting, else a pull request's base, else ``main``, else
``master``): a run on that branch against the branch's earlier runs, a run on another branch
against the baseline branch's runs up to its *fork point* (the newest of them on the run's
own line of commits, where git can tell), never against other branches' runs. A run whose
branch is unknown is gated against every run, as before branches were known.

>>> Budget.parse_line("Login :: Login Time <= 2000", where="userflow_budgets")
Budget(flow='Login', key='Login Time', max=2000.0, min=None)

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .analysis import (
    CONFIRMED,
    Direction,
    MinChange,
    RunSeries,
    change_text,
    find_changes,
    median,
    percent_change,
    resolution,
    robust_spread,
    run_series,
)
from .model import (
    Accept,
    Measurement,
    MeasurementError,
    RunInfo,
    UserflowError,
    is_number,
)
from .options import DEFAULT_NOISE
from .storage import Query

if TYPE_CHECKING:
    from .settings import Settings
    from .storage import History

#: Fewer passed values than this in a baseline give no regression verdict.
MIN_HISTORY = 5
#: A worse change that began within this many runs, and this run confirms, is said at the end.
RECENT_RUNS = 5
#: Runs of history the end of a run looks at for such changes.
CHANGE_HISTORY = 50
#: Which way a key is better: ``lower`` (timings), ``higher`` (frames per second), or
#: ``ignore`` (a count or a build number: never a regression).
DIRECTIONS = ("lower", "higher", "ignore")
#: The baseline branch when none is set and no pull request names its base: the first of
#: these the history has runs of.
DEFAULT_BRANCHES = ("main", "master")
#: The baseline branch's newest runs the fork point is looked for in.
FORK_RUNS = 200


class BudgetExceeded(AssertionError):
    """A value over its budget, or regressed: the failure the test gets."""

    __module__ = "pytest_userflow"  # shown as pytest_userflow.BudgetExceeded


_LINE = re.compile(
    r"^\s*(?P<flow>.+?)\s*::\s*(?P<key>.+?)\s*(?P<op><=|>=)\s*(?P<value>[^\s#]+)\s*(?:#.*)?$"
)


def _bound(value: object, name: str, where: str) -> float | None:
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value):
        raise MeasurementError(f"{name} must be a finite number, got {value!r} in {where}")
    return float(value)


class Budget(NamedTuple):
    """Bounds of one key, and which way it is better; *flow* ``*`` means any flow."""

    flow: str
    key: str
    max: float | None = None
    min: float | None = None
    direction: str | None = None

    @classmethod
    def create(
        cls,
        flow: str,
        key: object,
        max: object = None,
        min: object = None,
        *,
        where: str,
        direction: object = None,
    ) -> Budget:
        if not isinstance(key, str) or not key.strip():
            raise MeasurementError(f"a budget needs a key, a non-empty str, got {key!r} in {where}")
        low, high = _bound(min, "min", where), _bound(max, "max", where)
        if direction is not None and direction not in DIRECTIONS:
            raise MeasurementError(
                f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r} in {where}"
            )
        if low is None and high is None and direction is None:
            raise MeasurementError(
                f"a budget for {key!r} needs max=, min= or direction= in {where}"
            )
        if low is not None and high is not None and low > high:
            raise MeasurementError(
                f"the budget for {key!r} has min {low:g} > max {high:g} in {where}"
            )
        return cls(flow, key, high, low, direction)

    @classmethod
    def parse_line(cls, line: str, *, where: str) -> Budget:
        """``flow :: key <= value`` or ``flow :: key >= value`` (flow ``*``: any flow); a
        ``#`` after the value starts a comment."""
        match = _LINE.match(line)
        number = None
        if match:
            try:
                number = float(match["value"])
            except ValueError:
                number = None
        if match is None or number is None or not math.isfinite(number):
            raise MeasurementError(
                f"{where}: {line.strip()!r} is not 'flow :: key <= value' or 'flow :: key >= value'"
            )
        if match["op"] == "<=":
            return cls(match["flow"], match["key"], max=number)
        return cls(match["flow"], match["key"], min=number)

    def applies(self, flow: str, key: str) -> bool:
        return self.key == key and self.flow in ("*", flow)

    @property
    def higher_is_better(self) -> bool:
        return self.min is not None and self.max is None

    @property
    def bounded(self) -> bool:
        return self.max is not None or self.min is not None

    def describe(self) -> str:
        parts = []
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        return " and ".join(parts)

    def broken_by(self, value: float) -> bool:
        return (self.max is not None and value > self.max) or (
            self.min is not None and value < self.min
        )


_DIRECTION_LINE = re.compile(
    r"^\s*(?P<flow>.+?)\s*::\s*(?P<key>.+?)\s+(?P<direction>lower|higher|ignore)\s*(?:#.*)?$"
)


def parse_direction(line: str, *, where: str) -> Budget:
    """``flow :: key higher`` (or ``lower``, ``ignore``; flow ``*``: any flow): a budget that
    bounds nothing and says which way the key is better."""
    match = _DIRECTION_LINE.match(line)
    if match is None:
        raise MeasurementError(
            f"{where}: {line.strip()!r} is not 'flow :: key lower', 'flow :: key higher' or "
            "'flow :: key ignore'"
        )
    return Budget(match["flow"], match["key"], direction=match["direction"])


def direction(
    flow: str,
    key: str,
    directions: Iterable[Budget] = (),
    budgets: Iterable[Budget] = (),
    budget: Budget | None = None,
) -> str:
    """Which way *flow*'s *key* is better, ``lower``, ``higher`` or ``ignore``: the one
    definition the gate, the run's change line and every command use. The test's own
    *budget* (its marker's ``direction=``), else the ini's *directions* (a line for this flow
    before a ``*`` line), else ``higher`` for a key whose budget (the test's, else the first
    ini one) has only a ``min``, else ``lower``.

    >>> direction("Feed", "FPS", [parse_direction("* :: FPS higher", where="ini")])
    'higher'
    """
    if budget is not None and budget.direction is not None:
        return budget.direction
    directions = list(directions)
    for wanted in (flow, "*"):
        for line in directions:
            if line.flow == wanted and line.key == key and line.direction is not None:
                return line.direction
    bounds = budget or next((b for b in budgets if b.applies(flow, key)), None)
    return "higher" if bounds is not None and bounds.higher_is_better else "lower"


_MIN_CHANGE_LINE = re.compile(
    r"^\s*(?P<flow>.+?)\s*::\s*(?P<key>.+?)\s+(?P<pct>[^\s%]+)\s*%?\s*(?:#.*)?$"
)


@dataclass(frozen=True)
class MinChangeLine:
    """``flow :: key PCT%`` (flow ``*``: any flow): the least change of *key* that
    ``changes``, the report and the run's change line count, in percent of the median
    before it (besides the key's own noise, which every change must pass)."""

    flow: str
    key: str
    pct: float


def parse_min_change(line: str, *, where: str) -> MinChangeLine:
    """A ``userflow_min_change`` line.

    >>> parse_min_change("* :: Login Time 10%", where="ini")
    MinChangeLine(flow='*', key='Login Time', pct=10.0)
    """
    match = _MIN_CHANGE_LINE.match(line)
    pct = math.nan
    if match is not None and re.fullmatch(r"\d+(\.\d*)?|\.\d+", match["pct"]):
        pct = float(match["pct"])
    if match is None or not (math.isfinite(pct) and pct >= 0):
        raise MeasurementError(
            f"{where}: {line.strip()!r} is not 'flow :: key PCT%' (a percentage >= 0)"
        )
    return MinChangeLine(match["flow"], match["key"], pct)


def min_change(flow: str, key: str, lines: Iterable[MinChangeLine]) -> float | None:
    """The least change in percent that counts for *flow*'s *key*: its line for this flow,
    else its ``*`` line, else None (the key's noise alone decides)."""
    lines = list(lines)
    for wanted in (flow, "*"):
        for line in lines:
            if line.flow == wanted and line.key == key:
                return line.pct
    return None


def min_changes_of(settings: Settings) -> MinChange:
    """The least change that counts for each key, by the resolved settings."""
    return lambda flow, key: min_change(flow, key, settings.min_changes)


def directions_of(settings: Settings) -> Direction:
    """Which way each key is better, by the resolved settings (its ini directions and
    budgets): what the commands and the report read the history with."""
    return lambda flow, key: direction(flow, key, settings.directions, settings.budgets)


def merge(budgets: Iterable[Budget]) -> dict[tuple[str, str], Budget]:
    """Per (flow, key) the first budget given wins (callers pass the nearest first)."""
    out: dict[tuple[str, str], Budget] = {}
    for budget in budgets:
        out.setdefault((budget.flow, budget.key), budget)
    return out


def numeric(value: object) -> float | None:
    return float(value) if is_number(value) else None


#: The verdicts that fail a test (a regression in warn mode is "regressed (warning)").
FAILING_VERDICTS = ("over budget", "under budget", "regressed")


class Check(NamedTuple):
    """One checked value: its budget or baseline, and the verdict."""

    nodeid: str
    flow: str
    key: str
    value: float
    units: str | None
    kind: str  # "budget" or "regression"
    limit: str  # "<= 2000", or "baseline 101.5 (median of 10)"
    # "ok", "over budget", "under budget", "regressed", "regressed (warning)", "within the noise"
    verdict: str
    change_pct: float | None = None
    noise_pct: float | None = None  # the baseline's noise, in percent of its median
    # A budget's min and max; a regression's baseline and the band its noise alone explains.
    low: float | None = None
    high: float | None = None
    baseline: float | None = None
    spread: float | None = None  # the baseline's noise, in the key's units
    device: str | None = None
    # A failed regression: the run its values regress since, and the command that accepts it.
    since: str | None = None
    accept: str | None = None

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING_VERDICTS

    def message(self) -> str:
        units = f" {self.units}" if self.units else ""
        if self.kind == "budget":
            side = "under" if self.verdict == "under budget" else "over"
            return (
                f"{self.flow}/{self.key} = {self.value:g}{units} is {side} its budget "
                f"{self.limit}{units}"
            )
        return (
            f"{self.flow}/{self.key} = {self.value:g}{units} regressed {self.change_text()}"
            f"{self.noise_text()} against its {self.limit}"
        )

    def change_text(self) -> str:
        """``+29.6%``, or from a median near zero, in the key's units: ``+50 (from 0)``."""
        return change_text(self.baseline, self.value, self.change_pct)

    def advice(self) -> str | None:
        """Since which run the series is worse, and how to say its new level is intended."""
        if self.accept is None:
            return None
        return (
            f"{self.flow}/{self.key} is worse since run {self.since}; if the new level is "
            f"intended: {self.accept}"
        )

    def noise_text(self) -> str:
        """``, 3.1x its noise of 9.5%``, or ``, 50x its noise of 1`` in the key's units
        (empty without a noise figure)."""
        # A noise that rounds to 0.0% is said in the key's units: it is never zero.
        shown = self.noise_pct is not None and round(self.noise_pct, 1) > 0
        if self.noise_pct is not None and self.change_pct is not None and shown:
            times = abs(self.change_pct) / self.noise_pct
            return f", {times:.1f}x its noise of {self.noise_pct:.1f}%"
        if self.spread and self.baseline is not None:
            times = abs(self.value - self.baseline) / self.spread
            return f", {times:.1f}x its noise of {self.spread:.4g}"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "flow": self.flow,
            "key": self.key,
            "value": self.value,
            "units": self.units,
            "kind": self.kind,
            "limit": self.limit,
            "verdict": self.verdict,
            "change_pct": self.change_pct,
            "noise_pct": self.noise_pct,
            "low": self.low,
            "high": self.high,
            "baseline": self.baseline,
            "spread": self.spread,
            "since": self.since,
            "accept": self.accept,
        }


def check_budget(nodeid: str, flow: str, m: Measurement, budget: Budget) -> Check | None:
    value = numeric(m.value)
    if value is None:
        return None
    verdict, limit = "ok", budget.describe()
    if budget.max is not None and value > budget.max:
        verdict, limit = "over budget", f"<= {budget.max:g}"
    elif budget.min is not None and value < budget.min:
        verdict, limit = "under budget", f">= {budget.min:g}"
    return Check(
        nodeid, flow, m.key, value, m.units, "budget", limit, verdict, low=budget.min,
        high=budget.max,
    )  # fmt: skip


class Baseline(NamedTuple):
    """The last passed values of one flow, key, test and device; *read* False where the
    history could not be read (no verdict, and no lack of history to report either)."""

    flow: str
    key: str
    values: tuple[float, ...]
    read: bool = True

    @property
    def enough(self) -> bool:
        return len(self.values) >= MIN_HISTORY

    @property
    def median(self) -> float:
        return median(self.values)

    @property
    def noise(self) -> float:
        return robust_spread(self.values)


Fetch = Callable[[str, str, int, str, "str | None"], list[float]]
#: The run a series (flow, key, test, device) is worse since, given what is worse.
Since = Callable[[str, str, str, "str | None", Callable[[float], bool]], str]


class BaselineSource:
    """Fetches each baseline once per run and keeps it."""

    def __init__(self, fetch: Fetch, runs: int) -> None:
        self._fetch = fetch
        self.runs = runs
        self._cache: dict[tuple[str, str, str, str | None], Baseline] = {}
        self.errors: list[str] = []

    def get(self, flow: str, key: str, nodeid: str, device: str | None) -> Baseline:
        which = (flow, key, nodeid, device)
        if which not in self._cache:
            try:
                values = self._fetch(flow, key, self.runs, nodeid, device)
            except Exception as exc:  # a gate that cannot see history gives no verdict
                said = f"no baseline for {flow}/{key}: {exc}"
                if said not in self.errors:  # once for the key's tests and devices
                    self.errors.append(said)
                self._cache[which] = Baseline(flow, key, (), read=False)
            else:
                self._cache[which] = Baseline(flow, key, tuple(values[: self.runs]))
        return self._cache[which]


def check_regression(
    nodeid: str,
    flow: str,
    m: Measurement,
    baseline: Baseline,
    *,
    pct: float,
    noise: float,
    higher_is_better: bool,
    warn_only: bool,
) -> Check | None:
    """Worse than the baseline by more than *pct* percent and by more than *noise* times its
    noise is a regression; worse by more than *pct* only is "within the noise".

    The noise is never zero: it is at least the step the values are written in (this value's
    too). Where the baseline has no spread (over half its values equal) or its median is near
    zero, the rule decides in the key's units: a value inside the range the baseline has
    shown is no regression, and no percent is computed from a median near zero (errors
    0 -> 50 is worse by 50, against a noise of 1).
    """
    value = numeric(m.value)
    if value is None or not baseline.enough:
        return None
    middle = baseline.median
    spread = robust_spread(baseline.values, resolution([*baseline.values, value]))
    change = percent_change(middle, value, spread)
    worse = (middle - value) if higher_is_better else (value - middle)
    # Past the threshold: PCT percent worse, or from a median near zero, worse at all.
    past = worse > 0 if change is None else (-change if higher_is_better else change) > pct
    flat = median([abs(v - middle) for v in baseline.values]) == 0
    if (flat or change is None) and min(baseline.values) <= value <= max(baseline.values):
        past = False  # a value its baseline has shown
    verdict = "ok"
    if past:
        if worse > noise * spread:
            verdict = "regressed (warning)" if warn_only else "regressed"
        else:
            verdict = "within the noise"
    limit = f"baseline {middle:g} (median of {len(baseline.values)})"
    band = noise * spread
    noise_pct = None if change is None else spread / abs(middle) * 100.0
    return Check(
        nodeid, flow, m.key, value, m.units, "regression", limit, verdict, change, noise_pct,
        low=middle - band, high=middle + band, baseline=middle, spread=spread,
    )  # fmt: skip


def baseline_branch(history: History, given: str | None, own: str | None = None) -> str | None:
    """The branch whose history is the baseline: *given* (the setting, else a pull request's
    base), else the first of ``main`` and ``master`` that *history* has runs of, else *own*
    when it is one of them (its history starts now), else ``main``; None when *own* (the
    run's branch, given) is unknown or, for a reader (no *own*), no branch is named and the
    history has neither: every run's history is then the baseline."""
    if given:
        return given
    for name in DEFAULT_BRANCHES:
        if history.runs(limit=1, branch=name):
            return name
    if own is None:
        return None
    return own if own in DEFAULT_BRANCHES else DEFAULT_BRANCHES[0]


def fork_run(history: History, branch: str, commits: set[str] | None) -> str | None:
    """The newest run of *branch* (of its newest FORK_RUNS) whose commit is one of *commits*
    (the run's own line of commits, ``runinfo.git_ancestors``): where the run's branch forked
    from *branch*, as far as the history knows it. None where git cannot tell (no commits:
    no repository, or a shallow clone without them)."""
    if not commits:
        return None
    for run in history.runs(limit=FORK_RUNS, branch=branch):
        if run["git_commit"] in commits:
            return str(run["run_id"])
    return None


def lineage(
    history: History, run: RunInfo, given: str | None, commits: Callable[[], set[str] | None]
) -> RunInfo:
    """*run* with what it is gated against: its baseline branch (*given*: the setting) and,
    on another branch, its fork point (*commits*: the run's line of commits, asked for only
    then). A run whose branch is unknown is left as it is."""
    if run.git_branch is None:
        return run
    branch = baseline_branch(history, given or run.base_branch, run.git_branch)
    assert branch is not None
    fork = None if branch == run.git_branch else fork_run(history, branch, commits())
    return run._replace(baseline_branch=branch, fork_run=fork)


def baseline_runs(history: History, run: RunInfo, limit: int) -> list[dict[str, Any]]:
    """The newest *limit* runs *run*'s baseline is drawn from, newest first: its baseline
    branch's up to its fork point, or every run where its branch is unknown; *run* itself
    left out."""
    if run.baseline_branch is None:
        runs = history.runs(limit=limit + 1)
    else:
        runs = history.runs(limit=FORK_RUNS + limit + 1, branch=run.baseline_branch)
        ids = [r["run_id"] for r in runs]
        if run.fork_run in ids:
            runs = runs[ids.index(run.fork_run) :]
    return [r for r in runs if r["run_id"] != run.run_id][:limit]


def local_fetch(history: History, run: RunInfo) -> Fetch:
    """Baseline values from the history: the newest passed values of the same flow, key,
    test and device, of the runs of *run*'s baseline branch up to its fork point (every run's
    where its branch is unknown), *run* left out."""

    def fetch(flow: str, key: str, limit: int, nodeid: str, device: str | None) -> list[float]:
        values = history.recent_values(
            flow, key, limit, exclude_run=run.run_id, nodeid=nodeid, device=device,
            branch=run.baseline_branch, until=run.fork_run,
        )  # fmt: skip
        return [v for v in values if is_number(v)]

    return fetch


def local_since(history: History, run: RunInfo) -> Since:
    """Since which run a series is worse: the oldest run of the unbroken stretch of its runs,
    *run* included, whose values (each run's median, of the tests that passed on their own)
    *worse* finds worse than the baseline; runs that did not measure it are passed over. The
    runs are those of *run*'s baseline (``baseline_runs``)."""
    run_id = run.run_id

    def since(
        flow: str, key: str, nodeid: str, device: str | None, worse: Callable[[float], bool]
    ) -> str:
        if run.git_branch != run.baseline_branch:
            return run_id  # the runs before it are another branch's
        runs = [r["run_id"] for r in baseline_runs(history, run, CHANGE_HISTORY)]
        if not runs:
            return run_id
        rows = history.measurements(Query(flow, keys=[key], run_ids=runs, outcomes=["passed"]))
        values = RunSeries(lambda r: ())
        for row in rows:
            if (row["nodeid"], row["device_address"]) == (nodeid, device):
                values.add(row)
        medians = dict(values.medians(()))
        start = run_id
        for earlier in runs:  # newest first
            if earlier in medians:
                if not worse(medians[earlier]):
                    break
                start = earlier
        return start

    return since


def accept_command(
    flow: str, key: str, nodeid: str, device: str | None, run: str, store: str | None = None
) -> str:
    """The ``pytest-userflow accept`` command line for one series from *run* on (with
    ``--store`` when the store is not the default)."""
    words = ["pytest-userflow", *(["--store", store] if store else []), "accept"]
    words += ["--flow", flow, "--key", key, "--test", nodeid]
    words += ["--device", device] if device else []
    return shlex.join([*words, "--run", run])


def accepted_rows(history: History, accept: Accept) -> list[dict[str, Any]]:
    """The numeric values of the series *accept* covers, of the tests that passed on their
    own (those only the gate failed included), in time order."""
    rows = history.measurements(Query(accept.flow, keys=[accept.key], outcomes=["passed"]))
    return [
        r
        for r in rows
        if accept.covers(accept.flow, accept.key, r["nodeid"], r["device_address"])
        and is_number(r["value"])
    ]


def newest_change(
    rows: Iterable[dict[str, Any]], runs: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """Where the newest change of the series of *rows* began, either way, as ``changes`` finds
    changes (each test and device a series of its own, as the gate's baselines are); *runs*:
    the runs, oldest first, by id."""
    changes = find_changes(run_series(rows), runs, lambda flow, key: "lower")
    order = {run_id: i for i, run_id in enumerate(runs)}
    return max(changes, key=lambda c: order.get(c["run_id"], -1), default=None)


def mark_accepted(changes: Iterable[dict[str, Any]], accepts: Sequence[Accept]) -> None:
    """Name in each change (``analysis.find_changes``'s) the accept that says its level is
    intended, as ``accepted`` (its id; None): one in force over its series (its test and
    device, where the change names them) from the change's run or a later one."""
    for change in changes:
        change["accepted"] = None
        when = change.get("time")
        for a in accepts:
            if (
                a.undone_at is None
                and (a.flow, a.key) == (change["flow"], change["key"])
                and a.nodeid in (None, change.get("test", a.nodeid))
                and a.device in (None, change.get("device", a.device))
                and when is not None
                and a.from_started is not None
                and when <= a.from_started
            ):
                change["accepted"] = a.id


def headspin_fetch(client: Any) -> Fetch:
    """Baseline values from HeadSpin's measurement route, filtered by key and status=passed.

    HeadSpin's rows know flows, sessions and keys, not tests or devices: this baseline is
    the flow and key's, whatever test and device made the values, so it is listed once per
    flow and key, and a listing that failed is not asked for again in this run."""
    flow_ids: dict[str, str] = {}
    listed: dict[tuple[str, str], list[float] | Exception] = {}

    def values(flow: str, key: str) -> list[float]:
        if not flow_ids:
            flow_ids.update({f["name"]: f["user_flow_id"] for f in client.list_user_flows()})
        if flow not in flow_ids:
            return []
        rows = client.get_measurements(flow_ids[flow], keys=[key], statuses=["passed"])
        rows.sort(key=lambda r: str(r.get("event_time")), reverse=True)
        return [float(r["value"]) for r in rows if numeric(r.get("value")) is not None]

    def fetch(flow: str, key: str, limit: int, nodeid: str, device: str | None) -> list[float]:
        if (flow, key) not in listed:
            try:
                listed[flow, key] = values(flow, key)
            except Exception as exc:
                listed[flow, key] = exc
                raise
        got = listed[flow, key]
        if isinstance(got, Exception):
            raise got  # no verdict for the key's other tests either; said once
        return got[:limit]

    return fetch


@dataclass
class BudgetUse:
    """What a run's tests recorded against its budgets, to tell a budget that checked nothing
    (a typo such as "Login Tme"); xdist workers hand theirs over as plain data, merged."""

    #: flow -> the keys its tests recorded
    seen: dict[str, set[str]] = field(default_factory=dict)
    #: the key of a test's own budget (a marker) -> the first test that carried it, its flow
    marked: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the keys of test budgets that a test carrying one recorded
    recorded: set[str] = field(default_factory=set)

    def note(self, nodeid: str, flow: str, keys: Iterable[str], budgets: Iterable[str]) -> None:
        keys = set(keys)
        self.seen.setdefault(flow, set()).update(keys)
        for key in budgets:
            self.marked.setdefault(key, (nodeid, flow))
            if key in keys:
                self.recorded.add(key)

    def merge(self, other: BudgetUse) -> None:
        for flow, keys in other.seen.items():
            self.seen.setdefault(flow, set()).update(keys)
        for key, first in other.marked.items():
            self.marked[key] = min(first, self.marked.get(key, first))
        self.recorded |= other.recorded

    def as_data(self) -> dict[str, Any]:
        return {
            "seen": {flow: sorted(keys) for flow, keys in self.seen.items()},
            "marked": {key: list(first) for key, first in self.marked.items()},
            "recorded": sorted(self.recorded),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> BudgetUse:
        seen = {flow: set(keys) for flow, keys in data["seen"].items()}
        marked = {key: (nodeid, flow) for key, (nodeid, flow) in data["marked"].items()}
        return cls(seen, marked, set(data["recorded"]))

    def unused(self, budgets: Iterable[Budget]) -> list[str]:
        """Markers whose key no test carrying them recorded; ini budgets whose key no test
        of their flow (any flow: ``*``) recorded, when a test of it ran."""
        unused = {
            f"{flow} :: {key} (a userflow_budget marker of {nodeid})"
            for key, (nodeid, flow) in self.marked.items()
            if key not in self.recorded
        }
        for budget in budgets:
            flows = list(self.seen) if budget.flow == "*" else [budget.flow]
            if any(f in self.seen for f in flows) and not any(
                budget.key in self.seen.get(f, ()) for f in flows
            ):
                unused.add(f"{budget.flow} :: {budget.key} (ini key userflow_budgets)")
        return sorted(unused)


class Gate:
    """Budgets and the regression gate over one run: what to check, and what was checked."""

    def __init__(
        self,
        budgets: Iterable[Budget],
        baselines: BaselineSource | None,
        *,
        pct: float,
        warn_only: bool,
        noise: float = DEFAULT_NOISE,
        directions: Iterable[Budget] = (),
        since: Since | None = None,
        store: str | None = None,
        min_changes: Iterable[MinChangeLine] = (),
    ) -> None:
        self.budgets = list(budgets)
        self.baselines = baselines
        self.since = since  # the local history's: a failed regression then says how to accept it
        self.store = store  # the store for the accept command, when not the default
        self.pct = pct
        self.noise = noise
        self.warn_only = warn_only
        self.directions = list(directions)
        self.min_changes = list(min_changes)
        self.checks: list[Check] = []
        self.no_history: set[str] = set()
        self.use = BudgetUse()

    def unused_budgets(self) -> list[str]:
        """Budgets (ini lines and markers) that checked nothing in this process."""
        return self.use.unused(self.budgets)

    def note_test(
        self, nodeid: str, flow: str, keys: Iterable[str], budgets: Iterable[str]
    ) -> None:
        """What a finished test recorded, and the keys its own budgets name."""
        self.use.note(nodeid, flow, keys, budgets)

    def active(self, test_budgets: dict[str, Budget]) -> bool:
        return bool(test_budgets or self.budgets or self.baselines)

    def key_direction(self, flow: str, key: str) -> str:
        """Which way *key* is better for the run as a whole (a test's own markers aside),
        for the changes a run's end looks for."""
        return direction(flow, key, self.directions, self.budgets)

    def key_min_change(self, flow: str, key: str) -> float | None:
        """The least change of *key* that counts, for the changes a run's end looks for."""
        return min_change(flow, key, self.min_changes)

    def check(
        self,
        nodeid: str,
        flow: str,
        measurements: Iterable[Measurement],
        test_budgets: dict[str, Budget],
        verdict: Callable[[Measurement, Baseline], bool | None] = lambda m, b: None,
        device: str | None = None,
    ) -> list[Check]:
        """Check *measurements* of one test (on *device*); return the checks made.
        *test_budgets* (from the test's markers and ``budget=``) win over the ini budgets;
        *verdict* may decide regressions."""
        budgets = {b.key: b for b in reversed(self.budgets) if b.applies(flow, b.key)}
        budgets.update(test_budgets)
        made = []
        for m in measurements:
            budget = budgets.get(m.key)
            checks = [check_budget(nodeid, flow, m, budget)] if budget and budget.bounded else []
            way = direction(flow, m.key, self.directions, self.budgets, budget)
            if self.baselines is not None and way != "ignore":
                checks.append(self._regression(nodeid, flow, m, way, verdict, device))
            made += [check for check in checks if check is not None]
        self.checks += made
        return made

    def _regression(
        self,
        nodeid: str,
        flow: str,
        m: Measurement,
        direction: str,
        verdict: Callable[[Measurement, Baseline], bool | None],
        device: str | None,
    ) -> Check | None:
        assert self.baselines is not None
        if numeric(m.value) is None:  # text is never gated: no history is read for it
            return None
        baseline = self.baselines.get(flow, m.key, nodeid, device)
        if not baseline.read:
            return None
        if not baseline.enough:
            self.no_history.add(f"{flow}/{m.key} ({len(baseline.values)})")
            return None
        check = check_regression(
            nodeid,
            flow,
            m,
            baseline,
            pct=self.pct,
            noise=self.noise,
            warn_only=self.warn_only,
            higher_is_better=direction == "higher",
        )
        if check is not None:
            decided = verdict(m, baseline)
            if decided is not None:
                regressed = "regressed (warning)" if self.warn_only else "regressed"
                check = check._replace(verdict=regressed if decided else "ok")
            check = check._replace(device=device)
        if check is not None and check.failed and self.since is not None:

            def worse(value: float) -> bool:
                old = check_regression(
                    nodeid, flow, m._replace(value=value), baseline, pct=self.pct,
                    noise=self.noise, warn_only=False, higher_is_better=direction == "higher",
                )  # fmt: skip
                return old is not None and old.verdict == "regressed"

            try:
                run = self.since(flow, m.key, nodeid, device, worse)
            except UserflowError as exc:  # the failure stands; only its advice is missing
                self.baselines.errors.append(f"no run {flow}/{m.key} regresses since: {exc}")
                return check
            command = accept_command(flow, m.key, nodeid, device, run, self.store)
            check = check._replace(since=run, accept=command)
        return check


def confirmed_changes(
    store: History, run: RunInfo, direction: Direction, least: MinChange | None = None
) -> list[dict[str, Any]]:
    """Worse changes of this run's keys that began within the last RECENT_RUNS runs, this one
    included, and that no accept says are intended, as ``pytest-userflow changes`` finds them
    over the last CHANGE_HISTORY runs of its baseline (``baseline_runs``) and this one (the
    values of tests that passed on their own, those only the gate failed included); *least*:
    the least change that counts per key."""
    run_id = run.run_id
    earlier = baseline_runs(store, run, CHANGE_HISTORY - 1)
    history = {r["run_id"]: r for r in reversed([run._asdict(), *earlier])}
    rows = store.measurements(Query(outcomes=["passed"], run_ids=list(history)))
    changes = find_changes(run_series(rows), history, direction, least)
    mark_accepted(changes, store.accepts())
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    series = ("flow", "key", "type", "units", "test", "device")
    for change in changes:  # each series' changes come oldest first
        if change["last_run"] == run_id:
            newest[tuple(change[k] for k in series)] = change
    return [
        c
        for c in newest.values()
        if c["direction"] == "worse"
        and c["state"] == CONFIRMED
        and c["runs_ago"] < RECENT_RUNS
        and c["accepted"] is None
    ]
