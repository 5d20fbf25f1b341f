"""A run's aggregates kept as its events are stored (no pytest import).

The folder process keeps one for the journal it folds, so the end of a run needs no
GROUP BY over the run's measurements (30-50 ms for 2,000 tests of 10 measurements): the
flush answer carries the aggregates. They are exactly what ``Store.run_aggregates`` reads
from the tables, in the same order; a test holds the two to that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .store import EventRecord

_NUMBERS = (int, float)


def _sql_order(group: tuple[Any, ...]) -> tuple[Any, ...]:
    """SQLite's ascending order of a GROUP BY on these columns: NULL first, text by code point."""
    return tuple((value is not None, value) for value in group)


class _Group:
    __slots__ = ("count", "units", "values")

    def __init__(self) -> None:
        self.count = 0
        self.values: list[int | float] = []
        self.units: set[str] = set()


class Tally:
    """Tests per flow and status, and per (flow, key, type, device) every measurement's
    count, numeric values and units."""

    def __init__(self) -> None:
        self.flows: dict[str, dict[str, int]] = {}  # flow -> status -> tests
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.uploads = False  # an event to upload: its place changes after it is stored

    def add(self, events: Iterable[tuple[EventRecord, object]]) -> None:
        """Events just stored, each with its upload (None when it has none)."""
        for event, upload in events:
            if upload is not None:
                self.uploads = True
            statuses = self.flows.setdefault(event.flow, {})
            statuses[event.status] = statuses.get(event.status, 0) + 1
            device = event.device_address
            for m in event.measurements:
                group = (event.flow, m.key, m.type, device)
                entry = self.groups.get(group)
                if entry is None:
                    entry = self.groups[group] = _Group()
                entry.count += 1
                if m.value.__class__ in _NUMBERS:
                    entry.values.append(m.value)
                if m.units is not None:
                    entry.units.add(m.units)

    def aggregates(self) -> dict[str, Any] | None:
        """``Store.run_aggregates`` of the events added; None once one had an upload."""
        if self.uploads:
            return None
        keys = []
        places: dict[str, int] = {}
        for group in sorted(self.groups, key=_sql_order):
            entry = self.groups[group]
            count, values, units = entry.count, sorted(entry.values), entry.units
            n = len(values)
            middle = values[(n - 1) // 2 : (n - 1) // 2 + 2 - n % 2]
            flow, key, kind, device = group
            keys.append(
                {
                    "flow": flow,
                    "key": key,
                    "type": kind,
                    "device": device,
                    "count": count,
                    "numeric": n,
                    "min": values[0] if n else None,
                    "median": sum(middle) / len(middle) if n else None,
                    "max": values[-1] if n else None,
                    "units": max(units) if units else None,
                }
            )
            places[flow] = places.get(flow, 0) + count
        flows = {
            flow: {
                "tests": sum(self.flows[flow].values()),
                "statuses": dict(sorted(self.flows[flow].items())),
                "places": {"": places[flow]} if flow in places else {},
            }
            for flow in sorted(self.flows)
        }
        return {"flows": flows, "keys": keys, "pending": {"tests": 0, "measurements": 0}}
