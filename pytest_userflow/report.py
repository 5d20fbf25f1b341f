"""The end of a run: each process's summary (plain data, so xdist workers can hand it to
the controller), the terminal section and the JSON report. No pytest import.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .analysis import change_text, fmt_number, median
from .gate import MIN_HISTORY, Budget, Check
from .model import (
    STATUSES,
    FlowTally,
    KeyValues,
    ProcessSummary,
    RunInfo,
    RunSummary,
    SinkNotes,
    escape_controls,
    utc_text,
)
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


def read_process(
    store: History | None,
    run_id: str,
    summary: ProcessSummary,
    *,
    backend: str,
    dry_run: bool,
    with_events: bool = False,
) -> ProcessSummary:
    """*summary* with what its process (its ``worker``) recorded, read from the store; each
    test only when *with_events* (the JSON report) asks for them."""
    if store is None:
        return summary
    worker = summary.worker
    agg = store.run_summary(run_id, worker)
    for name, flow in agg["flows"].items():
        places: dict[str, int] = defaultdict(int)
        for state, n in flow.pop("places").items():
            places[destination(backend, dry_run, state or None)] += n
        summary.flows[name] = FlowTally(**flow, places=dict(places))
    summary.keys = [KeyValues(**row) for row in agg["keys"]]
    summary.pending_tests = agg["pending"]["tests"]
    summary.pending_measurements = agg["pending"]["measurements"]
    summary.pending_team = agg["pending"].get("team", 0)
    summary.reruns = [(nodeid, attempts) for nodeid, attempts in agg["reruns"]]
    if with_events:
        events = store.tests(run_id, worker)
        for event in events:
            event["destination"] = destination(backend, dry_run, event.pop("upload_state"))
            team = event.pop("team_state", None)
            if summary.sink.team_store:
                event["team_store"] = _TEAM_STATES.get(team or "", team)
        summary.tests = events
    return summary


def _names(nodeids: list[str]) -> str:
    shown = ", ".join(nodeids[:MAX_NAMED])
    return shown + (f" and {len(nodeids) - MAX_NAMED} more" if len(nodeids) > MAX_NAMED else "")


def key_rows(keys: list[KeyValues], *, with_device: bool) -> list[list[str]]:
    """Per key and type (the API keeps them apart), and per device when there are devices:
    count, min, median, max and units. The first row is the header."""
    with_type = any(k.type for k in keys)
    header = ["key", *(["type"] if with_type else []), *(["device"] if with_device else [])]
    rows = [[*header, "n", "min", "median", "max", "units"]]
    order = sorted(keys, key=lambda k: (k.key, k.type or "", k.device or "", k.units or ""))
    for k in order:
        stats = ["-"] * 3
        if k.values:
            low, mid, high = min(k.values), median(k.values), max(k.values)
            stats = [fmt_number(low), fmt_number(mid), fmt_number(high)]
        labels = [
            shorten(k.key),
            *([k.type or "-"] if with_type else []),
            *([k.device or "-"] if with_device else []),
        ]
        rows.append([*labels, str(k.count), *stats, k.units or "-"])
    return rows


#: Terminal lines: (text, markup) pairs.
Lines = list[tuple[str, dict[str, bool]]]
WARN = {"yellow": True}
ERROR = {"red": True, "bold": True}


def not_ok(check: Check) -> bool:
    """A breach or a regression, whether or not it fails its test (warning mode)."""
    return check.verdict not in ("ok", "within the noise")


def sorted_checks(total: ProcessSummary) -> list[Check]:
    """The run's checks, those not ok first."""
    return sorted(total.checks, key=lambda c: (c.verdict == "ok", c.nodeid, c.key))


def noise_cell(check: Check) -> str:
    """The baseline's noise: in percent of its median, else in the key's units."""
    if check.noise_pct is not None:
        return f"{check.noise_pct:.1f}%"
    if check.spread is not None:
        return f"{check.spread:.4g}{with_units('', check.units)}"
    return "-"


def with_units(text: str, units: str | None) -> str:
    return f"{text} {units}" if units else text


