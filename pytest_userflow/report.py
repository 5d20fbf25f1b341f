"""The end of a run: each process's summary (plain data, so xdist workers can hand it to
the controller), the terminal section and the JSON report. No pytest import."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .analysis import change_text, fmt_number, median
from .gate import MIN_HISTORY, Budget, BudgetUse
from .model import STATUSES, RunInfo, utc_text
from .storage import FAILED, LOCAL_ONLY, PENDING, SENT, History, shown

_UPLOAD_DESTINATIONS = {
    SENT: "headspin",
    PENDING: "pending",
    FAILED: "failed",
    LOCAL_ONLY: "local-only",
}
MAX_NAMED = 10
MAX_CHECK_ROWS = 50


def destination(backend: str, dry_run: bool, upload_state: str | None) -> str:
    if dry_run:
        return "dry-run"
    if backend == "headspin":
        return _UPLOAD_DESTINATIONS.get(upload_state or "", "local")
    return backend


def process_summary(
    store: History | None,
    run_id: str,
    *,
    worker: str | bool | None,
    device: str | None,
    backend: str,
    dry_run: bool,
    notes: dict[str, Any],
    with_events: bool = False,
) -> dict[str, Any]:
    """What this process (or, with worker=False, the whole run) recorded, read from the
    store; each test only when *with_events* (the JSON report) asks for them."""
    agg: dict[str, Any] = {"flows": {}, "keys": [], "pending": {"tests": 0, "measurements": 0}}
    if store is not None:
        agg = store.run_summary(run_id, worker)
    for flow in agg["flows"].values():
        places: dict[str, int] = defaultdict(int)
        for state, n in flow.pop("places").items():
            places[destination(backend, dry_run, state or None)] += n
        flow["places"] = dict(places)
    summary = {
        "worker": None if worker is False else worker,
        "device": device,
        "backend": backend,
        "dry_run": dry_run,
        **agg,
        **notes,
    }
    if with_events:
        events = []
        if store is not None:
            events = store.tests(run_id, worker if isinstance(worker, str) else None)
        for event in events:
            event["destination"] = destination(backend, dry_run, event.pop("upload_state"))
        summary["events"] = events
    return summary


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Flows, keys and pending counts of several processes as one.

    Each process hands its values, so a key measured on several workers gets the median
    of all of them.
    """
    flows: dict[str, dict[str, Any]] = {}
    keys: dict[tuple[Any, ...], dict[str, Any]] = {}
    pending = {"tests": 0, "measurements": 0}
    reruns: list[list[Any]] = []
    for s in summaries:
        reruns += s.get("reruns", [])
        for name, flow in s.get("flows", {}).items():
            into = flows.setdefault(
                name,
                {
                    "tests": 0,
                    "statuses": defaultdict(int),
                    "places": defaultdict(int),
                    "left_out": 0,
                    "by_gate": 0,
                },
            )
            into["tests"] += flow["tests"]
            into["left_out"] += flow.get("left_out", 0)
            into["by_gate"] += flow.get("by_gate", 0)
            for status, n in flow["statuses"].items():
                into["statuses"][status] += n
            for place, n in flow["places"].items():
                into["places"][place] += n
        for row in s.get("keys", []):
            group = (row["flow"], row["key"], row["type"], row["device"], row["units"])
            have = keys.setdefault(group, {**row, "count": 0, "values": []})
            have["count"] += row["count"]
            have["values"] += row["values"]
        for name in pending:
            pending[name] += s.get("pending", {}).get(name, 0)
    for have in keys.values():
        values = have["values"]
        have.update(
            numeric=len(values),
            min=min(values) if values else None,
            median=median(values) if values else None,
            max=max(values) if values else None,
        )
    return {"flows": flows, "keys": list(keys.values()), "pending": pending, "reruns": reruns}


def _names(nodeids: list[str]) -> str:
    shown = ", ".join(nodeids[:MAX_NAMED])
    return shown + (f" and {len(nodeids) - MAX_NAMED} more" if len(nodeids) > MAX_NAMED else "")


