"""``pytest-userflow``: read what the plugin recorded, and send what is still pending.

Exit codes: 0 done; 1 ``push`` left uploads pending or refused; 2 bad usage or input
(one line on stderr says what and where).

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import itertools
import json
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import analysis, html
from .client import HeadSpinClient
from .gate import (
    accepted_rows,
    baseline_branch,
    directions_of,
    mark_accepted,
    min_changes_of,
    newest_change,
)
from .model import (
    API_COLUMNS,
    FILTER_STATUSES,
    Accept,
    UserflowError,
    utc_text,
)
from .options import DEFAULT_NOISE, URL_ENV
from .report import format_table, markdown_table, md_text
from .runinfo import ci_base_branch
from .settings import Settings, add_arguments, from_arguments, resolve
from .sources import HeadSpinSource, LocalSource, Source, api_token, open_existing
from .storage import (
    FAILED,
    PENDING,
    History,
    Query,
    StoreError,
    is_postgres,
    open_outbox,
    shown,
)
from .upload import Sender, TeamSender

if TYPE_CHECKING:
    from .storage.sqlite import SQLiteStore

EPILOG = """examples:
  pytest-userflow flows
  pytest-userflow measurements --flow Checkout --key "Login Time" --format csv > login.csv
  pytest-userflow measurements --flow Checkout --start-time "2026-11-01 00:00:00" --status failed
  pytest-userflow --source headspin measurements --flow Login --format json
  pytest-userflow report -o userflow.html
  pytest-userflow accept --flow Login --key "Login Time" --reason "new TLS handshake"
  HEADSPIN_API_TOKEN=... pytest-userflow push

