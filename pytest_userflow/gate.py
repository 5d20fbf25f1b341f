"""Performance budgets and the regression gate (no pytest import).

A *budget* bounds one key: ``<= max`` (lower is better) and/or ``>= min`` (higher is better,
frames per second for instance). The *regression gate* compares a value with the median of
the last N passed values of the same flow and key (its *baseline*) and calls it a regression
when it is worse by more than a percentage.

>>> Budget.parse_line("Login :: Login Time <= 2000", where="userflow_budgets")
Budget(flow='Login', key='Login Time', max=2000.0, min=None)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .analysis import is_number, median
from .model import Measurement, MeasurementError
from .queries import recent_values
from .store import Store

MIN_HISTORY = 3


class BudgetExceeded(AssertionError):
    """A value over its budget, or regressed: the failure the test gets."""

    __module__ = "pytest_userflow"  # shown as pytest_userflow.BudgetExceeded


_LINE = re.compile(
    r"^\s*(?P<flow>.+?)\s*::\s*(?P<key>.+?)\s*(?P<op><=|>=)\s*(?P<value>[^\s#]+)\s*(?:#.*)?$"
)


def _bound(value: object, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MeasurementError(f"{name} must be a finite number, got {value!r} in {where}")
    return float(value)


class Budget(NamedTuple):
    """Bounds of one key; *flow* ``*`` means any flow."""

    flow: str
    key: str
    max: float | None = None
    min: float | None = None

    @classmethod
    def create(
        cls, flow: str, key: object, max: object = None, min: object = None, *, where: str
    ) -> Budget:
        if not isinstance(key, str) or not key.strip():
            raise MeasurementError(f"a budget needs a key, a non-empty str, got {key!r} in {where}")
        low, high = _bound(min, "min", where), _bound(max, "max", where)
        if low is None and high is None:
            raise MeasurementError(f"a budget for {key!r} needs max= or min= in {where}")
        if low is not None and high is not None and low > high:
            raise MeasurementError(
                f"the budget for {key!r} has min {low:g} > max {high:g} in {where}"
            )
        return cls(flow, key, high, low)

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


def merge(budgets: Iterable[Budget]) -> dict[tuple[str, str], Budget]:
    """Per (flow, key) the first budget given wins (callers pass the nearest first)."""
    out: dict[tuple[str, str], Budget] = {}
    for budget in budgets:
        out.setdefault((budget.flow, budget.key), budget)
    return out


def numeric(value: object) -> float | None:
    return float(value) if is_number(value) else None  # type: ignore[arg-type]


class Check(NamedTuple):
    """One checked value: its budget or baseline, and the verdict."""

    nodeid: str
    flow: str
    key: str
    value: float
    units: str | None
    kind: str  # "budget" or "regression"
    limit: str  # "<= 2000", or "baseline 101.5 (median of 10)"
    verdict: str  # "ok", "over budget", "regressed", "regressed (warning)"
    change_pct: float | None = None

    @property
    def failed(self) -> bool:
        return self.verdict in ("over budget", "regressed")

    def message(self) -> str:
        units = f" {self.units}" if self.units else ""
        if self.kind == "budget":
            return (
                f"{self.flow}/{self.key} = {self.value:g}{units} is over its budget "
                f"{self.limit}{units}"
            )
        return (
            f"{self.flow}/{self.key} = {self.value:g}{units} regressed {self.change_pct:+.1f}% "
            f"against its {self.limit}"
        )

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
        }


def check_budget(nodeid: str, flow: str, m: Measurement, budget: Budget) -> Check | None:
    value = numeric(m.value)
    if value is None:
        return None
    verdict = "over budget" if budget.broken_by(value) else "ok"
    return Check(nodeid, flow, m.key, value, m.units, "budget", budget.describe(), verdict)


class Baseline(NamedTuple):
    """The median of the last passed values of one flow and key."""

    flow: str
    key: str
    values: tuple[float, ...]

    @property
    def enough(self) -> bool:
        return len(self.values) >= MIN_HISTORY

    @property
    def median(self) -> float:
        return median(self.values)


class BaselineSource:
    """Fetches each (flow, key) baseline once per run and keeps it."""

    def __init__(self, fetch: Callable[[str, str, int], list[float]], runs: int) -> None:
        self._fetch = fetch
        self.runs = runs
        self._cache: dict[tuple[str, str], Baseline] = {}
        self.errors: list[str] = []

    def get(self, flow: str, key: str) -> Baseline:
        if (flow, key) not in self._cache:
            try:
                values = self._fetch(flow, key, self.runs)
            except Exception as exc:  # a gate that cannot see history gives no verdict
                self.errors.append(f"no baseline for {flow}/{key}: {exc}")
                values = []
            self._cache[(flow, key)] = Baseline(flow, key, tuple(values[: self.runs]))
        return self._cache[(flow, key)]


def check_regression(
    nodeid: str,
    flow: str,
    m: Measurement,
    baseline: Baseline,
    *,
    pct: float,
    higher_is_better: bool,
    warn_only: bool,
) -> Check | None:
    value = numeric(m.value)
    if value is None or not baseline.enough or baseline.median == 0:
        return None
    change = (value - baseline.median) / abs(baseline.median) * 100.0
    worse = -change if higher_is_better else change
    verdict = "ok"
    if worse > pct:
        verdict = "regressed (warning)" if warn_only else "regressed"
    limit = f"baseline {baseline.median:g} (median of {len(baseline.values)})"
    return Check(nodeid, flow, m.key, value, m.units, "regression", limit, verdict, change)


def local_fetch(store: Store, exclude_run: str) -> Callable[[str, str, int], list[float]]:
    """Baseline values from the local store: newest passed values first, this run excluded."""

    def fetch(flow: str, key: str, limit: int) -> list[float]:
        values = recent_values(store, flow, key, limit, exclude_run=exclude_run)
        return [v for v in values if is_number(v)]

    return fetch


def headspin_fetch(client: Any) -> Callable[[str, str, int], list[float]]:
    """Baseline values from HeadSpin's measurement route, filtered by key and status=passed."""
    flow_ids: dict[str, str] = {}

    def fetch(flow: str, key: str, limit: int) -> list[float]:
        if not flow_ids:
            flow_ids.update({f["name"]: f["user_flow_id"] for f in client.list_user_flows()})
        if flow not in flow_ids:
            return []
        rows = client.get_measurements(flow_ids[flow], keys=[key], statuses=["passed"])
        rows.sort(key=lambda r: str(r.get("event_time")), reverse=True)
        return [float(r["value"]) for r in rows if numeric(r.get("value")) is not None][:limit]

    return fetch