def _check_rows(checks: list[Check]) -> Lines:
    rows = [["test", "key", "value", "budget / baseline", "noise", "change", "verdict"]]
    for c in checks[:MAX_CHECK_ROWS]:
        key = shorten(f"{c.flow}/{c.key}")
        row = [shorten(c.nodeid, 2 * MAX_CELL), key, with_units(f"{c.value:g}", c.units)]
        rows.append([*row, c.limit, noise_cell(c), c.change_text(), c.verdict])
    out: Lines = [(line, {}) for line in format_table(rows, "  ")]
    if len(checks) > MAX_CHECK_ROWS:
        out.append((f"  ... and {len(checks) - MAX_CHECK_ROWS} more (all ok)", {}))
    return out


def _checks_section(summary: RunSummary, total: ProcessSummary, budgets: Sequence[Budget]) -> Lines:
    """Budgets and regressions: each checked value with its limit, change and verdict."""
    checks = sorted_checks(total)
    unused = total.budget_use.unused(budgets) if total.budget_use else []
    if not checks and not total.no_history and not unused and not summary.changes:
        return []
    failed = sum(1 for c in checks if not_ok(c))
    out: Lines = [
        (f"budgets and regressions: {len(checks)} checked, {failed} not ok", {"bold": True})
    ]
    if checks:
        out += _check_rows(checks)
    if unused:
        text = "WARNING: budgets whose key no test of their flow recorded (a typo?): "
        out.append((text + "; ".join(unused), WARN))
    for c in summary.changes:
        see = f"see pytest-userflow changes --flow {shlex.quote(c['flow'])}"
        out.append((f"worse change confirmed: {describe_change(c)}; {see}", {"red": True}))
    if total.no_history:
        text = (
            f"no regression verdict yet, too little history (fewer than {MIN_HISTORY} passed "
            "values of the same test and device): "
        )
        out.append((text + ", ".join(total.no_history), WARN))
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
    """Left-aligned columns, two spaces apart; the first row is the header. Control
    characters in a cell are shown as escapes: a label or value from a store or a server
    cannot move the cursor, retitle the window or break a row."""
    rows = [[escape_controls(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _has_news(summary: RunSummary, total: ProcessSummary) -> bool:
    """Whether the run has anything for its summary."""
    sink = total.sink
    return bool(
        total.flows
        or summary.crashed
        or sink.auth_error
        or sink.unroutable
        or total.errors
        or summary.errors
        or total.no_history
        or sink.unreachable
        or sink.send_errors
        or summary.html
    )


def _flow_lines(total: ProcessSummary) -> Lines:
    """Each flow: its tests by status, where its measurements went, its keys' statistics."""
    out: Lines = []
    with_device = any(k.device for k in total.keys)
    for name, flow in total.flows.items():
        statuses = []
        for status in STATUSES:
            if flow.statuses.get(status):
                gate = f", {flow.by_gate} of them only by the gate"
                by_gate = status == "Failed" and flow.by_gate
                statuses.append(f"{flow.statuses[status]} {status}" + (gate if by_gate else ""))
        n = sum(flow.places.values())
        places = ", ".join(
            f"{count} {_PLACE_WORDS.get(place, place)}"
            for place, count in sorted(flow.places.items())
            if count
        )
        tests = f"{flow.tests} test{'s' if flow.tests != 1 else ''}"
        line = f"flow {name!r}: {tests} ({', '.join(statuses)}); {n} measurement"
        out.append((line + ("s" if n != 1 else "") + (f": {places}" if places else ""), {}))
        rows = key_rows([k for k in total.keys if k.flow == name], with_device=with_device)
        if len(rows) > 1:
            out += [(line, {}) for line in format_table(rows, "  ")]
        if flow.left_out:
            out.append((
                "  (n: values of passed and failed tests, as 'pytest-userflow stats' counts "
                f"them; {flow.left_out} value(s) of excluded tests left out)",
                {},
            ))  # fmt: skip
    return out


def _run_warnings(summary: RunSummary, total: ProcessSummary) -> Lines:
    """Units that changed, tests run more than once, and markers that named no flow."""
    out: Lines = []
    units = summary.unit_changes
    for line in units[:MAX_NAMED]:
        out.append((f"WARNING: {line}: their values are summarised apart", WARN))
    if len(units) > MAX_NAMED:
        out.append((f"WARNING: ... and {len(units) - MAX_NAMED} more tests changed units", WARN))
    reruns = sorted(total.reruns)
    if reruns:
        named = _names([f"{shorten(nodeid, 2 * MAX_CELL)} ({n} attempts)" for nodeid, n in reruns])
        out.append((
            f"{len(reruns)} test(s) took more than one attempt (pytest-rerunfailures); their "
            f"values are the last attempt's: {named}",
            WARN,
        ))  # fmt: skip
    foreign = sorted(total.foreign_tags)
    if foreign:
        out.append((
            f"WARNING: {len(foreign)} test(s) carry @pytest.mark.userflow with no flow name "
            "(another plugin's tag?), so what they recorded went to the flow of a test with no "
            f"marker; name one with @pytest.mark.userflow(\"Login\"): {_names(foreign)}",
            WARN,
        ))  # fmt: skip
    return out


def _error_lines(kind: str, label: str, errors: list[str]) -> Lines:
    out: Lines = [(f"{kind}{label}: {error}", {"red": True}) for error in errors[:MAX_NAMED]]
    if len(errors) > MAX_NAMED:
        more = len(errors) - MAX_NAMED
        out.append((f"{kind}{label}: ... and {more} more (the JSON report has all)", {}))
    return out


def _sink_lines(sink: SinkNotes, label: str, push: str) -> Lines:
    """What one process's sender said: its dry run, and what it could not send."""
    out: Lines = []
    if sink.dry_run_lines:
        out.append((f"dry run{label}: the requests that would be sent", {"bold": True}))
        out += [("  " + line, {}) for line in sink.dry_run_lines]
    if sink.unroutable:
        out.append((
            f"WARNING{label}: {len(sink.unroutable)} test(s) have no HeadSpin session "
            "(userflow.attach_session) and no device (--userflow-device): their "
            f"measurements are kept in the local store only: {_names(sink.unroutable)}",
            WARN,
        ))  # fmt: skip
    if sink.auth_error:
        out.append((
            f"ERROR{label}: HeadSpin refused the API token: {sink.auth_error}; "
            f"the data stays pending for '{push}'.",
            ERROR,
        ))  # fmt: skip
    if sink.team_error:
        out.append((
            f"ERROR{label}: the team store did not take the tests ({sink.team_error}): "
            "delivery stopped, and what was not delivered waits in the outbox for "
            "'pytest-userflow push'",
            ERROR,
        ))  # fmt: skip
    if sink.unreachable:
        out.append((
            f"ERROR{label}: HeadSpin could not be reached ({sink.unreachable}): sending "
            "stopped, and what was not sent stays pending for 'pytest-userflow push'",
            ERROR,
        ))  # fmt: skip
    for sid, shared in sorted(sink.shared_sessions.items()):
        out.append((
            f"session {sid} in flow {shared.flow!r}{label}: shared by {shared.tests} tests, "
            f"sent as {shared.status}",
            {},
        ))  # fmt: skip
    if sink.legacy:
        out.append((
            f"legacy API{label}: the upload route carries no status message and no flow "
            "description; tests with a device and no session went through the "
            "/v0/userflows routes",
            {},
        ))  # fmt: skip
    return out


def _process_lines(summary: RunSummary, push: str) -> Lines:
    """Each process's own notes, named by its worker under xdist; then the run's errors."""
    out: Lines = []
    for s in summary.processes:
        label = f" on {s.worker}" if s.worker else ""
        out += _sink_lines(s.sink, label, push)
        out += _error_lines("upload refused", label, s.sink.send_errors)
        out += _error_lines("ERROR", label, s.errors)
    return out + _error_lines("ERROR", "", summary.errors)


def _end_lines(summary: RunSummary, total: ProcessSummary, push: str) -> Lines:
    """What is still pending, the HTML report, and the workers that died."""
    out: Lines = []
    if total.pending_tests:
        out.append((
            f"{total.pending_tests} test(s) with {total.pending_measurements} measurement(s) "
            f"are still pending in the local store: run '{push}' to send them",
            WARN,
        ))  # fmt: skip
    team = total.sink
    if team.team_store:
        left = total.pending_team
        deliver = " in the outbox: run 'pytest-userflow push' to deliver them" if left else ""
        out.append((
            f"team store {team.team_store}: {team.team_delivered} test(s) delivered, {left} "
            f"pending{deliver}",
            WARN if left else {},
        ))  # fmt: skip
    if summary.html:
        out.append((f"HTML report: {summary.html}", {}))
    for worker in summary.crashed:
        out.append((
            f"worker {worker} died: its finished tests are in its local store; "
            f"run '{push}' on that host to send what is pending",
            WARN,
        ))  # fmt: skip
    return out


def render(
    summary: RunSummary,
    *,
    run: RunInfo | None,
    where: str,
    push: str = "pytest-userflow push",
    budgets: Sequence[Budget] = (),
) -> Lines:
    """The terminal section: (line, markup) pairs; empty when nothing was recorded. *push*:
    the command that sends what is pending from this store."""
    total = summary.total()
    if not _has_news(summary, total):
        return []
    run_text = f" (run {run.run_id}{branch_text(run)})" if run else ""
    out: Lines = [(f"{where}{run_text}", {"bold": True})]
    out += _flow_lines(total)
    out += _run_warnings(summary, total)
    out += _checks_section(summary, total, budgets)
    out += _process_lines(summary, push)
    return out + _end_lines(summary, total, push)


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
    summary: RunSummary,
    *,
    backend: str,
    store: Path | str | None,
    url: str | None,
    outbox: Path | None = None,
) -> dict[str, Any]:
    total = summary.total()
    sink = total.sink
    return {
        "run": {**run.as_dict(), "finished_at": utc_text(time.time())} if run else None,
        "backend": backend,
        "store": shown(store) if store else None,
        "outbox": str(outbox) if outbox else None,
        "team_store": _team_report(total),
        "headspin_url": url if backend == "headspin" else None,
        "tests": sorted(total.tests, key=lambda e: e["nodeid"]),
        "warnings": {
            "unroutable": sink.unroutable,
            "auth_error": sink.auth_error,
            "unreachable": sink.unreachable,
            "upload_errors": sink.send_errors,
            "errors": total.errors + summary.errors,
            "unnamed_flow_marker": sorted(total.foreign_tags),
            "crashed_workers": summary.crashed,
            "no_baseline_history": total.no_history,
            "unit_changes": summary.unit_changes,
        },
    }


# -- the markdown summary ----------------------------------------------------------------------

#: What markdown would read as syntax in a table cell: escaped with a backslash.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~#!])")


def md_text(text: str) -> str:
    """*text* as literal markdown on one line: a hostile key can neither end a table cell
    (``|``, a line break) nor open a code span, a link, an image or HTML."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).splitlines()))


def markdown_table(rows: list[list[str]]) -> list[str]:
    """A GitHub-flavoured markdown table, every cell escaped; the first row is the header."""
    header, *body = rows
    lines = ["| " + " | ".join(md_text(c) for c in header) + " |"]
    lines.append("|" + "---|" * len(header))
    return lines + ["| " + " | ".join(md_text(c) for c in row) + " |" for row in body]


def _md_baseline(check: Check) -> str:
    if check.kind == "budget":
        return with_units(check.limit, check.units)
    return with_units(fmt_number(check.baseline), check.units)


def _md_flow_rows(name: str, total: ProcessSummary) -> list[list[str]]:
    """One flow's table: each checked value, then each key no check covered (its median)."""
    rows = [["key", "test", "baseline", "value", "change", "noise", "verdict"]]
    checks = [c for c in sorted_checks(total) if c.flow == name]
    for c in checks:
        value = with_units(f"{c.value:g}", c.units)
        rows.append([c.key, c.nodeid, _md_baseline(c), value, c.change_text(), noise_cell(c)])
        rows[-1].append(c.verdict)
    checked = {c.key for c in checks}
    for k in sorted(total.keys, key=lambda k: (k.key, k.type or "", k.device or "")):
        if k.flow != name or k.key in checked:
            continue
        key = k.key + (f" ({k.type})" if k.type else "")
        value = f"{with_units(fmt_number(median(k.values)), k.units)} (median of {len(k.values)})"
        if not k.values:
            value = f"{k.count} text value(s)"
        key += f" on {k.device}" if k.device else ""  # a key's values pool its tests
        rows.append([key, "-", "-", value, "-", "-", "not checked"])
    return rows


def _md_run(run: RunInfo | None, where: str) -> str:
    said = [f"run {run.run_id}"] if run else []
    if run and run.git_branch:
        said.append(f"branch {run.git_branch}")
    if run and run.baseline_branch and run.baseline_branch != run.git_branch:
        fork = f" up to run {run.fork_run}" if run.fork_run else ""
        said.append(f"gated against branch {run.baseline_branch}{fork}")
    if run and run.git_commit:
        said.append(f"commit {run.git_commit[:10]}")
    if run and run.ci_build_id:
        said.append(f"CI build {run.ci_build_id}")
    return md_text(", ".join([*said, where]))


def _md_flow_line(flow: FlowTally) -> str:
    statuses = ", ".join(f"{flow.statuses[s]} {s}" for s in STATUSES if flow.statuses.get(s))
    return f"{flow.tests} test{'s' if flow.tests != 1 else ''}: {statuses}"


def markdown(summary: RunSummary, *, run: RunInfo | None, where: str) -> str:
    """The run as GitHub-flavoured markdown, for a CI page or a pull-request comment: what
    ran, the regressions and budget breaches first, a table per flow, the worse changes."""
    total = summary.total()
    checks = sorted_checks(total)
    bad = [c for c in checks if not_ok(c)]
    out = ["## pytest-userflow", "", _md_run(run, where), ""]
    if bad:
        out += [f"### {len(bad)} regression(s) and budget breach(es)", ""]
        out += [f"- **{md_text(c.verdict)}**: {md_text(c.message())} ({md_text(c.nodeid)})"
                for c in bad]  # fmt: skip
        out.append("")
    elif checks:
        out += [f"No regression or budget breach in {len(checks)} checked value(s).", ""]
    for name, flow in total.flows.items():
        out += [f"### {md_text(name)}", "", md_text(_md_flow_line(flow)), ""]
        rows = _md_flow_rows(name, total)
        if len(rows) > 1:
            out += [*markdown_table(rows), ""]
    if summary.changes:
        out += ["### Worse changes this run confirmed", ""]
        out += [f"- {md_text(describe_change(c))}" for c in summary.changes]
        out.append("")
    notes = [*total.errors, *summary.errors]
    notes += [f"worker {worker} died" for worker in summary.crashed]
    if total.no_history:
        few = ", ".join(total.no_history)
        notes.append(f"no regression verdict yet, too little history: {few}")
    if notes:
        out += ["### Problems", "", *(f"- {md_text(note)}" for note in notes), ""]
    return "\n".join(out)


def write_markdown(path: Path, text: str) -> None:
    """The markdown summary to *path*: appended when it is GitHub's step summary, which each
    step of a job adds to, else written whole."""
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step and Path(step).resolve() == path.resolve():
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)
        return
    write_file(path, text.encode())


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


#: Where a test went in the team store, by its delivery's state.
_TEAM_STATES = {SENT: "delivered", PENDING: "pending"}


def _team_report(total: ProcessSummary) -> dict[str, Any] | None:
    """The team store's part of the JSON report: where, how many delivered, how many wait."""
    sink = total.sink
    if not sink.team_store:
        return None
    return {
        "store": sink.team_store,
        "delivered": sink.team_delivered,
        "pending": total.pending_team,
        "error": sink.team_error,
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    write_file(path, (json.dumps(report, indent=2, sort_keys=False, default=str) + "\n").encode())
