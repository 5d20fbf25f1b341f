"""Aggregates over measurement rows: statistics per key, and baseline/candidate comparisons.

Rows are the dicts of the measurement listing (``History.measurements`` or the API's);
no pytest import. Non-numeric values are counted but left out of the statistics.

>>> summarize([1.0, 2.0, 3.0, 4.0])["p50"]
2.5

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import bisect
import decimal
import itertools
import math
import operator
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .model import (
    is_number,
)
from .options import DEFAULT_NOISE

STAT_COLUMNS = ("count", "min", "mean", "p50", "p95", "max")


def median(values: Sequence[float]) -> float:
    """The median of *values* (the mean of the middle two for an even count, halved before
    they are added, so that two values near the float limit do not overflow)."""
    ordered = sorted(values)
    if not ordered:
        raise statistics.StatisticsError("no median for empty data")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return float(ordered[mid - 1]) / 2 + float(ordered[mid]) / 2


def mean(values: Sequence[float]) -> float:
    """The mean of *values*; of values near the float limit too, whose sum overflows."""
    try:
        return statistics.fmean(values)
    except OverflowError:
        return math.fsum(v / len(values) for v in values)


def percent_change(before: float | None, after: float | None, spread: float = 0.0) -> float | None:
    """How far *after* is from *before*, in percent of *before*; None without both, or when
    *before* is near zero: within NEAR_ZERO times its *spread* of it (a percent of a value the
    noise alone could take to zero says nothing; such changes are told in the key's units).

    >>> percent_change(100.0, 130.5), percent_change(0.0, 50.0), percent_change(1.0, 2.0, 1.0)
    (30.5, None, None)
    """
    if before is None or after is None or abs(before) <= max(NEAR_ZERO * spread, 0.0):
        return None
    return (after - before) / abs(before) * 100.0


def change_text(before: float | None, after: float | None, pct: float | None) -> str:
    """A change as people read it: ``+30.5%``, or in the key's units, ``+50 (from 0)``, where
    no percent is computed (a median near zero); ``-`` without both sides.

    >>> change_text(100.0, 130.5, 30.5), change_text(0.0, 50.0, None)
    ('+30.5%', '+50 (from 0)')
    """
    if pct is not None:
        return f"{pct:+.1f}%"
    if before is None or after is None:
        return "-"
    return f"{after - before:+.4g} (from {before:.4g})"


def percentile(ordered: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    # A sum of products rather than a difference: the values' span may exceed the float limit.
    return math.fsum((ordered[low], -ordered[low] * weight, ordered[high] * weight))


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
        "mean": mean(numbers),
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
    """Statistics per flow, key, type and units (a key recorded in two units is two rows,
    never one summary of both), and *by*: run, test, device or day; sorted, runs in the order
    their first values came (*rows* are in time order, as listings give them)."""
    grouped: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    extra = GROUPINGS[by] if by else None
    first: dict[tuple[Any, ...], int] = {}  # when each group's first value came (rows: in time)
    for row in rows:
        group = (row["user_flow_name"], row["key_name"], row.get("key_type"),
                 row.get("key_units"), extra(row) if extra else None)  # fmt: skip
        grouped[group].append(row["value"])
        first.setdefault(group, len(first))

    def order(g: tuple[Any, ...]) -> tuple[Any, ...]:
        labels = tuple("" if x is None else str(x) for x in g)
        return (*labels[:4], first[g]) if by == "run" else labels

    out = []
    for group in sorted(grouped, key=order):
        flow, key, kind, units, extra_value = group
        entry: dict[str, Any] = {"flow": flow, "key": key, "type": kind}
        if by:
            entry[by] = extra_value
        entry.update(summarize(grouped[group]))
        entry["units"] = units
        out.append(entry)
    return out


#: The median absolute deviation times this estimates the standard deviation of normal noise.
MAD_SCALE = 1.4826
#: The smallest change, in percent, that compare and changes call a change by default.
MIN_CHANGE_PCT = 5.0
#: The efficiency of the median: its standard error is this times sigma over root n.
MEDIAN_SE = 1.2533
#: A median within this many spreads of zero is near zero: its changes are told in its units.
NEAR_ZERO = 3.0
#: compare's verdict for a key whose values are not numbers.
NOT_NUMERIC = "not numeric"
#: Which way a flow's key is better: ``lower``, ``higher`` or ``ignore``.
Direction = Callable[[str, str], str]
#: The least change in percent that counts for a flow's key (None: its noise decides).
MinChange = Callable[[str, str], "float | None"]


def robust_spread(values: Sequence[float], step: float | None = None) -> float:
    """A spread that one wild value barely moves: 1.4826 times the median absolute deviation,
    and never less than the *step* the values are recorded in (``resolution(values)`` unless
    given): a key that is 1 nine times in ten, or always 0, has a MAD of 0, yet is no more
    exact than its whole units.

    >>> robust_spread([1.0, 2.0, 3.0, 4.0]), robust_spread([0, 0, 0]), robust_spread([0.5] * 3)
    (1.4826, 1.0, 0.1)
    """
    middle = median(values)
    mad = MAD_SCALE * median([abs(v - middle) for v in values])
    return max(mad, resolution(values) if step is None else step)


def resolution(values: Iterable[float]) -> float:
    """The finest step *values* are written in: 1 for whole numbers, 0.01 for 12.34; a
    measured float's own digits make it tiny.

    >>> resolution([100, 200.0]), resolution([0, 0.25])
    (1.0, 0.01)
    """
    exponent = 0
    for value in values:
        if math.isfinite(value) and not float(value).is_integer():
            digits = decimal.Decimal(repr(float(value))).as_tuple().exponent
            exponent = min(exponent, int(digits))
    return float(10.0**exponent)


def median_noise(spread: float, n_before: int, n_after: int, k: float = DEFAULT_NOISE) -> float:
    """The change between the medians of *n_before* and *n_after* values that their noise
    alone could make: *k* standard errors of their difference, from *spread*."""
    return float(k * MEDIAN_SE * spread * (1 / n_before + 1 / n_after) ** 0.5)


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
    direction: str  # lower, higher or ignore: which way the key is better
    spread: float = 0.0  # the baseline values' robust spread
    noise: float = DEFAULT_NOISE  # how many standard errors a change must pass
    numeric: bool = True

    @property
    def change(self) -> float | None:
        """The candidate's median less the baseline's, in the key's units."""
        if self.baseline is None or self.candidate is None:
            return None
        return self.candidate - self.baseline

    @property
    def change_pct(self) -> float | None:
        """The change in percent; None for a baseline near zero (see ``percent_change``)."""
        return percent_change(self.baseline, self.candidate, self.spread)

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def worse_pct(self) -> float | None:
        """How much worse the candidate is, in % (negative: better)."""
        change = self.change_pct
        if change is None:
            return None
        return -change if self.higher_is_better else change

    @property
    def noise_units(self) -> float | None:
        """The change the noise alone could make, in the key's units: *noise* standard errors
        of the difference of the two medians, from the baseline's spread."""
        if not self.baseline_n or not self.candidate_n:
            return None
        return median_noise(self.spread, self.baseline_n, self.candidate_n, self.noise)

    @property
    def noise_pct(self) -> float | None:
        """That change in percent of the baseline (None where no percent is computed)."""
        noise = self.noise_units
        if self.change_pct is None or noise is None or self.baseline is None:
            return None
        return float(noise / abs(self.baseline) * 100.0)

    def verdict(self, threshold: float) -> str:
        """worse or better beyond both *threshold* percent and the noise; "same" within the
        threshold; "within noise" past the threshold but not the noise. A baseline near zero
        has no percent: its change is judged against the noise alone, in the key's units."""
        if not self.numeric:
            return NOT_NUMERIC
        if self.direction == "ignore":
            return "ignored"
        change, noise = self.change, self.noise_units
        if change is None or noise is None:
            return "no data"
        worse = -change if self.higher_is_better else change
        pct = self.worse_pct
        if change == 0 or (pct is not None and abs(pct) <= threshold):
            return "same"
        if abs(change) <= noise:
            return "within noise"
        return "worse" if worse > 0 else "better"


Which = tuple[str, str, "str | None", "str | None"]


def _numbers(rows: Iterable[dict[str, Any]]) -> dict[Which, list[float]]:
    """Per flow, key, type and units: the numeric values (none for a text key)."""
    values: dict[Which, list[float]] = {}
    for row in rows:
        key = (row["user_flow_name"], row["key_name"], row.get("key_type"), row.get("key_units"))
        numbers = values.setdefault(key, [])
        if is_number(row["value"]):
            numbers.append(float(row["value"]))
    return values


def compare(
    baseline_rows: Iterable[dict[str, Any]],
    candidate_rows: Iterable[dict[str, Any]],
    direction: Direction = lambda flow, key: "lower",
    noise: float = DEFAULT_NOISE,
) -> list[Comparison]:
    """Per flow, key, type and units: the medians of baseline and candidate, and the
    baseline's spread; keys with no numeric value on either side are marked not numeric.
    *direction*: which way a flow's key is better."""
    base = _numbers(baseline_rows)
    cand = _numbers(candidate_rows)
    out = []
    for key in sorted(set(base) | set(cand), key=lambda k: tuple(x or "" for x in k)):
        b_values, c_values = base.get(key, []), cand.get(key, [])
        out.append(
            Comparison(
                key[0],
                key[1],
                key[2],
                key[3],
                median(b_values) if b_values else None,
                median(c_values) if c_values else None,
                len(b_values),
                len(c_values),
                direction(key[0], key[1]),
                spread=robust_spread(b_values) if b_values else 0.0,
                noise=noise,
                numeric=bool(b_values or c_values),
            )
        )
    return out


def fmt_number(value: float | int | None) -> str:
    """A statistic for a table: four significant digits, but a whole number, or one that four
    digits would write in powers of ten, in full and without a fraction (below 10**15): a
    median of 40000 ms is ``40000``, not ``4e+04``."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if not abs(value) < 1e15:  # huge, infinite or NaN
        return f"{value:.6g}"
    text = f"{value:.4g}"
    return f"{value:.0f}" if "e+" in text or value.is_integer() else text


# Change points: E-Divisive means (Matteson and James, 2014) as MongoDB and Apache Otava use
# it (Daly et al., ICPE 2020), on ranks, in sliding windows, with a permutation test.
#
# Ranks make the statistic's distribution under "no change" depend only on the segment's
# length, so one set of seeded permutations per length serves every window of every key:
# the test stays a permutation test, deterministic, and cheap enough for the standard library.
# Ranks also make one wild run (a device hiccup) weigh no more than any other high value.

#: Windows of this many runs, moved by half a window, as Otava does.
CHANGE_WINDOW = 50
#: A change needs this many runs on each side of it.
CHANGE_MIN_RUNS = 3
#: Significance of a change point, and the permutations its test draws.
CHANGE_ALPHA = 0.05
CHANGE_PERMUTATIONS = 199
CHANGE_SEED = 20200420  # the permutations are the same every time: the same answer
#: A series longer than a window is also searched in the medians of blocks of this many runs:
#: a ramp too slow for any one window (+10% over 200 runs) is a step between blocks.
CHANGE_BLOCK = 10
#: A change of a series' newest runs, too few to test, is suspected from this many runs of a
#: stretch before them, when each newest value is beyond DEFAULT_NOISE times the noise.
SUSPECT_BASE = 5
SUSPECTED, CONFIRMED = "suspected", "confirmed"
#: The lengths of the stretch on each side of a split that is not significant, where a
#: significant split is looked for next: a short bump splits no window well at either end.
LOOK_AHEAD = (16, 24, 32, 48)
#: Such a split is taken at this share of alpha (0.01: at most one of 199 permutations as
#: strong): tried where the first test failed, it would otherwise call more series changed
#: than alpha says.
LOOK_AHEAD_ALPHA = 0.2
#: Segments of at most this many distinct values (flags, a count that is 0 or 1) get a
#: permutation null of their own ranks, ties as they are: at most one per length and split,
#: so few enough to keep. More values (timings in whole milliseconds, wider counts) move the
#: untied null of their length less, and a null per pattern would cost seconds per command.
FEW_VALUES = 2


@dataclass(frozen=True)
class ChangePoint:
    """A shift in a series: it starts at *index*; *before* and *after* are the medians of
    the stretches on either side (up to the neighbouring change points), *spread* the robust
    spread of the stretch before, *sizes* how many values each stretch has, and *noise* the
    series' noise (``series_noise``).
    *state*: ``confirmed`` (the permutation test holds: at least CHANGE_MIN_RUNS runs after
    it), or ``suspected``: the newest one or two runs, each beyond the noise (p_value None)."""

    index: int
    p_value: float | None
    before: float
    after: float
    spread: float = 0.0
    sizes: tuple[int, int] = (1, 1)
    state: str = CONFIRMED
    noise: float = 0.0

    @property
    def change_pct(self) -> float | None:
        """The change in percent; None from a median near zero (see ``percent_change``)."""
        return percent_change(self.before, self.after, self.spread)

    def size(self, min_change_pct: float | None = None) -> float:
        """The change over the least change that counts (under 1: too small): DEFAULT_NOISE
        standard errors of the difference of the two medians (the key's own noise), and at
        least *min_change_pct* percent where a percent is computed."""
        least = median_noise(self.noise, *self.sizes)
        pct = self.change_pct
        if min_change_pct and pct is not None:
            least = max(least, abs(self.before) * min_change_pct / 100.0)
        return abs(self.after - self.before) / least if least else math.inf


def series_noise(values: Sequence[float]) -> float:
    """A series' noise, from the differences of neighbouring values (the robust spread of
    those over root 2): steps, ramps and the odd wild value barely move it, and it is never
    less than the step the values are written in.

    >>> series_noise([0.0] * 50 + [100.0] * 50)
    1.0
    """
    if len(values) < 2:
        return resolution(values)
    diffs = [b - a for a, b in itertools.pairwise(values)]
    spread = robust_spread(diffs, 0.0) / math.sqrt(2)
    moved = [abs(d) for d in diffs if d]
    if moved and spread >= min(moved):
        return spread  # values written in a step move by at least that step
    return max(spread, resolution(values))


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 0, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, at in enumerate(order):
        ranks[at] = float(rank)
    if len(set(values)) == len(values):
        return ranks
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _pair_sums(x: Sequence[float]) -> list[float]:
    """``sums[t]``: the sum of ``|x_i - x_k|`` over the pairs inside ``x[:t]``."""
    sums = [0.0]
    seen: list[float] = []  # x[:t], sorted
    total = 0.0
    for t, xt in enumerate(x):
        k = bisect.bisect_left(seen, xt)
        below = sum(seen[:k]) if 2 * k < t else total - sum(seen[k:])  # the shorter sum
        # |xt - v| summed over seen: (k * xt - below) + ((total - below) - (t - k) * xt)
        sums.append(sums[-1] + (2 * k - t) * xt + total - 2.0 * below)
        seen.insert(k, xt)
        total += xt
    return sums


def _statistics(x: Sequence[float], min_size: int) -> dict[int, float]:
    """The E-Divisive statistic (alpha 1) of each split of *x* that leaves *min_size* values
    on each side: large where the two sides differ in distribution."""
    return _split_statistics(*_side_sums(x), min_size)


def _side_sums(x: Sequence[float]) -> tuple[list[float], list[float]]:
    """``left[t]`` and ``right[t]``: the sums of ``|x_i - x_k|`` over the pairs inside
    ``x[:t]`` and inside ``x[t:]``. The right ones come from the left ones and the pairs
    across the split, which change by one value's distances to all and to those before it."""
    left = _pair_sums(x)
    m = len(x)
    ordered = sorted(x)
    prefix = list(itertools.accumulate(ordered, initial=0.0))
    right = [0.0] * (m + 1)
    across = 0.0
    for t, xt in enumerate(x):
        right[t] = left[m] - left[t] - across
        k = bisect.bisect_left(ordered, xt)
        to_all = (2 * k - m) * xt + prefix[m] - 2.0 * prefix[k]
        across += to_all - 2.0 * (left[t + 1] - left[t])
    return left, right


def _split_statistics(left: list[float], right: list[float], min_size: int) -> dict[int, float]:
    """``_statistics`` from the pair sums of each prefix (*left*) and suffix (*right*):
    ``_energy`` written out, as this is where the time goes."""
    m = len(left) - 1
    total = left[m]
    splits = zip(range(min_size, m - min_size + 1), left[min_size:], right[min_size:], strict=False)
    return {
        t: (2.0 * (total - a - b) - (2.0 * a * (m - t) / max(t - 1, 1)
                                     + 2.0 * b * t / max(m - t - 1, 1))) / m
        for t, a, b in splits
    }  # fmt: skip


def _statistic_at(x: Sequence[float], t: int) -> float:
    """The statistic of the one split of *x* at *t*, as ``_statistics`` gives it."""

    def pairs(values: Sequence[float]) -> float:  # the sum of |a - b| over its pairs
        n = len(values)
        return float(sum(map(operator.mul, range(1 - n, n, 2), sorted(values))))

    return _energy(pairs(x[:t]), pairs(x[t:]), pairs(x), t, len(x) - t)


def _energy(left: float, right: float, total: float, n1: int, n2: int) -> float:
    """The statistic from the sums of distances inside each side (*left*, *right*) and in
    all (*total*) of sides of *n1* and *n2* values: twice the mean distance between them less
    the mean distances within each, times n1 n2 / (n1 + n2) (one value has no pairs: 0)."""
    within = 2.0 * left * n2 / max(n1 - 1, 1) + 2.0 * right * n1 / max(n2 - 1, 1)
    return float((2.0 * (total - left - right) - within) / (n1 + n2))


def _best_split(x: Sequence[float], min_size: int) -> tuple[int, float]:
    """The split of *x* with the largest statistic, and that statistic."""
    stats = _statistics(x, min_size)
    best = max(stats, key=stats.__getitem__)
    return best, stats[best]


def _stands_out(x: Sequence[float]) -> bool:
    """Whether a value of *x* is further from their median than DEFAULT_NOISE times their
    robust spread: a bump worth a second look does."""
    middle = median(x)
    return max(abs(v - middle) for v in x) > DEFAULT_NOISE * robust_spread(x, 0.0)


class Candidate(NamedTuple):
    """A segment's best split: its statistic per value, where it is, the segment, the ranks'
    statistic there and the segment's ranks."""

    strength: float
    at: int
    start: int
    end: int
    q: float
    ranks: list[float]


class ChangeDetector:
    """Finds change points in series of numbers; keeps the permutation null distribution of
    each set of ranks it has met (with no ties: one a segment length), for the series that
    follow."""

    def __init__(
        self,
        *,
        window: int = CHANGE_WINDOW,
        min_size: int = CHANGE_MIN_RUNS,
        alpha: float = CHANGE_ALPHA,
        permutations: int = CHANGE_PERMUTATIONS,
    ) -> None:
        self.window = max(window, 2 * min_size)
        self.min_size = max(min_size, 2)
        self.alpha = alpha
        self.permutations = permutations
        self._null: dict[tuple[float, ...], list[float]] = {}

    def _p_value(self, ranks: Sequence[float], q: float) -> float:
        """How often permuting *ranks* as they are (tied ones sharing their mean rank) makes
        a split as strong as *q*: on a key of a few values the statistic runs high more often
        than on untied ranks, whose null would call such data changed more often than alpha.
        Ranks of more than FEW_VALUES values use the untied null of their length."""
        few = len(set(ranks)) <= FEW_VALUES
        which = tuple(sorted(ranks)) if few else tuple(map(float, range(len(ranks))))
        null = self._null.get(which)
        if null is None:
            rng = random.Random(CHANGE_SEED + len(which))
            shuffled = list(which)
            null = []
            for _ in range(self.permutations):
                rng.shuffle(shuffled)
                null.append(_best_split(shuffled, self.min_size)[1])
            null.sort()
            self._null[which] = null
        # A permutation as strong as q counts against it, rounding in the sums aside.
        above = len(null) - bisect.bisect_left(null, q - 1e-9 * abs(q))
        return (1 + above) / (1 + len(null))

    def _candidate(self, x: Sequence[float], start: int, end: int) -> Candidate | None:
        """The best split of ``x[start:end]`` (None: too short for one)."""
        if end - start < 2 * self.min_size:
            return None
        segment = x[start:end]
        # Where: the values' strongest split, so that the size of a shift places it (on ranks,
        # a 0.1% drift just before a 30% step looks as clear as the step). Whether: the
        # ranks' statistic there, against the ranks' null.
        at = _best_split(segment, self.min_size)[0]
        ranks = _ranks(segment)
        q = _statistic_at(ranks, at)
        return Candidate(q / (end - start), start + at, start, end, q, ranks)

    def _in_window(self, x: Sequence[float]) -> dict[int, float]:
        """Hierarchical E-Divisive inside one window: split the segment whose best split is
        strongest while that split is significant. When it is not, a significant split of
        one of its two sides is taken: a short bump (a few runs up, then back) splits no
        segment well at either of its ends, but each side of one end at the other."""
        found: dict[int, float] = {}
        segments = [(0, len(x))]
        while True:
            candidates = [c for s, e in segments if (c := self._candidate(x, s, e))]
            if not candidates:
                return found
            best = max(candidates, key=lambda c: (c.strength, c.at, c.start, c.end, c.q))
            p, at = self._p_value(best.ranks, best.q), best.at
            if p > self.alpha:
                if not _stands_out(x[best.start : best.end]):
                    return found
                # The sides' stretches next to the split, of a few lengths only: a null
                # distribution is drawn per length.
                before = max((n for n in LOOK_AHEAD if n <= best.at - best.start), default=0)
                after = max((n for n in LOOK_AHEAD if n <= best.end - best.at), default=0)
                sides = [
                    self._candidate(x, best.at - before, best.at),
                    self._candidate(x, best.at, best.at + after),
                ]
                tested = [(self._p_value(c.ranks, c.q), c.at) for c in sides if c]
                p, at = min(tested, default=(1.0, at))
                if p > self.alpha * LOOK_AHEAD_ALPHA:
                    return found
            found[at] = p
            segments.remove((best.start, best.end))
            segments += [(best.start, at), (at, best.end)]

    def _windows(self, values: Sequence[float]) -> dict[int, float]:
        """The change points of every window of *values*, with their p-values."""
        n = len(values)
        found: dict[int, float] = {}
        step = self.window // 2
        starts = list(range(0, max(n - self.window, 0) + 1, step))
        if starts[-1] + self.window < n:
            starts.append(n - self.window)  # the last window ends at the newest run
        for start in starts:
            for at, p in self._in_window(values[start : start + self.window]).items():
                found[start + at] = min(p, found.get(start + at, 1.0))
        return found

    def find(
        self, values: Sequence[float], min_change_pct: float | None = None
    ) -> list[ChangePoint]:
        """The change points of *values* (oldest first): confirmed ones, each more than the
        noise of the medians on either side (``ChangePoint.size``, at least *min_change_pct*
        percent when given), and a suspected one at the newest runs."""
        n = len(values)
        found = self._windows(values)
        if n > self.window:
            # Blocks end at the newest run; a block's change that a window's change explains
            # (within a block of it) is that one.
            first = n % CHANGE_BLOCK
            blocks = [median(values[i : i + CHANGE_BLOCK]) for i in range(first, n, CHANGE_BLOCK)]
            for at, p in self._windows(blocks).items():
                index = first + at * CHANGE_BLOCK
                if all(abs(index - i) > CHANGE_BLOCK for i in found):
                    found[index] = p
        # Overlapping windows find one change at neighbouring runs: of two changes closer than
        # a minimal stretch, the one that splits the stretch around them better stays.
        kept = sorted(found)
        while True:
            close = [i for i in range(len(kept) - 1) if kept[i + 1] - kept[i] < self.min_size]
            if not close:
                break
            i = close[0]
            start = kept[i - 1] if i else 0
            end = kept[i + 2] if i + 2 < len(kept) else n
            stats = _statistics(values[start:end], 1)
            a, b = kept[i], kept[i + 1]
            kept.remove(a if stats.get(a - start, 0.0) < stats.get(b - start, 0.0) else b)
        noise = series_noise(values)
        while True:
            points = _with_medians(values, kept, found, noise)
            small = [c for c in points if c.size(min_change_pct) < 1]
            if not small:
                break
            kept.remove(min(small, key=lambda c: c.size(min_change_pct)).index)
        suspected = self._suspected(values, points[-1].index if points else 0, noise)
        if suspected is not None:
            pct = suspected.change_pct
            if not (min_change_pct and pct is not None and abs(pct) < min_change_pct):
                points.append(suspected)
        return points

    def _suspected(self, values: Sequence[float], since: int, noise: float) -> ChangePoint | None:
        """A change at the newest 2 (else 1) runs of *values*, too few for the test: each of
        them beyond DEFAULT_NOISE times the noise of the stretch since the change at *since*
        (at most a window of it), on the same side; where over half that stretch is one value,
        also outside the range it has shown."""
        n = len(values)
        for newest in (2, 1):
            start = max(since, n - newest - self.window)
            base, after = values[start : n - newest], values[n - newest :]
            if len(base) < SUSPECT_BASE:
                continue
            middle = median(base)
            spread = robust_spread(base, noise)
            band = DEFAULT_NOISE * spread
            low, high = min(base), max(base)
            flat = median([abs(v - middle) for v in base]) == 0
            up = all(v > middle + band and (v > high or not flat) for v in after)
            down = all(v < middle - band and (v < low or not flat) for v in after)
            if up or down:
                return ChangePoint(n - newest, None, middle, median(after),
                                   spread, (len(base), newest), SUSPECTED, noise)  # fmt: skip
        return None


def _with_medians(
    values: Sequence[float], indexes: list[int], p_values: dict[int, float], noise: float
) -> list[ChangePoint]:
    bounds = [0, *indexes, len(values)]
    out = []
    for i, at in enumerate(indexes):
        before, after = values[bounds[i] : at], values[at : bounds[i + 2]]
        out.append(
            ChangePoint(at, p_values[at], median(before), median(after), robust_spread(before),
                        (len(before), len(after)), noise=noise)
        )  # fmt: skip
    return out


Series = dict[tuple[Any, ...], tuple[list[tuple[str, float]], "str | None"]]


def find_changes(
    series: Series,
    runs: dict[str, dict[str, Any]],
    direction: Direction,
    min_change: MinChange | None = None,
    detector: ChangeDetector | None = None,
) -> list[dict[str, Any]]:
    """The change points of each series (``run_series``: per flow, key, type, units, test
    and device, ``(run, median)`` points), as ``pytest-userflow changes`` lists them.

    *runs*: the runs oldest first, by id (empty: the points' own order); *direction*: which
    way a flow's key is better (``lower``, ``higher``; ``ignore`` leaves it out); *min_change*:
    the least change in percent that counts for a flow's key (None: the key's noise alone,
    as for every key without it); *detector*:
    one that has met series before keeps their null distributions (the answer is the same).
    """
    order = {run_id: i for i, run_id in enumerate(runs)}
    detector = detector or ChangeDetector()
    out = []
    for (flow, key, kind, units, test, device), (points, _) in series.items():
        way = direction(flow, key)
        if way == "ignore":
            continue
        if order:
            points.sort(key=lambda p: order.get(p[0], -1))
        least = min_change(flow, key) if min_change else None
        for change in detector.find([v for _, v in points], least):
            run_id = points[change.index][0]
            run = runs.get(run_id, {})
            delta = change.after - change.before
            worse = delta < 0 if way == "higher" else delta > 0
            out.append(
                {
                    "flow": flow,
                    "key": key,
                    "type": kind,
                    "test": test,
                    "device": device,
                    "run_id": run_id,
                    "time": run.get("started_at"),
                    "git_commit": run.get("git_commit"),
                    "git_branch": run.get("git_branch"),
                    "ci_build_id": run.get("ci_build_id"),
                    "before": change.before,
                    "after": change.after,
                    "change": delta,
                    "change_pct": change.change_pct,
                    "direction": "worse" if worse else "better",
                    "units": units,
                    "p_value": change.p_value,
                    "state": change.state,
                    "runs_ago": len(points) - 1 - change.index,
                    "last_run": points[-1][0],
                }
            )
    return out


def unit_changes(changes: Iterable[tuple[str, str, str, str | None, str | None]]) -> list[str]:
    """One line per test and key whose units changed: (node id, flow, key, units now, units
    before), as the store finds them; their values are never summed up as one.

    >>> unit_changes([("t.py::x", "F", "t", "ms", None)])
    ['t.py::x records F/t in ms, its history in (no units)']
    """
    return [
        f"{nodeid} records {flow}/{key} in {new or '(no units)'}, its history in "
        f"{old or '(no units)'}"
        for nodeid, flow, key, new, old in changes
    ]


def point_of(row: dict[str, Any]) -> str:
    """The point of a trend a measurement row belongs to: its run, or (HeadSpin's rows have
    no run) its own event."""
    return str(row.get("run_id") or row.get("perf_event_id") or row["event_time"])


#: Which series a row belongs to.
Grouping = Callable[[dict[str, Any]], tuple[Any, ...]]


#: ``--by flow``: one series per flow, key, type and units, whatever test or device made it.
POOLED = "flow"


def series_key(row: dict[str, Any], by: str | None = None) -> tuple[Any, ...]:
    """The series of a measurement row: flow, key, type, units, test (node id, parameters
    included) and device, as the gate's baseline is; *by* ``flow`` pools the tests and
    devices of a flow (test and device None)."""
    which = (row["user_flow_name"], row["key_name"], row.get("key_type"), row.get("key_units"))
    if by == POOLED:
        return (*which, None, None)
    return (*which, row.get("nodeid"), row.get("device_address"))


class RunSeries:
    """Each series' numeric values per point of its trend (a run; a HeadSpin event, which has
    no run), gathered a row at a time (rows in time order), and each point's median: what
    ``changes``, the gate's confirmed changes, the report's median lines and ``plot`` draw on.

    >>> rows = [{"user_flow_name": "Login", "key_name": "t", "value": v, "run_id": r}
    ...         for r, v in (("a", 1.0), ("a", 3.0), ("b", 5.0))]
    >>> run_series(rows)
    {('Login', 't', None, None, None, None): ([('a', 2.0), ('b', 5.0)], None)}
    """

    def __init__(self, group: Grouping = series_key) -> None:
        self.group = group
        #: Per series, per point in the order the points came: the values.
        self.values: dict[tuple[Any, ...], dict[str, list[float]]] = {}
        self.units: dict[tuple[Any, ...], str | None] = {}

    def add(self, row: dict[str, Any]) -> None:
        """Count *row*'s value in its series, if it is a number."""
        value = row["value"]
        if not is_number(value):
            return
        group = self.group(row)
        self.values.setdefault(group, {}).setdefault(point_of(row), []).append(float(value))
        self.units[group] = row.get("key_units") or self.units.get(group)

    def medians(self, group: tuple[Any, ...]) -> list[tuple[str, float]]:
        """*group*'s points in the order they came, each with the median of its values."""
        return [(point, median(values)) for point, values in self.values.get(group, {}).items()]

    def series(self) -> Series:
        """Every series' ``(point, median)`` list and units, in the order the series came."""
        return {group: (self.medians(group), self.units[group]) for group in self.values}


def run_series(rows: Iterable[dict[str, Any]], by: str | None = None) -> Series:
    """Per series (``series_key``: flow, key, type, units, test and device; *by* ``flow``:
    pooled): each run's median of the numeric values, as ``(run_id, median)`` in the order
    the runs came (*rows* are in time order).
    Rows without a run (HeadSpin's) are one point each, named by their event. With each
    series, its units; the series sorted."""
    values = RunSeries(lambda row: series_key(row, by))
    for row in rows:
        values.add(row)
    series = values.series()
    return {group: series[group] for group in sorted(series, key=lambda g: tuple(map(str, g)))}