class Gate:
    """Budgets and the regression gate over one run: what to check, and what was checked."""

    def __init__(
        self,
        budgets: Iterable[Budget],
        baselines: BaselineSource | None,
        *,
        pct: float,
        warn_only: bool,
    ) -> None:
        self.budgets = list(budgets)
        self.baselines = baselines
        self.pct = pct
        self.warn_only = warn_only
        self.checks: list[Check] = []
        self.no_history: set[str] = set()

    def active(self, test_budgets: dict[str, Budget]) -> bool:
        return bool(test_budgets or self.budgets or self.baselines)

    def check(
        self,
        nodeid: str,
        flow: str,
        measurements: Iterable[Measurement],
        test_budgets: dict[str, Budget],
        verdict: Callable[[Measurement, Baseline], bool | None] = lambda m, b: None,
    ) -> list[Check]:
        """Check *measurements*; return the failing checks. *test_budgets* (from the test's
        markers and ``budget=``) win over the ini budgets; *verdict* may decide regressions."""
        budgets = {b.key: b for b in reversed(self.budgets) if b.applies(flow, b.key)}
        budgets.update(test_budgets)
        failing = []
        for m in measurements:
            budget = budgets.get(m.key)
            checks = [check_budget(nodeid, flow, m, budget)] if budget else []
            if self.baselines is not None:
                checks.append(self._regression(nodeid, flow, m, budget, verdict))
            for check in checks:
                if check is not None:
                    self.checks.append(check)
                    if check.failed:
                        failing.append(check)
        return failing

    def _regression(
        self,
        nodeid: str,
        flow: str,
        m: Measurement,
        budget: Budget | None,
        verdict: Callable[[Measurement, Baseline], bool | None],
    ) -> Check | None:
        assert self.baselines is not None
        baseline = self.baselines.get(flow, m.key)
        if not baseline.enough:
            if numeric(m.value) is not None:
                self.no_history.add(f"{flow}/{m.key} ({len(baseline.values)})")
            return None
        check = check_regression(
            nodeid,
            flow,
            m,
            baseline,
            pct=self.pct,
            warn_only=self.warn_only,
            higher_is_better=budget.higher_is_better if budget else False,
        )
        if check is not None:
            decided = verdict(m, baseline)
            if decided is not None:
                regressed = "regressed (warning)" if self.warn_only else "regressed"
                check = check._replace(verdict=regressed if decided else "ok")
        return check
