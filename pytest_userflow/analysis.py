"""Aggregates over measurement rows: statistics per key, and baseline/candidate comparisons.

Rows are the dicts of the measurement listing (``Store.query_measurements`` or the API's);
no pytest import. Non-numeric values are counted but left out of the statistics.

>>> summarize([1.0, 2.0, 3.0, 4.0])["p50"]
2.5
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

STAT_COLUMNS = ("count", "min", "mean", "p50", "p95", "max")


def is_number(value: object) -> bool:
    """An int or float that statistics may use (bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def median(values: Sequence[float]) -> float:
    """The median of *values* (the mean of the middle two for an even count)."""
    return float(statistics.median(values))


def percentile(ordered: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[Any]) -> dict[str, float | int | None]:
    """count (all values), and min, mean, p50, p95, max of the numeric ones."""
    all_values = list(values)
    numbers = sorted(float(v) for v in all_values if is_number(v))
    if not numbers:
        return {"count": len(all_values), "min": None, "mean": None, "p50": None, "p95": None,
                "max": None}  # fmt: skip
    return {
        "count": len(all_values),
        "min": numbers[0],
        "mean": statistics.fmean(numbers),
        "p50": median(numbers),
        "p95": percentile(numbers, 95),
        "max": numbers[-1],
    }


def _day(row: dict[str, Any]) -> str:
    return str(row["event_time"])[:10]


GROUPINGS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "run": lambda r: r.get("run_id"),
    "test": lambda r: r.get("nodeid") or "-",
    "device": lambda r: r.get("device_address") or "-",
    "day": _day,
}


def stats(rows: Iterable[dict[str, Any]], by: str | None = None) -> list[dict[str, Any]]:
    """Statistics per flow, key, type (and *by*: run, test, device or day), sorted; runs
    in the order their first values came (*rows* are in time order, as listings give them)."""
    grouped: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    units: dict[tuple[Any, ...], str | None] = {}
    extra = GROUPINGS[by] if by else None
    first: dict[tuple[Any, ...], int] = {}  # when each group's first value came (rows: in time)
    for row in rows:
        group = (row["user_flow_name"], row["key_name"], row.get("key_type"),
                 extra(row) if extra else None)  # fmt: skip
        grouped[group].append(row["value"])
        units[group] = row.get("key_units") or units.get(group)
        first.setdefault(group, len(first))

    def order(g: tuple[Any, ...]) -> tuple[Any, ...]:
        labels = tuple("" if x is None else str(x) for x in g)
        return (*labels[:3], first[g]) if by == "run" else labels

    out = []
    for group in sorted(grouped, key=order):
        flow, key, kind, extra_value = group
        entry: dict[str, Any] = {"flow": flow, "key": key, "type": kind}
        if by:
            entry[by] = extra_value
        entry.update(summarize(grouped[group]))
        entry["units"] = units[group]
        out.append(entry)
    return out


@dataclass(frozen=True)
class Comparison:
    flow: str
    key: str
    type: str | None
    units: str | None
    baseline: float | None
    candidate: float | None
    baseline_n: int
    candidate_n: int
    higher_is_better: bool

    @property
    def change_pct(self) -> float | None:
        if self.baseline is None or self.candidate is None or self.baseline == 0:
            return None
        return (self.candidate - self.baseline) / abs(self.baseline) * 100.0

    @property
    def worse_pct(self) -> float | None:
        """How much worse the candidate is, in % (negative: better)."""
        change = self.change_pct
        if change is None:
            return None
        return -change if self.higher_is_better else change

    def verdict(self, threshold: float | None) -> str:
        worse = self.worse_pct
        if worse is None:
            return "no data" if self.baseline is None or self.candidate is None else "n/a"
        if threshold is not None and worse > threshold:
            return "worse"
        if worse > 0:
            return "slightly worse" if threshold is not None else "worse"
        return "better" if worse < 0 else "same"


def _medians(
    rows: Iterable[dict[str, Any]],
) -> dict[tuple[str, str, str | None], tuple[float | None, int, str | None]]:
    values: dict[tuple[str, str, str | None], list[float]] = defaultdict(list)
    units: dict[tuple[str, str, str | None], str | None] = {}
    for row in rows:
        value = row["value"]
        key = (row["user_flow_name"], row["key_name"], row.get("key_type"))
        units[key] = row.get("key_units") or units.get(key)
        if is_number(value):
            values[key].append(float(value))
        else:
            values.setdefault(key, [])
    return {k: (median(v) if v else None, len(v), units[k]) for k, v in values.items()}


def compare(
    baseline_rows: Iterable[dict[str, Any]],
    candidate_rows: Iterable[dict[str, Any]],
    higher_is_better: Iterable[str] = (),
) -> list[Comparison]:
    """Per flow, key and type: the medians of baseline and candidate."""
    better_up = set(higher_is_better)
    base = _medians(baseline_rows)
    cand = _medians(candidate_rows)
    out = []
    for key in sorted(set(base) | set(cand), key=lambda k: (k[0], k[1], k[2] or "")):
        b = base.get(key, (None, 0, None))
        c = cand.get(key, (None, 0, None))
        out.append(Comparison(key[0], key[1], key[2], c[2] or b[2], b[0], c[0], b[1], c[1],
                              key[1] in better_up))  # fmt: skip
    return out


def fmt_number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