def key_rows(keys: list[dict[str, Any]], *, with_device: bool) -> list[list[str]]:
    """Per key and type (the API keeps them apart), and per device when there are devices:
    count, min, median, max and units. The first row is the header."""
    with_type = any(k["type"] for k in keys)
    header = ["key", *(["type"] if with_type else []), *(["device"] if with_device else [])]
    rows = [[*header, "n", "min", "median", "max", "units"]]
    order = sorted(
        keys, key=lambda k: (k["key"], k["type"] or "", k["device"] or "", k["units"] or "")
    )
    for k in order:
        stats = ["-"] * 3
        if k["numeric"]:
            stats = [fmt_number(k["min"]), fmt_number(k["median"]), fmt_number(k["max"])]
        labels = [
            shorten(k["key"]),
            *([k["type"] or "-"] if with_type else []),
            *([k["device"] or "-"] if with_device else []),
        ]
        rows.append([*labels, str(k["count"]), *stats, k["units"] or "-"])
    return rows


def _unused_budgets(summaries: list[dict[str, Any]], budgets: Sequence[Budget]) -> list[str]:
    """The budgets that checked nothing in the whole run: every worker's tests together."""
    use = BudgetUse()
    for s in summaries:
        if s.get("budget_use"):
            use.merge(BudgetUse.from_data(s["budget_use"]))
    return use.unused(budgets)


def _checks_section(
    summaries: list[dict[str, Any]], budgets: Sequence[Budget] = ()
) -> list[tuple[str, dict[str, bool]]]:
    """Budgets and regressions: each checked value with its limit, change and verdict."""
    checks = sorted(
        (c for s in summaries for c in s.get("checks", [])),
        key=lambda c: (c["verdict"] == "ok", c["nodeid"], c["key"]),
    )
    no_history = sorted({h for s in summaries for h in s.get("no_history", [])})
    unused = _unused_budgets(summaries, budgets)
    out: list[tuple[str, dict[str, bool]]] = []
    if (
        not checks
        and not no_history
        and not unused
        and not any(s.get("changes") for s in summaries)
    ):
        return out
    failed = sum(1 for c in checks if c["verdict"] not in ("ok", "within the noise"))
    out.append((f"budgets and regressions: {len(checks)} checked, {failed} not ok", {"bold": True}))
    if checks:
        rows = [["test", "key", "value", "budget / baseline", "noise", "change", "verdict"]]
        for c in checks[:MAX_CHECK_ROWS]:
            units = f" {c['units']}" if c.get("units") else ""
            change = change_text(c.get("baseline"), c["value"], c.get("change_pct"))
            noise = "-"
            if c.get("noise_pct") is not None:
                noise = f"{c['noise_pct']:.1f}%"
            elif c.get("spread") is not None:
                noise = f"{c['spread']:.4g}{units}"
            key = shorten(f"{c['flow']}/{c['key']}")
            row = [shorten(c["nodeid"], 2 * MAX_CELL), key, f"{c['value']:g}{units}"]
            rows.append([*row, c["limit"], noise, change, c["verdict"]])
        out += [(line, {}) for line in format_table(rows, "  ")]
        if len(checks) > MAX_CHECK_ROWS:
            out.append((f"  ... and {len(checks) - MAX_CHECK_ROWS} more (all ok)", {}))
    if unused:
        text = "WARNING: budgets whose key no test of their flow recorded (a typo?): "
        out.append((text + "; ".join(unused), {"yellow": True}))
    for c in (c for s in summaries for c in s.get("changes", [])):
        see = f"see pytest-userflow changes --flow {shlex.quote(c['flow'])}"
        out.append((f"worse change confirmed: {describe_change(c)}; {see}", {"red": True}))
    if no_history:
        text = (
            f"no regression verdict yet, too little history (fewer than {MIN_HISTORY} passed "
            "values of the same test and device): "
        )
        out.append((text + ", ".join(no_history), {"yellow": True}))
    return out


def branch_text(run: RunInfo) -> str:
    """``, branch topic; baseline branch main up to run 3f2a...``: the run's branch and, on
    another branch, the one it is gated against (empty where the branch is unknown)."""
    if run.baseline_branch is None:
        return ""
    text = f", branch {run.git_branch}"
    if run.git_branch != run.baseline_branch:
        text += f"; baseline branch {run.baseline_branch}"
        text += f" up to run {run.fork_run}" if run.fork_run else ""
    return text


def describe_change(change: dict[str, Any]) -> str:
    """``Login/Login Time (test_login.py::test_login) +30.5% (median 100 -> 130.5 ms) since
    run R, commit C, 3 run(s) ago``: a change as ``analysis.find_changes`` gives it (of one
    test on one device, or of a flow's pooled series), for the summary and the report."""
    units = f" {change['units']}" if change.get("units") else ""
    commit = f", commit {change['git_commit'][:10]}" if change.get("git_commit") else ""
    parts = [shorten(change[k], 2 * MAX_CELL) for k in ("test", "device") if change.get(k)]
    where = f" ({' on '.join(parts)})" if parts else ""
    return (
        f"{change['flow']}/{change['key']}{where} "
        f"{change_text(change['before'], change['after'], change['change_pct'])} (median "
        f"{fmt_number(change['before'])} -> {fmt_number(change['after'])}{units}) since run "
        f"{change['run_id']}{commit}, {change['runs_ago']} run(s) ago"
    )


