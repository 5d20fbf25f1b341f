"""``pytest-userflow plot``: a key's trend over runs as a PNG (matplotlib, the [plot] extra).

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .analysis import RunSeries, percentile
from .model import UserflowError, is_number, utc_text


def plot_trend(
    rows: Iterable[dict[str, Any]],
    runs: list[dict[str, Any]],
    *,
    key: str,
    output: str,
    direction: str = "lower",
) -> int:
    """Draw median and p95 of passed values per run, failed tests' values as red crosses;
    the axis says which way (*direction*) the key is better.

    Returns how many numeric values were drawn; with none, nothing is written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserflowError(
            "plot needs matplotlib: pip install 'pytest-userflow[plot]' (or pip install matplotlib)"
        ) from None
    index = {run["run_id"]: i for i, run in enumerate(runs)}
    passed = RunSeries(lambda row: ())  # one series: every flow and type of the key
    failed: list[tuple[int, float]] = []
    units = None
    for row in rows:
        value = row["value"]
        if not is_number(value) or row["run_id"] not in index:
            continue
        units = units or row.get("key_units")
        if (row.get("outcome") or row["status"]) == "Failed":  # only the gate's: drawn as passed
            failed.append((index[row["run_id"]], float(value)))
        else:
            passed.add(row)
    per_run = passed.values.get((), {})
    count = sum(len(v) for v in per_run.values()) + len(failed)
    if count == 0:  # nothing to draw: no file, rather than an empty one beside the error
        return 0
    points = sorted(passed.medians(()), key=lambda point: index[point[0]])  # in run order
    xs = [index[run_id] for run_id, _ in points]
    medians = [m for _, m in points]
    p95s = [percentile(sorted(per_run[run_id]), 95) for run_id, _ in points]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    ax.plot(xs, medians, marker="o", label="median (passed)")
    ax.plot(xs, p95s, marker=".", linestyle="--", label="p95 (passed)")
    if failed:
        ax.scatter(
            [x for x, _ in failed],
            [v for _, v in failed],
            marker="x",
            color="red",
            label="failed tests",
            zorder=3,
        )
    step = max(1, len(runs) // 12)  # at most about a dozen labels
    ticks = list(range(0, len(runs), step))
    labels = [f"{utc_text(runs[i]['started_at'])[5:16]} {runs[i]['run_id'][:6]}" for i in ticks]
    ax.set_xticks(ticks, labels, fontsize=7, rotation=30, ha="right")
    ax.set_xlabel("run (UTC start, id)")
    ax.set_title(f"{key}: trend over {len(runs)} run(s)")
    better = {"lower": "lower is better", "higher": "higher is better"}.get(direction)
    ax.set_ylabel(f"{units or 'value'} ({better})" if better else units or "value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over the data
    fig.tight_layout()
    fig.savefig(output, format="png")
    plt.close(fig)
    return count
