"""The HTML report: one self-contained file of each flow and key's trend over the last runs.

No pytest import. :func:`collect` makes the page's data from rows of the measurement listing
(``sources`` reads them, from the history or from HeadSpin); :func:`render` writes the page.
The charts are Vega-Lite, drawn in the browser by the Vega libraries that vl-convert-python
(the ``[html]`` extra) bundles into the page, so opening the file fetches nothing: no
script, style or font.

>>> rows = local_page_rows(history, flow=None, last=30)                      # doctest: +SKIP
>>> data = collect(*rows, direction=lambda flow, key: "lower")               # doctest: +SKIP
>>> Path("userflow.html").write_text(render(data))                          # doctest: +SKIP

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from .analysis import (
    CONFIRMED,
    Direction,
    MinChange,
    RunSeries,
    Series,
    change_text,
    find_changes,
    fmt_number,
    point_of,
)
from .gate import RECENT_RUNS, Check, mark_accepted
from .model import NEEDS_EXTRA, STATUSES, Accept, UserflowError, is_number, utc_text
from .report import describe_change, write_file

#: Runs a chart shows by default.
DEFAULT_RUNS = 30
#: Verdicts the attention list names.
ATTENTION = ("over budget", "under budget", "regressed", "regressed (warning)")


def vega_bundle() -> str:
    """The Vega, Vega-Lite and Vega-Embed scripts as one, from vl-convert-python: its default
    bundle, which defines ``vegaEmbed`` for the page and is made once in a process."""
    try:
        import vl_convert
    except ImportError:
        raise UserflowError(NEEDS_EXTRA) from None
    try:
        # Its stub requires the snippet its docstring calls optional (1.9).
        return str(vl_convert.javascript_bundle())  # type: ignore[call-arg]
    except Exception as exc:  # its own errors (a broken install): one line, never a traceback
        raise UserflowError(f"vl-convert-python could not bundle the charts: {exc}") from None


def collect(
    rows: list[dict[str, Any]],
    run_list: list[dict[str, Any]],
    checks: Iterable[dict[str, Any]] = (),
    *,
    direction: Direction,
    min_change: MinChange | None = None,
    accepts: Iterable[Accept] = (),
    branch: str | None = None,
) -> dict[str, Any]:
    """The page's data from measurement rows (in time order) and their runs (oldest first).

    Rows without a run (HeadSpin's) make a point of their own each, in time order. *checks*:
    the gate's, of these runs (``History.checks``); the newest run's say what needs
    attention and give the budget lines, all of them give the baselines' bands. *accepts*:
    the levels said to be intended (``History.accepts``): the changes they cover are named
    as accepted and need no attention, and the page lists those of its keys. *branch*: the
    branch whose runs these are (None: every branch's), said in the page's head.
    """
    checks = list(checks)
    if not run_list:  # HeadSpin: each event is one point of its own
        seen: dict[str, dict[str, Any]] = {}
        for row in rows:
            point = point_of(row)
            seen.setdefault(point, {"run_id": point, "event_time": row["event_time"]})
        run_list = list(seen.values())
    index = {r["run_id"]: i for i, r in enumerate(run_list)}
    tests: dict[str, int] = {}
    charts: dict[tuple[Any, ...], dict[str, Any]] = {}
    latest = run_list[-1]["run_id"] if run_list else None
    statuses: dict[str, int] = defaultdict(int)
    counted: set[str] = set()
    # Per series (one test on one device), each run's values of tests that passed on their own
    # (those only the gate failed included): the chart's median line of that test, and the
    # series changes are found in.
    passed = RunSeries()
    for row in rows:
        point = point_of(row)
        status = row.get("status") or "Not Set"
        outcome = row.get("outcome") or status  # HeadSpin's rows: the status is all there is
        if status == "Failed" and outcome == "Passed":
            status = GATE_FAILED
        if point == latest and row["perf_event_id"] not in counted:
            counted.add(row["perf_event_id"])
            statuses[status] += 1
        group = (row["user_flow_name"], row["key_name"], row.get("key_type"), row.get("key_units"))
        chart = charts.get(group) or charts.setdefault(group, _chart(len(charts), *group))
        test = row.get("nodeid") or row.get("session_id") or "-"
        t = tests.setdefault(test, len(tests))
        if is_number(row["value"]):  # text values are listed in the table, not drawn
            chart["points"].append([index[point], t, _drawn(row["value"]), _status_code(status)])
        if outcome == "Passed":
            passed.add(row)
        if point == latest:
            chart["latest"].append(
                {
                    "test": test,
                    "device": row.get("device_address"),
                    "value": row["value"],
                    "status": status,
                    "verdicts": [],
                }
            )
    series: Series = passed.series()
    for which, (medians, _) in series.items():
        chart = charts[which[:4]]  # which: flow, key, type, units, test and device
        line = tests.setdefault(_line_name(which[4], which[5]), len(tests))
        chart["medians"] += [[index[point], _drawn(m), line] for point, m in medians]
    newest = [c for c in checks if c["run_id"] == latest]
    _add_checks(charts, checks, newest, index, tests)
    for chart in charts.values():
        _add_domain(chart)
    attention = _attention(charts, newest)
    changes = find_changes(series, {r["run_id"]: r for r in run_list}, direction, min_change)
    accepts = list(accepts)
    mark_accepted(changes, accepts)
    for change in changes:
        changed = charts.get(tuple(change[k] for k in ("flow", "key", "type", "units")))
        if changed is None:
            continue
        state = "" if change["state"] == CONFIRMED else f" ({change['state']})"
        text = f"{change['direction']} change{state}: {describe_change(change)}"
        if change["accepted"] is not None:
            text += f" (accepted #{change['accepted']})"
        changed["changes"].append([index[change["run_id"]], text])
        recent = change["direction"] == "worse" and change["runs_ago"] < RECENT_RUNS
        if recent and change["state"] == CONFIRMED and change["accepted"] is None:
            attention.append({"kind": "change", "chart": changed["id"], "text": text})
    keys = {(c["flow"], c["key"]) for c in charts.values()}
    shown = [a for a in accepts if (a.flow, a.key) in keys]
    return {
        "generated": utc_text(time.time()),
        "run": run_list[-1] if run_list and run_list[-1].get("started_at") else None,
        "statuses": dict(statuses),
        "runs": [_run(r) for r in run_list],
        "branch": branch,
        "tests": list(tests),
        "statusNames": list(STATUS_NAMES),
        "attention": attention,
        "accepts": [_accept(a) for a in shown],
        "charts": sorted(charts.values(), key=lambda c: (c["flow"], c["key"], c["type"] or "")),
    }


#: How the report names a value whose test only the gate failed: its status is Failed, its
#: outcome Passed.
GATE_FAILED = "Failed by the gate"
STATUS_NAMES = (*STATUSES, GATE_FAILED, "Not Set")


def _drawn(value: float) -> float | None:
    """*value* to the 6 significant digits a chart and its tooltips show (the tables and the
    store keep it whole): a third of the file's size. None, a gap in the chart, where JSON
    cannot carry it (a median beyond the float limit)."""
    drawn = float(f"{value:.6g}")
    return drawn if math.isfinite(drawn) else None


def _status_code(status: str) -> int:
    return STATUS_NAMES.index(status) if status in STATUS_NAMES else len(STATUS_NAMES) - 1


def _line_name(test: str | None, device: str | None) -> str:
    """A median line's name: its test, and its device when there is one."""
    return f"{test or '-'} on {device}" if device else test or "-"


def _chart(n: int, flow: str, key: str, kind: str | None, units: str | None) -> dict[str, Any]:
    return {
        "id": f"chart-{n}",
        "flow": flow,
        "key": key,
        "type": kind,
        "units": units,
        "points": [],  # [run, test, value, status]
        "medians": [],  # [run, median of the passed values, test (and device)]: a line each
        "budgets": [],  # [min or None, max or None] of the newest run's tests
        "limits": [],  # [limit, ">= 55"]: the budget lines near enough to draw
        "off_chart": [],  # the budgets too far from the values to draw, as text
        "bands": [],  # [run, test, low, baseline, high] of every run's regression checks
        "changes": [],  # [run, text]
        "latest": [],  # the newest run's values with their verdicts
    }


def _add_checks(
    charts: dict[tuple[Any, ...], dict[str, Any]],
    checks: list[dict[str, Any]],
    newest: list[dict[str, Any]],
    index: dict[str, int],
    tests: dict[str, int],
) -> None:
    """Budget lines and verdicts from the newest run's checks; bands from every run's."""
    by_key = {(c["flow"], c["key"]): c for c in charts.values()}
    entries: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in charts.values():
        for entry in c["latest"]:
            entries[c["flow"], c["key"], entry["test"]].append(entry)
    for check in newest:
        chart = by_key.get((check["flow"], check["key"]))
        if chart is None:
            continue
        for entry in entries[check["flow"], check["key"], check["nodeid"]]:
            entry["verdicts"].append(_verdict_text(check))
        bounds = [check["low"], check["high"]]
        if check["kind"] == "budget" and bounds not in chart["budgets"]:
            chart["budgets"].append(bounds)
    for check in checks:
        chart = by_key.get((check["flow"], check["key"]))
        if chart is not None and check["baseline"] is not None and check["run_id"] in index:
            test = tests.setdefault(check["nodeid"], len(tests))
            band = [_drawn(check[k]) for k in ("low", "baseline", "high")]
            chart["bands"].append([index[check["run_id"]], test, *band])


def _add_domain(chart: dict[str, Any]) -> None:
    """The value axis: the values and bands, and the budgets near them; a budget far away
    (a limit of seconds over values of milliseconds) is named under the chart instead."""
    drawn = [p[2] for p in chart["points"]] + [b[i] for b in chart["bands"] for i in (2, 4)]
    values = [v for v in drawn if v is not None]
    if not values:
        chart["domain"] = None
        return
    low, high = min(values), max(values)
    span = (high - low) or abs(high) * 0.1 or 1.0
    near: list[tuple[float, str]] = []
    far: list[tuple[float, str]] = []
    for bounds in chart["budgets"]:
        for limit, sign in zip(bounds, (">=", "<="), strict=True):
            if limit is None:
                continue
            (near if low - span <= limit <= high + span else far).append((limit, sign))
    low = min([low, *(limit for limit, _ in near)])
    high = max([high, *(limit for limit, _ in near)])
    pad = ((high - low) or span) * 0.05
    domain = [low - pad, high + pad]
    chart["domain"] = domain if all(map(math.isfinite, domain)) else None  # None: Vega's own
    units = f" {chart['units']}" if chart["units"] else ""
    chart["limits"] = [[limit, f"{sign} {fmt_number(limit)}{units}"] for limit, sign in near]
    chart["off_chart"] = [f"{sign} {fmt_number(limit)}{units}" for limit, sign in far]


def _verdict_text(check: dict[str, Any]) -> str:
    """``budget <= 2000: ok``, ``regression baseline 101 (median of 10): regressed +29.6%``."""
    text = f"{check['kind']} {check['limit']}: {check['verdict']}"
    if check["kind"] == "regression" and check["baseline"] is not None:
        text += f" {change_text(check['baseline'], check['value'], check['change_pct'])}"
    return text


def _attention(
    charts: dict[tuple[Any, ...], dict[str, Any]], checks: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    units = {(c["flow"], c["key"]): c["units"] for c in charts.values()}
    ids = {(c["flow"], c["key"]): c["id"] for c in charts.values()}
    out = []
    for c in checks:
        if c["verdict"] not in ATTENTION or (c["flow"], c["key"]) not in ids:
            continue  # fine, or of a flow the page does not show
        check = Check(
            c["nodeid"], c["flow"], c["key"], c["value"], units.get((c["flow"], c["key"])),
            c["kind"], c["limit"], c["verdict"], c["change_pct"], c["noise_pct"],
            baseline=c["baseline"],
        )  # fmt: skip
        out.append(
            {
                "kind": c["kind"],
                "chart": ids.get((c["flow"], c["key"])),
                "text": f"{check.message()} ({c['nodeid']})",
            }
        )
    return out


def _accept(accept: Accept) -> dict[str, Any]:
    """``#2 Login/Login Time (test T) from run R, by ada@ci-7 on 2026-12-06 10:00:00: why``."""
    only = ", ".join(x for x in (accept.nodeid, accept.device) if x)
    text = (
        f"#{accept.id} {accept.flow}/{accept.key}" + (f" ({only})" if only else "")
        + f" from run {accept.from_run}, by {accept.who} on {utc_text(accept.created_at)}"
        + (f": {accept.reason}" if accept.reason else "")
    )  # fmt: skip
    return {"id": accept.id, "flow": accept.flow, "key": accept.key, "text": text}


def _of_branch(data: dict[str, Any]) -> str:
    branch = data.get("branch")
    return f" of branch {html.escape(branch)}" if branch else ""


def _run(run: dict[str, Any]) -> dict[str, Any]:
    started = run.get("started_at")
    return {
        "id": run["run_id"],
        "time": utc_text(started) if started else str(run.get("event_time") or ""),
        "commit": (run.get("git_commit") or "")[:10],
        "branch": run.get("git_branch") or "",
        "outcome": run.get("outcome") or "",
    }


def render(data: dict[str, Any], *, title: str = "pytest-userflow report") -> str:
    """The page: the run, what needs attention, then per flow and key a chart of its values
    over the runs and a table of the newest run's values with their verdicts."""
    bundle = vega_bundle()
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_asset('report.css')}</style></head><body>",
        f'<header><h1>{esc(title)}</h1><p class="meta">made {esc(data["generated"])}, '
        f"{len(data['runs'])} run(s){_of_branch(data)}, {len(data['charts'])} key(s)</p>",
        _run_table(data),
        "</header>",
        _attention_list(data),
        _accepts_list(data),
        _contents(data),
    ]
    parts += [_section(chart) for chart in data["charts"]]
    page_data = {
        "runs": data["runs"],
        "tests": data["tests"],
        "statusNames": data["statusNames"],
        "charts": [
            {k: chart[k] for k in _CHART_FIELDS} for chart in data["charts"] if chart["points"]
        ],
    }
    parts += [
        '<script type="application/json" id="userflow-data">',
        # No "<" at all in the data: no key or test name can end the script element.
        json.dumps(page_data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c"),
        "</script>",
        f"<script>{_script_text(bundle)}</script>",
        f"<script>{_asset('report.js')}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_CHART_FIELDS = (
    "id", "flow", "key", "units", "points", "medians", "limits", "bands", "changes", "domain",
)  # fmt: skip


def _script_text(text: str) -> str:
    """*text* safe inside a script element: it cannot close the element early. ``<\\/`` means
    ``</`` in a JSON or JavaScript string and in a regular expression alike."""
    return _CLOSE_SCRIPT.sub(r"<\\/\1", text)


_CLOSE_SCRIPT = re.compile(r"</(script)", re.IGNORECASE)


def _run_table(data: dict[str, Any]) -> str:
    run = data["run"]
    statuses = data["statuses"]
    tests = ", ".join(f"{statuses[s]} {s}" for s in STATUS_NAMES if statuses.get(s)) or "none"
    if run is None:
        return f"<p>newest point's tests: {html.escape(tests)}</p>"
    cells = [
        ("run", run["run_id"]),
        ("started", utc_text(run["started_at"])),
        ("finished", run.get("finished_at") and utc_text(run["finished_at"])),
        ("outcome", run.get("outcome")),
        ("host", run.get("host")),
        ("git", " ".join(x for x in (run.get("git_branch"), run.get("git_commit")) if x)),
        ("CI build", run.get("ci_build_id")),
        ("backend", run.get("backend")),
        ("tests", tests),
    ]
    rows = "".join(
        f"<tr><th>{name}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in cells
        if value
    )
    return f'<table class="run">{rows}</table>'


def _attention_list(data: dict[str, Any]) -> str:
    items = data["attention"]
    if not items:
        return (
            '<section id="attention"><h2>Needs attention</h2><p class="fine">Nothing: no budget '
            f"breach or regression in the newest run, no worse change in the last {RECENT_RUNS} "
            "runs.</p></section>"
        )
    lines = "".join(
        f'<li class="{item["kind"]}"><a href="#{item["chart"]}">{html.escape(item["text"])}</a>'
        "</li>"
        for item in items
    )
    title = f"<h2>Needs attention ({len(items)})</h2>"
    return f'<section id="attention">{title}<ul>{lines}</ul></section>'


def _accepts_list(data: dict[str, Any]) -> str:
    """The levels said to be intended, whose changes need no attention."""
    items = data.get("accepts") or []
    if not items:
        return ""
    lines = "".join(f"<li>{html.escape(item['text'])}</li>" for item in items)
    return (
        '<section id="accepts"><h2>Accepted levels</h2><p class="fine">pytest-userflow accept: '
        f"the gate's baseline of these series starts at the run named.</p><ul>{lines}</ul>"
        "</section>"
    )


def _contents(data: dict[str, Any]) -> str:
    flows: dict[str, list[str]] = defaultdict(list)
    for chart in data["charts"]:
        label = chart["key"] + (f" ({chart['type']})" if chart["type"] else "")
        flows[chart["flow"]].append(f'<a href="#{chart["id"]}">{html.escape(label)}</a>')
    items = "".join(
        f"<li><b>{html.escape(flow)}</b>: {', '.join(links)}</li>" for flow, links in flows.items()
    )
    return f"<nav><h2>Flows and keys</h2><ul>{items}</ul></nav>"


def _section(chart: dict[str, Any]) -> str:
    esc = html.escape
    about = ", ".join(x for x in (chart["type"], chart["units"]) if x)
    head = (
        f'<section class="key" id="{chart["id"]}" data-flow="{esc(chart["flow"])}" '
        f'data-key="{esc(chart["key"])}" data-points="{len(chart["points"])}">'
        f"<h3>{esc(chart['flow'])} / {esc(chart['key'])}"
        + (f' <span class="fine">{esc(about)}</span>' if about else "")
        + "</h3>"
    )
    if chart["points"]:
        body = f'<div class="plot" id="{chart["id"]}-plot"></div>'
        legend = [
            "points: each test's value (passed, failed, failed by the gate, excluded apart)",
            "line: the median per run of the tests that passed, the gate's failures included",
        ]
        if chart["limits"]:
            legend.append("red: budgets")
        if chart["off_chart"]:
            legend.append(f"budget {', '.join(chart['off_chart'])}, off the chart")
        if chart["bands"]:
            legend.append("green: each test's baseline, and the band its noise explains")
        if chart["changes"]:
            legend.append("orange: where a change began")
        body += f'<p class="fine legend">{esc("; ".join(legend))}</p>'
    else:
        body = '<p class="fine">Its values are not numbers: listed, not drawn.</p>'
    rows = "".join(
        "<tr>"
        f"<td>{esc(e['test'])}</td><td>{esc(e['device'] or '-')}</td>"
        f'<td class="num">{esc(_value_text(e["value"], chart["units"]))}</td>'
        f'<td class="{e["status"].lower().replace(" ", "-")}">{esc(e["status"])}</td>'
        f"<td>{esc('; '.join(e['verdicts']) or '-')}</td>"
        "</tr>"
        for e in chart["latest"]
    )
    table = (
        '<table class="latest"><caption>the newest run\'s values</caption><tr><th>test</th>'
        f"<th>device</th><th>value</th><th>status</th><th>verdict</th></tr>{rows}</table>"
        if rows
        else '<p class="fine">Not measured in the newest run.</p>'
    )
    return head + body + table + "</section>"


def _value_text(value: Any, units: str | None) -> str:
    text = fmt_number(value) if is_number(value) else str(value)
    return f"{text} {units}" if units and is_number(value) else text


def _asset(name: str) -> str:
    """A file shipped beside this module: the page's style and script."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def write(path: str | Path, data: dict[str, Any]) -> int:
    """Render *data* into *path* whole (a reader never sees half a page); its size in bytes."""
    page = render(data).encode("utf-8")
    write_file(path, page)
    return len(page)