#: The widest cell the terminal summary shows; the store and the report keep the whole text.
MAX_CELL = 60


def shorten(text: str, limit: int = MAX_CELL) -> str:
    """*text*, cut to *limit* characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_table(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render(
    summaries: Iterable[dict[str, Any]],
    *,
    run: RunInfo | None,
    where: str,
    crashed: Iterable[str] = (),
    push: str = "pytest-userflow push",
    budgets: Sequence[Budget] = (),
) -> list[tuple[str, dict[str, bool]]]:
    """The terminal section: (line, markup) pairs; empty when nothing was recorded. *push*:
    the command that sends what is pending from this store."""
    summaries = list(summaries)
    total = merge(summaries)
    out: list[tuple[str, dict[str, bool]]] = []
    warn = {"yellow": True}
    crashed = list(crashed)
    if (
        not total["flows"]
        and not crashed
        and not any(
            s.get("auth_error")
            or s.get("unroutable")
            or s.get("errors")
            or s.get("no_history")
            or s.get("unreachable")
            or s.get("send_errors")
            or s.get("html")
            for s in summaries
        )
    ):
        return out
    run_text = f" (run {run.run_id}{branch_text(run)})" if run else ""
    out.append((f"{where}{run_text}", {"bold": True}))
    with_device = any(k["device"] for k in total["keys"])
    for flow in sorted(total["flows"]):
        entry = total["flows"][flow]
        statuses = entry["statuses"]
        status_text = ", ".join(
            f"{statuses[s]} {s}"
            + (
                f", {entry['by_gate']} of them only by the gate"
                if s == "Failed" and entry["by_gate"]
                else ""
            )
            for s in STATUSES
            if statuses.get(s)
        )
        places = entry["places"]
        n = sum(places.values())
        place_text = ", ".join(
            f"{count} {_PLACE_WORDS.get(place, place)}"
            for place, count in sorted(places.items())
            if count
        )
        tests = f"{entry['tests']} test{'s' if entry['tests'] != 1 else ''}"
        out.append(
            (
                f"flow {flow!r}: {tests} ({status_text}); {n} measurement"
                f"{'s' if n != 1 else ''}" + (f": {place_text}" if place_text else ""),
                {},
            )
        )
        rows = key_rows([k for k in total["keys"] if k["flow"] == flow], with_device=with_device)
        if len(rows) > 1:
            out += [(line, {}) for line in format_table(rows, "  ")]
        if entry.get("left_out"):
            out.append((
                "  (n: values of passed and failed tests, as 'pytest-userflow stats' counts "
                f"them; {entry['left_out']} value(s) of excluded tests left out)",
                {},
            ))  # fmt: skip
    units = sorted({u for s in summaries for u in s.get("unit_changes", [])})
    for line in units[:MAX_NAMED]:
        out.append((f"WARNING: {line}: their values are summarised apart", warn))
    if len(units) > MAX_NAMED:
        out.append((f"WARNING: ... and {len(units) - MAX_NAMED} more tests changed units", warn))
    reruns = sorted(total.get("reruns", []))
    if reruns:
        named = _names([f"{shorten(nodeid, 2 * MAX_CELL)} ({n} attempts)" for nodeid, n in reruns])
        out.append((
            f"{len(reruns)} test(s) took more than one attempt (pytest-rerunfailures); their "
            f"values are the last attempt's: {named}",
            warn,
        ))  # fmt: skip
    foreign = sorted(n for s in summaries for n in s.get("foreign_tags", []))
    if foreign:
        out.append((
            f"WARNING: {len(foreign)} test(s) carry @pytest.mark.userflow with no flow name "
            "(another plugin's tag?), so what they recorded went to the flow of a test with no "
            f"marker; name one with @pytest.mark.userflow(\"Login\"): {_names(foreign)}",
            warn,
        ))  # fmt: skip
    out += _checks_section(summaries, budgets)
    for s in summaries:
        label = f" on {s['worker']}" if s.get("worker") else ""
        if s.get("dry_run_lines"):
            out.append((f"dry run{label}: the requests that would be sent", {"bold": True}))
            out += [("  " + line, {}) for line in s["dry_run_lines"]]
        if s.get("unroutable"):
            out.append(
                (
                    f"WARNING{label}: {len(s['unroutable'])} test(s) have no HeadSpin session "
                    "(userflow.attach_session) and no device (--userflow-device): their "
                    f"measurements are kept in the local store only: {_names(s['unroutable'])}",
                    warn,
                )
            )
        if s.get("auth_error"):
            out.append(
                (
                    f"ERROR{label}: HeadSpin refused the API token: {s['auth_error']}; "
                    f"the data stays pending for '{push}'.",
                    {"red": True, "bold": True},
                )
            )
        if s.get("unreachable"):
            out.append(
                (
                    f"ERROR{label}: HeadSpin could not be reached ({s['unreachable']}): sending "
                    "stopped, and what was not sent stays pending for 'pytest-userflow push'",
                    {"red": True, "bold": True},
                )
            )
        for sid, shared in sorted(s.get("shared_sessions", {}).items()):
            out.append(
                (
                    f"session {sid} in flow {shared['flow']!r}{label}: shared by "
                    f"{shared['tests']} tests, sent as {shared['status']}",
                    {},
                )
            )
        if s.get("legacy"):
            out.append(
                (
                    f"legacy API{label}: the upload route carries no status message and no flow "
                    "description; tests with a device and no session went through the "
                    "/v0/userflows routes",
                    {},
                )
            )
        for kind, errors in (
            ("upload refused", s.get("send_errors", [])),
            ("ERROR", s.get("errors", [])),
        ):
            out += [(f"{kind}{label}: {error}", {"red": True}) for error in errors[:MAX_NAMED]]
            if len(errors) > MAX_NAMED:
                more = len(errors) - MAX_NAMED
                out.append((f"{kind}{label}: ... and {more} more (the JSON report has all)", {}))
    pending = total["pending"]
    if pending["tests"]:
        out.append(
            (
                f"{pending['tests']} test(s) with {pending['measurements']} measurement(s) are "
                f"still pending in the local store: run '{push}' to send them",
                warn,
            )
        )
    out += [(f"HTML report: {s['html']}", {}) for s in summaries if s.get("html")]
    for worker in crashed:
        out.append(
            (
                f"worker {worker} died: its finished tests are in its local store; "
                f"run '{push}' on that host to send what is pending",
                warn,
            )
        )
    return out


_PLACE_WORDS = {
    "local": "stored locally",
    "headspin": "uploaded",
    "pending": "pending",
    "failed": "refused by HeadSpin",
    "local-only": "kept locally only",
    "dry-run": "dry run",
}


def build_report(
    run: RunInfo | None,
    summaries: Iterable[dict[str, Any]],
    *,
    backend: str,
    store: Path | str | None,
    url: str | None,
    crashed: Iterable[str] = (),
) -> dict[str, Any]:
    summaries = list(summaries)
    tests = sorted((e for s in summaries for e in s.get("events", [])), key=lambda e: e["nodeid"])
    return {
        "run": {**run.as_dict(), "finished_at": utc_text(time.time())} if run else None,
        "backend": backend,
        "store": shown(store) if store else None,
        "headspin_url": url if backend == "headspin" else None,
        "tests": tests,
        "warnings": {
            "unroutable": [n for s in summaries for n in s.get("unroutable", [])],
            "auth_error": next((s["auth_error"] for s in summaries if s.get("auth_error")), None),
            "unreachable": next(
                (s["unreachable"] for s in summaries if s.get("unreachable")), None
            ),
            "upload_errors": [e for s in summaries for e in s.get("send_errors", [])],
            "errors": [e for s in summaries for e in s.get("errors", [])],
            "unnamed_flow_marker": sorted(n for s in summaries for n in s.get("foreign_tags", [])),
            "crashed_workers": list(crashed),
            "no_baseline_history": sorted({h for s in summaries for h in s.get("no_history", [])}),
            "unit_changes": sorted({u for s in summaries for u in s.get("unit_changes", [])}),
        },
    }


def write_file(path: str | Path, data: bytes) -> None:
    """Write *path* whole: a reader never sees half a file. The data goes to a new file of a
    random name in the same folder (O_EXCL: never one that exists, so a planted link is not
    followed), which then takes *path*'s place (a link at *path* is replaced, not written
    through)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_report(path: Path, report: dict[str, Any]) -> None:
    write_file(path, (json.dumps(report, indent=2, sort_keys=False, default=str) + "\n").encode())