exit codes: 0 done, 1 push left uploads pending or refused, 2 bad usage or input
"""


class CliError(Exception):
    """A bad argument or unusable input: printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-userflow",
        description="Query user flows recorded by pytest-userflow, "
        "in the local store or on HeadSpin, and push what is still pending.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The global options are also taken after the command: pytest-userflow push --headspin-url URL
    after = argparse.ArgumentParser(add_help=False)
    _add_globals(after, given_only=True)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[after], **kwargs)

    flows = command(
        "flows",
        help="list the user flows",
        description="List the user flows with their ids and counts.",
    )
    _add_format(flows)

    ms = command(
        "measurements",
        help="list measurements with the API's filters",
        description="List measurements. Filters combine with AND, repeated values of one filter "
        "with OR; times are inclusive, ISO or UNIX; no --status means passed, failed and not_set "
        "(as the HeadSpin API does). csv/json columns are the API's measurement fields.",
        epilog="example: pytest-userflow measurements --flow Login --key 'Login Time' "
        "--status passed --format csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_filters(ms)
    ms.add_argument("--limit", type=_count)
    ms.add_argument("--offset", type=_count)
    _add_format(ms)

    st = command(
        "stats",
        help="count, min, mean, p50, p95, max per flow and key",
        description="Statistics per flow, key and type over the filtered measurements "
        "(non-numeric values are counted, not averaged). The filters are those of "
        "'measurements'.",
        epilog="examples:\n  pytest-userflow stats --flow Login --start-time 2026-11-01\n"
        "  pytest-userflow stats --key 'Login Time' --by device --format csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_filters(st)
    st.add_argument(
        "--by",
        choices=("run", "test", "device", "day"),
        help="one row per run (in time order), test, device or day",
    )
    _add_format(st)

    runs = command(
        "runs",
        help="the recorded runs, newest first",
        description="The runs in the local store, newest first: the newest 20, or --limit N "
        "(0: every run); stderr says when more runs were left out.",
    )
    runs.add_argument(
        "--limit", type=_count, default=20, help="this many newest runs; 0: all (default 20)"
    )
    _add_format(runs)

    cmp = command(
        "compare",
        help="baseline against candidate, per key; exit 1 over --fail-over",
        description="Compare the median of each key between a baseline and a candidate: two "
        "runs, two time windows, or by default the newest run against the --last N earlier runs "
        "that ran all of its tests (only those tests' values count). Which way a key is better: "
        "--higher-is-better, else the userflow_directions and userflow_budgets settings, else "
        "lower. The tests that passed on their own only (a test only the gate failed is one), "
        "unless --status says otherwise. "
        "A change is worse or better only beyond the threshold (--fail-over, else --min-change) "
        "and K times the noise of the two medians (--noise); text values are listed apart. "
        "Exit 1 when a key got worse by more than --fail-over.",
        epilog="examples:\n  pytest-userflow compare --fail-over 10\n"
        "  pytest-userflow compare --baseline-run 3f2a --candidate-run 9c1d \\\n"
        "      --higher-is-better FPS\n"
        "  pytest-userflow compare --baseline-start 2026-11-01 --baseline-end 2026-11-07 \\\n"
        "      --candidate-start 2026-11-08 --fail-over 15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp.add_argument("--flow", help="user flow name or id")
    cmp.add_argument("--key", action="append", default=[], dest="keys")
    cmp.add_argument(
        "--status",
        action="append",
        default=[],
        dest="statuses",
        choices=FILTER_STATUSES,
        help="(default: the tests that passed on their own, those only the gate failed included)",
    )
    cmp.add_argument("--baseline-run", action="append", default=[], dest="baseline_runs")
    cmp.add_argument("--candidate-run", help="default: the newest run")
    cmp.add_argument(
        "--last",
        type=_count,
        default=5,
        help="baseline: this many runs before the candidate (default 5)",
    )
    for side in ("baseline", "candidate"):
        cmp.add_argument(f"--{side}-start", help=f"{side} window start, ISO or UNIX")
        cmp.add_argument(f"--{side}-end", help=f"{side} window end, ISO or UNIX")
    cmp.add_argument(
        "--fail-over",
        type=float,
        metavar="PCT",
        help="exit 1 when a key is worse by more than PCT percent",
    )
    cmp.add_argument(
        "--min-change",
        type=float,
        default=analysis.MIN_CHANGE_PCT,
        metavar="PCT",
        help="without --fail-over: a change under PCT percent is 'same' "
        f"(default {analysis.MIN_CHANGE_PCT:g})",
    )
    cmp.add_argument(
        "--noise",
        type=float,
        metavar="K",
        help="a change is worse or better only beyond K times the medians' noise; 0: the "
        f"threshold alone (default: the userflow_noise setting, else {DEFAULT_NOISE:g})",
    )
    cmp.add_argument(
        "--branch",
        help="the candidate is this branch's newest run (default: the baseline branch's); the "
        "baseline is the baseline branch's runs before it (up to where its branch forked, when "
        "its run found that)",
    )
    _add_higher_is_better(cmp)
    _add_format(cmp, markdown=True)

    chg = command(
        "changes",
        help="runs where a key shifted and stayed shifted (change-point detection)",
        description="Find the runs where a flow and key's values shifted and stayed shifted: "
        "E-Divisive means on each run's median of the values of the tests that passed on their "
        "own (those only the gate failed included), in time order, with a permutation test "
        "(deterministic). A series is one flow, key, type and units of one test (parameters "
        "included) on one device; --by flow pools a flow's tests and devices. Which way a key "
        "is better: --higher-is-better, else the userflow_directions and userflow_budgets "
        "settings, else lower. A change counts when it is larger than the key's own noise "
        "allows (and than its userflow_min_change line, or --min-change). A change of the "
        "newest 1-2 runs, too few to test, is listed as suspected and never fails --fail-on; "
        "it is confirmed once 3 runs after it pass the test. With --source headspin each "
        "event is one point.",
        epilog="examples:\n  pytest-userflow changes --flow Login\n"
        "  pytest-userflow changes --fail-on worse --recent 5   # a nightly CI job\n"
        "  pytest-userflow changes --key 'Login Time' --by flow --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chg.add_argument("--flow", help="user flow name or id")
    chg.add_argument("--key", action="append", default=[], dest="keys")
    chg.add_argument("--last", type=_count, help="only the newest N runs (default: all)")
    chg.add_argument(
        "--min-change",
        type=float,
        metavar="PCT",
        help="report changes of at least PCT percent between the medians, every key "
        "(default: the userflow_min_change setting per key, else each key's own noise decides)",
    )
    chg.add_argument(
        "--by",
        choices=(analysis.POOLED,),
        help="flow: one series per flow and key, every test and device of the flow pooled "
        "(default: one series per test and device)",
    )
    _add_branch(chg)
    _add_higher_is_better(chg)
    chg.add_argument(
        "--fail-on",
        choices=("worse",),
        help="exit 1 when a confirmed worse change starts within the last --recent runs "
        "(a suspected one never fails)",
    )
    chg.add_argument(
        "--recent",
        type=_count,
        default=5,
        help="how many newest runs count as recent (default 5)",
    )
    _add_format(chg, markdown=True)

    plot = command(
        "plot",
        help="PNG of a key's trend over runs (needs the [plot] extra)",
        description="Draw a key's median and p95 per run, with failed tests' values marked. "
        "Needs matplotlib: pip install 'pytest-userflow[plot]'.",
        epilog="example: pytest-userflow plot --flow Login --key 'Login Time' -o login.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("--flow", help="user flow name or id")
    plot.add_argument("--key", required=True)
    plot.add_argument("--last", type=_count, default=30, help="this many newest runs (default 30)")
    plot.add_argument("-o", "--output", default="trend.png", help="PNG file (default trend.png)")

    rep = command(
        "report",
        help="one self-contained HTML file of the trends (needs the [html] extra)",
        description="Write one HTML file that opens offline: the newest run, what needs "
        "attention (budget breaches and regressions of the newest run, worse changes of the "
        "last 5 runs), and per flow and key a chart of the values over the last --last runs "
        "and a table of the newest run's values with their verdicts. With --source headspin "
        "each event is one point. Needs vl-convert-python: pip install 'pytest-userflow[html]'.",
        epilog="examples:\n  pytest-userflow report -o userflow.html\n"
        "  pytest-userflow report --flow Login --last 50 --higher-is-better FPS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("--flow", help="user flow name or id (default: every flow)")
    rep.add_argument(
        "--last", type=_count, default=html.DEFAULT_RUNS, help="this many newest runs (default 30)"
    )
    _add_branch(rep)
    _add_higher_is_better(rep)
    rep.add_argument(
        "-o", "--output", default="userflow.html", help="HTML file (default userflow.html)"
    )

    acc = command(
        "accept",
        help="say a new level of a flow's key is intended: the gate's baseline starts there",
        description="Say that the level of a flow's key from a run on is intended. From then "
        "on the gate's baseline of those series (each test and device of the flow's key, or "
        "those --test and --device name) starts at that run: its values and the later ones, "
        "those the gate failed before this accept included, so the same level passes and a "
        "further worsening fails again. The run is by default where the newest change of "
        "those series began, as 'changes' finds it. Accepts are kept in the history with "
        "when, who and why; 'changes' and 'report' show them.",
        epilog="examples:\n"
        "  pytest-userflow accept --flow Login --key 'Login Time' --reason 'new TLS handshake'\n"
        "  pytest-userflow accept --flow Login --key 'Login Time' --test "
        "'tests/test_login.py::test_login' --run 3f2a\n"
        "  pytest-userflow accept --list\n"
        "  pytest-userflow accept --undo 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    acc.add_argument("--flow", help="user flow name or id")
    acc.add_argument("--key", help="the key whose new level is intended")
    acc.add_argument("--test", help="only this test (its node id, parameters included)")
    acc.add_argument("--device", help="only this device address")
    acc.add_argument(
        "--run", help="the level starts at this run (default: where the newest change began)"
    )
    acc.add_argument("--reason", help="why the new level is intended (kept with the accept)")
    acc.add_argument("--list", action="store_true", help="list the accepts, taken back included")
    acc.add_argument("--undo", type=_count, metavar="ID", help="take back the accept ID")
    _add_format(acc)

    copy = command(
        "copy",
        help="copy a history into a PostgreSQL team store, each test once",
        description="Copy every run and test of a history (the --from store, by default the "
        "local one) into the PostgreSQL store --to. Each test is keyed by its event id: a "
        "test the team store holds already is left as it is, so copying twice doubles nothing.",
        epilog="example: pytest-userflow copy --to postgresql://ci@db.example.com:5432/perf",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument("--to", required=True, metavar="URL", help="the PostgreSQL store")
    copy.add_argument(
        "--from",
        dest="source_store",
        metavar="PATH_OR_URL",
        help="the history to copy (default: --store)",
    )

    push = command(
        "push",
        help="send what is still pending in the outbox",
        description="Deliver every test the plugin could not deliver during the run: to the "
        "PostgreSQL team store (--store URL) and to HeadSpin. Replays are safe: a second push "
        "sends nothing. Exit 0 only when nothing is left pending.",
    )
    push.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="longest time to spend sending (seconds, default 600)",
    )
    push.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry uploads HeadSpin refused before (400/404)",
    )
    push.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress on stderr: a bar on a terminal, else a line every few seconds "
        "(default: on)",
    )
    return parser


def _add_globals(parser: argparse.ArgumentParser, *, given_only: bool = False) -> None:
    """The settings (the plugin's, read as it reads them) and which source to read."""
    add_arguments(parser, given_only=given_only)
    parser.add_argument(
        "--source",
        choices=("local", "headspin"),
        default=argparse.SUPPRESS if given_only else "local",
        help="read the local store (default) or HeadSpin",
    )


def _add_branch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--branch",
        help="read this branch's runs (default: the baseline branch: the "
        "userflow_baseline_branch setting, else a pull request's base, else main, else master; "
        "every branch's when the history has none of them)",
    )


def _baseline_branch(args: argparse.Namespace, source: Source) -> str | None:
    """The baseline branch, as the gate finds it: the setting, else a pull request's base
    (the CI's variables), else main, else master, where the history has it; None: none."""
    return source.baseline_branch(args.settings.baseline_branch or ci_base_branch())


def _of_branch(branch: str | None) -> str:
    return "every branch" if branch is None else f"branch {branch}"


def _branch_runs(
    source: Source, branch: str | None, limit: int | None, needed: str | None = None
) -> list[dict[str, Any]]:
    """The newest *limit* runs of *branch* (None: of every branch), newest first; a branch
    with no runs is an error."""
    runs = source.runs(limit, needed=needed, branch=branch)
    if branch is not None and not runs:
        raise CliError(
            f"the store has no runs of branch {branch!r}: --branch names another "
            "(pytest-userflow runs lists the runs and their branches)"
        )
    return runs


def _add_higher_is_better(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--higher-is-better",
        action="append",
        default=[],
        metavar="KEY",
        help="keys for which higher is better (FPS, scores...); the others as the "
        "userflow_directions setting says, else lower",
    )


def _direction(args: argparse.Namespace) -> analysis.Direction:
    """Which way a key is better: higher for the --higher-is-better keys, else as the
    settings say (the gate's one definition: ini directions and budgets)."""
    higher = set(getattr(args, "higher_is_better", ()))
    configured = directions_of(args.settings)
    return lambda flow, key: "higher" if key in higher else configured(flow, key)


def _add_format(parser: argparse.ArgumentParser, *, markdown: bool = False) -> None:
    formats = ("table", "csv", "json", *(["markdown"] if markdown else []))
    parser.add_argument(
        "--format",
        choices=formats,
        default="table",
        help="table (default), or csv/json for other programs"
        + (
            ", or markdown (GitHub-flavoured) for a CI page or a pull-request comment"
            if markdown
            else ""
        ),
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """The measurement listing's filters, with the API's meaning (shared by the commands)."""
    parser.add_argument("--flow", help="user flow name or id")
    parser.add_argument(
        "--session-id",
        action="append",
        default=[],
        dest="session_ids",
        help="repeat for several sessions",
    )
    parser.add_argument(
        "--key", action="append", default=[], dest="keys", help="repeat for several keys"
    )
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        dest="statuses",
        choices=FILTER_STATUSES,
        help="repeat for several (default: passed, failed and not_set)",
    )
    parser.add_argument("--start-time", help="inclusive lower bound, ISO or UNIX")
    parser.add_argument("--end-time", help="inclusive upper bound, ISO or UNIX")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        dest="run_ids",
        help="only these runs (local store; repeat for several)",
    )


def _source(args: argparse.Namespace, settings: Settings) -> Source:
    """What the commands read: the local store, or HeadSpin."""
    if args.source == "headspin":
        return HeadSpinSource(settings.token, settings.url, str(settings.store))
    return LocalSource(str(settings.store))


def _rows(source: Source, args: argparse.Namespace, **overrides: Any) -> Iterator[dict[str, Any]]:
    """Measurement rows of the command's flow, with its filters (and *overrides*)."""
    query = Query(
        args.flow,
        session_ids=getattr(args, "session_ids", []),
        keys=getattr(args, "keys", []),
        statuses=getattr(args, "statuses", []),
        start_time=getattr(args, "start_time", None),
        end_time=getattr(args, "end_time", None),
        run_ids=getattr(args, "run_ids", []),
    )
    return source.measurements(replace(query, **overrides))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _emit(rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str, wrapper: str) -> None:
    out = sys.stdout
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    elif fmt == "json":
        json.dump({wrapper: [{c: row.get(c) for c in columns} for row in rows]}, out, indent=2)
        out.write("\n")
    else:
        table = [[str(c) for c in columns]] + [
            ["-" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows
        ]
        if fmt == "markdown":  # a blank line ends the table: what follows is not a row
            out.writelines(line + "\n" for line in [*markdown_table(table), ""])
        else:
            out.writelines(line + "\n" for line in format_table(table))


def _say(text: str, fmt: str) -> None:
    """A line above or below a table: in markdown a paragraph of its own, escaped."""
    print(f"{md_text(text)}\n" if fmt == "markdown" else text)


def cmd_flows(args: argparse.Namespace, source: Source) -> int:
    columns = ("user_flow_id", "name", "description", "created_time", *source.flow_columns)
    rows = source.flows()
    if args.format == "table":  # a date a person reads; JSON and CSV keep the number
        for row in rows:
            if isinstance(row.get("created_time"), (int, float)):
                row["created_time"] = utc_text(row["created_time"])
    _emit(rows, columns, args.format, "user_flows")
    return 0


def cmd_measurements(args: argparse.Namespace, source: Source) -> int:
    if args.format == "table":
        columns: Sequence[str] = (
            "event_time", "user_flow_name", "key_name", "value", "key_units", "key_type",
            *source.table_columns,
        )  # fmt: skip
    else:
        columns = (*API_COLUMNS, *source.measurement_columns)  # the API's first, in its order
    rows = _rows(source, args, limit=args.limit, offset=args.offset)
    _emit(rows, columns, args.format, "measurements")
    return 0


def cmd_stats(args: argparse.Namespace, source: Source) -> int:
    rows = analysis.stats(_rows(source, args), by=args.by)
    columns = [
        "flow",
        "key",
        "type",
        *([args.by] if args.by else []),
        *analysis.STAT_COLUMNS,
        "units",
    ]
    if args.format == "table":
        rows = [
            {k: analysis.fmt_number(v) if k in analysis.STAT_COLUMNS else v for k, v in row.items()}
            for row in rows
        ]
    _emit(rows, columns, args.format, "stats")
    return 0


def cmd_runs(args: argparse.Namespace, source: Source) -> int:
    rows = source.store_runs(args.limit + 1 if args.limit else None)
    if args.limit and len(rows) > args.limit:  # said apart, so that csv and json stay clean
        rows = rows[: args.limit]
        print(
            f"the newest {args.limit} runs; there are more: --limit N for more, --limit 0 for all",
            file=sys.stderr,
        )
    if args.format == "table":
        for row in rows:
            row["started_at"] = utc_text(row["started_at"])
            row["finished_at"] = row["finished_at"] and utc_text(row["finished_at"])
            row["git_commit"] = (row["git_commit"] or "-")[:10]
    columns = (
        "run_id",
        "started_at",
        "finished_at",
        "outcome",
        "host",
        "git_branch",
        "git_commit",
        "ci_build_id",
        "tests",
        "measurements",
    )
    _emit(rows, columns, args.format, "runs")
    return 0


Sides = tuple[dict[str, Any], dict[str, Any], "set[str] | None", str]


def _compare_sides(args: argparse.Namespace, source: Source) -> Sides:
    """The filters of baseline and candidate, the tests whose baseline values count (None:
    every test's), and a sentence saying what was compared."""
    windows = args.baseline_start or args.baseline_end or args.candidate_start or args.candidate_end
    if windows:
        if args.baseline_runs or args.candidate_run:
            raise CliError("give runs or time windows, not both")
        base = {"start_time": args.baseline_start, "end_time": args.baseline_end, "run_ids": []}
        cand = {"start_time": args.candidate_start, "end_time": args.candidate_end, "run_ids": []}
        said = (
            f"window {args.baseline_start or '...'} - {args.baseline_end or '...'} against "
            f"{args.candidate_start or '...'} - {args.candidate_end or '...'}"
        )
        return base, cand, None, said
    every = source.runs(needed="compare time windows (--baseline-start ...)")  # newest first
    if not every:
        raise CliError("the store has no runs yet")
    if args.baseline_runs:
        candidate = every[0]["run_id"]
        if args.candidate_run:
            candidate = source.match_runs([args.candidate_run])[0]
        baseline = source.match_runs(args.baseline_runs)
        said = f"run {candidate} against {len(baseline)} run(s): {', '.join(baseline)}"
        return {"run_ids": baseline}, {"run_ids": [candidate]}, None, said
    main = _baseline_branch(args, source)
    if args.candidate_run:
        candidate = source.match_runs([args.candidate_run])[0]
    else:
        branch = args.branch or main
        candidate = _branch_runs(source, branch, 1)[0]["run_id"]
    ids = [r["run_id"] for r in every]
    run = every[ids.index(candidate)]
    older = every[ids.index(candidate) + 1 :]
    if main is not None:  # the baseline branch's runs, up to where the candidate's forked
        older = [r for r in older if r["git_branch"] == main]
        fork = run["fork_run"] if run["baseline_branch"] == main else None
        forks = [r["run_id"] for r in older]
        if fork in forks:
            older = older[forks.index(fork) :]
    # Like with like: earlier runs that ran every test the candidate ran (a -k run is no
    # baseline for a whole suite), and of those only the candidate's tests.
    tests = source.run_tests()
    wanted = tests.get(candidate, set())
    earlier = [r["run_id"] for r in older]
    baseline = [r for r in earlier if wanted <= tests.get(r, set())][: args.last]
    if not baseline:
        raise CliError(
            f"no run of {_of_branch(main)} before {candidate} ran all of its {len(wanted)} "
            "test(s): name a baseline with --baseline-run"
        )
    skipped = earlier.index(baseline[-1]) + 1 - len(baseline)
    own = f" ({_of_branch(run['git_branch'])})" if main is not None else ""
    of = f" of {_of_branch(main)}" if main is not None else ""
    said = f"run {candidate}{own} against {len(baseline)} run(s){of}: {', '.join(baseline)}"
    if skipped:
        said += f" ({skipped} newer run(s) left out: they did not run all of its tests)"
    return {"run_ids": baseline}, {"run_ids": [candidate]}, wanted, said


#: A direction as compare's column says it.
SAID = {"lower": "lower is better", "higher": "higher is better", "ignore": "ignored"}


def cmd_compare(args: argparse.Namespace, source: Source) -> int:
    base, cand, tests, said = _compare_sides(args, source)
    # A value only the gate failed is a value of a test that ran as it should: it counts.
    which = {"statuses": args.statuses} if args.statuses else {"outcomes": ["passed"]}
    base_rows = _rows(source, args, **which, **base)
    if tests is not None:
        base_rows = (r for r in base_rows if r["nodeid"] in tests)
    threshold = args.fail_over if args.fail_over is not None else args.min_change
    comparisons = analysis.compare(
        base_rows,
        _rows(source, args, **which, **cand),
        direction=_direction(args),
        noise=args.settings.noise if args.noise is None else args.noise,
    )
    rows: list[dict[str, Any]] = [
        {
            "flow": c.flow,
            "key": c.key,
            "type": c.type,
            "baseline": c.baseline,
            "candidate": c.candidate,
            "change": c.change,
            "change_pct": c.change_pct,
            "noise": c.noise_units,
            "noise_pct": c.noise_pct,
            "baseline_n": c.baseline_n,
            "candidate_n": c.candidate_n,
            "units": c.units,
            "direction": SAID[c.direction],
            "verdict": c.verdict(threshold),
        }
        for c in comparisons
    ]
    columns = (
        "flow",
        "key",
        "type",
        "baseline",
        "candidate",
        "change",
        "change_pct",
        "noise",
        "noise_pct",
        "verdict",
        "units",
        "baseline_n",
        "candidate_n",
        "direction",
    )
    if args.format in ("table", "markdown"):
        counted = (
            f"{', '.join(args.statuses)} tests" if args.statuses else "passed tests, gate aside"
        )
        _say(f"comparing {said} (medians of {counted})", args.format)
        shown = [
            {
                **r,
                "baseline": analysis.fmt_number(r["baseline"]),
                "candidate": analysis.fmt_number(r["candidate"]),
                "change": analysis.change_text(r["baseline"], r["candidate"], r["change_pct"]),
                "noise": _noise_text(r["noise"], r["noise_pct"]),
            }
            for r in rows
            if r["verdict"] != analysis.NOT_NUMERIC
        ]
        table = [c for c in columns if c not in ("change_pct", "noise_pct")]
        _emit(shown, table, args.format, "comparisons")
        text = [f"{r['flow']}/{r['key']}" for r in rows if r["verdict"] == analysis.NOT_NUMERIC]
        if text:
            _say(f"not compared, their values are not numbers: {', '.join(text)}", args.format)
    else:
        _emit(rows, columns, args.format, "comparisons")
    worse = [c for c in comparisons if c.verdict(threshold) == "worse"]
    if args.fail_over is not None and worse:
        names = ", ".join(
            f"{c.flow}/{c.key} {analysis.change_text(c.baseline, c.candidate, c.worse_pct)}"
            for c in worse
        )
        print(f"worse by more than {args.fail_over:g}% and the noise: {names}", file=sys.stderr)
        return 1
    return 0


def _change(r: dict[str, Any]) -> str:
    return analysis.change_text(r["before"], r["after"], r["change_pct"])


def _noise_text(noise: float | None, pct: float | None) -> str:
    """compare's noise: ``4.2%``, or in the key's units where no percent is computed."""
    if pct is not None:
        return f"{pct:.1f}%"
    return "-" if noise is None else f"{noise:.4g}"


CHANGE_COLUMNS = (
    "flow",
    "key",
    "type",
    "test",
    "device",
    "run_id",
    "time",
    "git_commit",
    "git_branch",
    "ci_build_id",
    "before",
    "after",
    "change",
    "change_pct",
    "direction",
    "state",
    "units",
    "p_value",
    "runs_ago",
    "accepted",
)


def cmd_changes(args: argparse.Namespace, source: Source) -> int:
    needed = "--last needs the local store" if args.last else None
    branch = args.branch or _baseline_branch(args, source)
    newest = _branch_runs(source, branch, args.last or None, needed)  # none: each event a point
    runs = {r["run_id"]: r for r in reversed(newest)}  # oldest first
    overrides: dict[str, Any] = {"outcomes": ["passed"], "session_ids": [], "run_ids": []}
    if args.last or branch is not None:
        overrides["run_ids"] = list(runs)
    series = analysis.run_series(_rows(source, args, **overrides), by=args.by)
    least = min_changes_of(args.settings)
    if args.min_change is not None:
        least = lambda flow, key: args.min_change  # noqa: E731
    found = analysis.find_changes(series, runs, _direction(args), least)
    mark_accepted(found, source.accepts())
    for r in found:  # an accepted change is intended, a suspected one unsure: never a failure
        r["recent"] = r["direction"] == "worse" and r["runs_ago"] < args.recent
        r["recent"] = r["recent"] and r["state"] == analysis.CONFIRMED and r["accepted"] is None
    found.sort(key=lambda r: (not r["recent"], r["flow"], r["key"], r["runs_ago"]))
    recent = [r for r in found if r["recent"]]
    suspected = sum(r["state"] == analysis.SUSPECTED for r in found)
    columns = list(CHANGE_COLUMNS)
    pooled = "; each flow's tests and devices pooled (--by flow)" if args.by else ""
    of = "" if branch is None else f" of the runs of branch {branch}"
    if args.format in ("table", "markdown"):
        _say(
            f"{len(found)} change(s) in {len(series)} series{of}{pooled}; "
            f"{len(recent)} worse in the last {args.recent} run(s)"
            + (f", {suspected} suspected in the newest runs" if suspected else ""),
            args.format,
        )
        shown = [
            {
                **r,
                "time": r["time"] and utc_text(r["time"]),
                "git_commit": (r["git_commit"] or "-")[:10],
                "before": analysis.fmt_number(r["before"]),
                "after": analysis.fmt_number(r["after"]),
                "change": _change(r),
                "p_value": "-" if r["p_value"] is None else f"{r['p_value']:.3f}",
                "accepted": r["accepted"] and f"#{r['accepted']}",
            }
            for r in found
        ]
        if shown:
            _emit(shown, [c for c in columns if c != "change_pct"], args.format, "changes")
    else:
        if of or pooled:
            print(f"pytest-userflow changes: {(of + pooled)[1:].lstrip()}", file=sys.stderr)
        _emit(found, columns, args.format, "changes")
    if args.fail_on == "worse" and recent:
        names = ", ".join(
            f"{r['flow']}/{r['key']} {_change(r)} from run {r['run_id']}" for r in recent
        )
        print(f"worse within the last {args.recent} run(s): {names}", file=sys.stderr)
        return 1
    return 0


def cmd_plot(args: argparse.Namespace, source: Source) -> int:
    runs = source.runs(args.last or None, needed="plot draws runs of the local store")[::-1]
    if not runs:  # oldest first
        raise CliError("the store has no runs yet")
    every = [r["run_id"] for r in runs] if args.last else []  # none: every run
    rows = list(
        source.measurements(
            Query(args.flow, keys=[args.key], statuses=["passed", "failed"], run_ids=every)
        )
    )
    flows = {row["user_flow_name"] for row in rows}
    way = _direction(args)(flows.pop() if len(flows) == 1 else args.flow or "*", args.key)
    from .plot import plot_trend

    count = plot_trend(rows, runs, key=args.key, output=args.output, direction=way)
    if count == 0:
        raise CliError(f"no numeric values of key {args.key!r} in the last {len(runs)} run(s)")
    print(
        f"wrote {args.output}: {count} value(s) of {args.key!r} ({SAID[way]}) over "
        f"{len(runs)} run(s)"
    )
    return 0


def cmd_report(args: argparse.Namespace, source: Source) -> int:
    direction = _direction(args)
    branch = args.branch or _baseline_branch(args, source)
    if branch is not None:
        _branch_runs(source, branch, 1)  # a branch with no runs is said so
    rows = source.page_rows(args.flow, args.last, branch)
    data = html.collect(
        *rows,
        direction=direction,
        min_change=min_changes_of(args.settings),
        accepts=source.accepts(),
        branch=branch,
    )
    of = "" if branch is None else f" of branch {branch}"
    if not data["charts"]:
        raise CliError(f"nothing to draw: no values in the last {args.last} run(s){of}")
    try:
        size = html.write(args.output, data)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(
        f"wrote {args.output}: {len(data['charts'])} key(s) over {len(data['runs'])} run(s){of}, "
        f"{len(data['attention'])} needing attention, {size / 1024:.0f} KB"
    )
    return 0


ACCEPT_COLUMNS = (
    "id", "flow", "key", "test", "device", "from_run", "created", "who", "reason", "undone",
)  # fmt: skip


def cmd_accept(args: argparse.Namespace, source: Source) -> int:
    if args.source != "local":
        raise CliError("accepts are kept in the local history, not on HeadSpin: drop --source")
    given = [f"--{name}" for name in ("flow", "key", "test", "device", "run", "reason")]
    given = [option for option in given if getattr(args, option[2:]) is not None]
    if (args.list or args.undo is not None) and (given or (args.list and args.undo is not None)):
        raise CliError(f"--list and --undo take no other option, got {', '.join(given) or 'both'}")
    store = open_existing(args.store)
    try:
        if args.list:
            rows = [_accept_row(a, args.format) for a in store.accepts(undone=True)]
            _emit(rows, ACCEPT_COLUMNS, args.format, "accepts")
            return 0
        if args.undo is not None:
            undone = store.undo_accept(args.undo)
            print(
                f"took back accept #{undone.id} ({_accepted_series(undone)} from run "
                f"{undone.from_run}): the gate's baseline of those series is as it was "
                "without it"
            )
            return 0
        return _accept(args, store)
    finally:
        store.close()


def _accept(args: argparse.Namespace, store: History) -> int:
    """Keep a new accept: of the series of the flow's key that --test and --device name, from
    --run, else from where their newest change began."""
    if not args.flow or not args.key:
        raise CliError("accept needs --flow and --key (or --list, or --undo ID)")
    flow = next(
        (f["name"] for f in store.flows() if args.flow in (f["name"], f["user_flow_id"])), None
    )
    if flow is None:
        raise CliError(f"no user flow named or with id {args.flow!r} in {args.store}")
    probe = Accept(flow, args.key, "", args.test, args.device)
    rows = accepted_rows(store, probe)
    which = _accepted_series(probe)
    if not rows:
        raise CliError(
            f"no numeric values of {which} in {args.store}: check the key, --test and --device "
            f"(pytest-userflow stats --flow {flow} --by test lists them)"
        )
    # The level changed on the baseline branch: other branches' runs are not its history.
    main = baseline_branch(store, args.settings.baseline_branch or ci_base_branch())
    runs = {r["run_id"]: r for r in reversed(store.runs(branch=main))}  # oldest first
    if args.run:
        run = store.match_runs([args.run])[0]
        found = ""
    else:
        newest = newest_change([r for r in rows if r["run_id"] in runs], runs)
        if newest is None:
            raise CliError(
                f"no change found in {which} (as 'pytest-userflow changes' looks for them): "
                "say from which run the level is intended with --run (pytest-userflow runs "
                "lists them)"
            )
        run = newest["run_id"]
        found = f", where its newest change began ({newest['change_pct']:+.1f}%)"
    order = {run_id: i for i, run_id in enumerate(runs)}
    if not any(order.get(r["run_id"], -1) >= order.get(run, -1) for r in rows):
        raise CliError(f"no values of {which} from run {run} on: nothing to accept")
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        user = None
    accept = store.add_accept(
        Accept(
            flow,
            args.key,
            run,
            args.test,
            args.device,
            args.reason,
            user=user,
            host=socket.gethostname(),
            created_at=time.time(),
        )
    )
    print(
        f"accepted #{accept.id}: {which} from run {run}{found}: the gate's baseline of those "
        f"series starts there; take it back with: pytest-userflow accept --undo {accept.id}"
    )
    return 0


def _accepted_series(accept: Accept) -> str:
    """``Login/Login Time (test T, device D)``: the series an accept covers."""
    only = [f"test {accept.nodeid}"] if accept.nodeid else []
    only += [f"device {accept.device}"] if accept.device else []
    return f"{accept.flow}/{accept.key}" + (f" ({', '.join(only)})" if only else "")


def _accept_row(accept: Accept, fmt: str) -> dict[str, Any]:
    row = {
        "id": accept.id,
        "flow": accept.flow,
        "key": accept.key,
        "test": accept.nodeid,
        "device": accept.device,
        "from_run": accept.from_run,
        "created": accept.created_at,
        "who": accept.who,
        "reason": accept.reason,
        "undone": accept.undone_at,
    }
    if fmt == "table":  # a date a person reads; JSON and CSV keep the number
        row["created"] = utc_text(accept.created_at)
        row["undone"] = accept.undone_at and utc_text(accept.undone_at)
    return row


def cmd_copy(args: argparse.Namespace, source: Source) -> int:
    if not is_postgres(args.to):
        raise CliError(f"--to {shown(args.to)}: give a postgresql://user@host:5432/db URL")
    from .storage.postgres import PostgresStore

    history = open_existing(args.source_store or args.store)
    team = PostgresStore(args.to)
    try:
        copied = kept = 0
        stored = history.records()
        while chunk := list(itertools.islice(stored, 500)):  # a transaction each
            new = team.add_tests(chunk)
            copied, kept = copied + new, kept + len(chunk) - new
    finally:
        history.close()
        team.close()
    print(
        f"copied {copied} test(s) into {team.location}; {kept} were there already "
        f"(from {history.location})"
    )
    return 0


def cmd_push(args: argparse.Namespace, source: Source) -> int:
    where = args.outbox or args.store
    store = open_outbox(where)  # this machine's, whatever the source
    if not store.exists:
        raise CliError(
            f"no store at {where}: run pytest with pytest-userflow first, or pass --store"
        )
    store.check()
    try:
        team = _push_team(args, store)
        return max(team, _push(args, store, quiet=team >= 0))
    finally:
        store.close()


def _push_team(args: argparse.Namespace, store: SQLiteStore) -> int:
    """Deliver the tests waiting for the team store: -1 when none wait, else 0 when all
    were delivered, 1 when some still wait."""
    waiting = store.deliveries()
    if not waiting:
        return -1
    if not is_postgres(args.store):
        print(
            f"error: {len(waiting)} test(s) wait for a PostgreSQL team store: pass "
            "--store postgresql://user@host:5432/db",
            file=sys.stderr,
        )
        return 1
    from .storage.postgres import PostgresStore

    sender = TeamSender(PostgresStore(args.store), store)
    print(f"delivering {len(waiting)} test(s) to {sender.history.location} ...", flush=True)
    for event in waiting:
        sender.submit(event)
    sender.drain(args.timeout)
    sender.close()
    left = store.count_deliveries()
    if sender.stats.unreachable:
        print(
            f"error: gave up on {sender.history.location}: {sender.stats.unreachable}",
            file=sys.stderr,
        )
    print(f"delivered {sender.stats.sent}, still pending {left}")
    return 0 if left == 0 else 1


def _push(args: argparse.Namespace, store: SQLiteStore, *, quiet: bool = False) -> int:
    states = (PENDING, FAILED) if args.retry_failed else (PENDING,)
    uploads = store.uploads(states)
    if not uploads and quiet:
        return 0
    if not uploads:
        refused = store.count_uploads((FAILED,))
        more = (
            f"; {refused} upload(s) were refused by HeadSpin before: "
            "'pytest-userflow push --retry-failed' sends them again"
            if refused
            else ""
        )
        print(f"nothing to push: no pending uploads in {store.location}{more}")
        return 0
    settings: Settings = args.settings
    token = api_token(settings.token)
    # A URL given now (its option or variable) wins over the one each upload was made with.
    now = settings.given.get("url", "").startswith(("--", URL_ENV))
    by_url: dict[str, list[Any]] = {}
    for upload in uploads:
        url = settings.url if now or not upload.base_url else upload.base_url
        by_url.setdefault(url, []).append(upload)
    sent = failed = busy = 0
    auth_error = None
    for url, group in by_url.items():
        # A few tries a request: a server that cannot be reached is given up within seconds.
        sender = Sender(HeadSpinClient(token, base_url=url, retries=3), store, states=states)
        print(f"pushing {len(group)} upload(s) to {url} ...", flush=True)
        for upload in group:
            sender.submit(upload)
        bar = _ProgressBar(len(group), sender, sys.stderr.isatty()) if args.progress else None
        sender.drain(args.timeout, tick=bar.draw if bar else None)
        if bar:
            bar.finish()
        sender.close()
        if sender.stats.unreachable:
            left = store.count_uploads((PENDING,))
            print(
                f"error: gave up on {url}: {sender.stats.unreachable}; {left} upload(s) still "
                "pending: push again once it can be reached (or give --headspin-url)",
                file=sys.stderr,
            )
        sent += sender.stats.sent
        failed += sender.stats.failed
        busy += sender.stats.busy
        auth_error = auth_error or sender.stats.auth_error
        for error in sender.stats.errors[:10]:
            print(f"refused: {error}", file=sys.stderr)
    pending = store.count_uploads((PENDING,))
    elsewhere = f" ({busy} of them being sent by another run or push, left to it)" if busy else ""
    print(f"sent {sent}, refused {failed}, still pending {pending}{elsewhere}")
    if auth_error:
        print(
            f"error: HeadSpin refused the API token: {auth_error}",
            file=sys.stderr,
        )
    return 0 if pending == 0 and failed == 0 else 1


class _ProgressBar:
    """``[#########.......]  120/300  sent 118  refused 2`` on stderr: redrawn in place on a
    terminal, else written as a line every few seconds (a CI log)."""

    width = 30
    every = 5.0  # seconds between lines when stderr is not a terminal

    def __init__(self, total: int, sender: Sender, terminal: bool) -> None:
        self.total = total
        self.sender = sender
        self.terminal = terminal
        self.last = time.monotonic()

    def draw(self, force: bool = False) -> None:
        if not self.terminal and not force and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        done = self.total - self.sender.unfinished
        filled = self.width * done // max(1, self.total)
        stats = self.sender.stats
        text = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}"
            f"  sent {stats.sent}  refused {stats.failed}"
        )
        sys.stderr.write(f"\r{text}" if self.terminal else f"{text}\n")
        sys.stderr.flush()

    def finish(self) -> None:
        self.draw(force=True)
        if self.terminal:
            sys.stderr.write("\n")


COMMANDS = {
    "flows": cmd_flows,
    "measurements": cmd_measurements,
    "stats": cmd_stats,
    "runs": cmd_runs,
    "compare": cmd_compare,
    "changes": cmd_changes,
    "plot": cmd_plot,
    "report": cmd_report,
    "accept": cmd_accept,
    "copy": cmd_copy,
    "push": cmd_push,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # The plugin's settings, read as it reads them; the commands take them from args.
        args.settings = settings = resolve(from_arguments(args))
        args.store = str(settings.store)
        args.outbox = settings.outbox
        with _source(args, settings) as source:
            return COMMANDS[args.command](args, source)
    except StoreError as exc:
        if exc.damaged:
            print(
                f"pytest-userflow {args.command}: error: the store {shown(args.store)} is "
                f"damaged or not readable ({exc}); it was left as it is",
                file=sys.stderr,
            )
        else:
            print(f"pytest-userflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (CliError, UserflowError) as exc:
        print(f"pytest-userflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
