"""``pytest-userflow``: read what the plugin recorded, and send what is still pending.

Exit codes: 0 done; 1 ``push`` left uploads pending or refused; 2 bad usage or input
(one line on stderr says what and where).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .client import DEFAULT_URL, TOKEN_ENV, HeadSpinClient
from .journal import recover
from .measurement import FILTER_STATUSES, UserflowError
from .sinks import Sender
from .store import API_COLUMNS, FAILED, PENDING, Store, StoreError
from .summary import format_table

DEFAULT_STORE = ".userflow/userflow.db"
URL_ENV = "HEADSPIN_API_URL"

EPILOG = """examples:
  pytest-userflow flows
  pytest-userflow measurements --flow Checkout --key "Login Time" --format csv > login.csv
  pytest-userflow measurements --flow Checkout --start-time "2026-11-01 00:00:00" --status failed
  pytest-userflow --source headspin measurements --flow <user_flow_id> --format json
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
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help=f"local store (default {DEFAULT_STORE})"
    )
    parser.add_argument(
        "--source",
        choices=("local", "headspin"),
        default="local",
        help="read the local store (default) or HeadSpin",
    )
    parser.add_argument("--headspin-token", help=f"API token (default: ${TOKEN_ENV})")
    parser.add_argument("--headspin-url", help=f"API base (default: ${URL_ENV} or {DEFAULT_URL})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    flows = commands.add_parser(
        "flows",
        help="list the user flows",
        description="List the user flows with their ids and counts.",
    )
    flows.add_argument("--format", choices=("table", "csv", "json"), default="table")

    ms = commands.add_parser(
        "measurements",
        help="list measurements with the API's filters",
        description="List measurements. Filters combine with AND, repeated values of one filter "
        "with OR; times are inclusive, ISO or UNIX; no --status means passed, failed and not_set "
        "(as the HeadSpin API does). csv/json columns are the API's measurement fields.",
        epilog="example: pytest-userflow measurements --flow Login --key 'Login Time' "
        "--status passed --format csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ms.add_argument("--flow", help="user flow name or id (required with --source headspin)")
    ms.add_argument("--session-id", action="append", default=[], dest="session_ids")
    ms.add_argument("--key", action="append", default=[], dest="keys")
    ms.add_argument(
        "--status", action="append", default=[], dest="statuses", choices=FILTER_STATUSES
    )
    ms.add_argument("--start-time", help="inclusive lower bound, ISO or UNIX")
    ms.add_argument("--end-time", help="inclusive upper bound, ISO or UNIX")
    ms.add_argument("--limit", type=_count)
    ms.add_argument("--offset", type=_count)
    ms.add_argument("--format", choices=("table", "csv", "json"), default="table")

    push = commands.add_parser(
        "push",
        help="send the uploads still pending in the local store",
        description="Send every upload the plugin could not deliver during the run. Replays are "
        "safe: a second push sends nothing. Exit 0 only when nothing is left pending.",
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
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _token(args: argparse.Namespace) -> str:
    token = args.headspin_token or os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise CliError(f"HeadSpin needs an API token: set {TOKEN_ENV} or pass --headspin-token")
    return str(token)


def _url(args: argparse.Namespace) -> str:
    return str(args.headspin_url or os.environ.get(URL_ENV, "").strip() or DEFAULT_URL)


def _open_store(path: str, *, must_exist: bool = True) -> Store:
    if must_exist and not os.path.exists(path):
        raise CliError(
            f"no store at {path}: run pytest with pytest-userflow first, or pass --store"
        )
    store = Store(path)
    recover(store)  # fold what crashed runs left in their journals
    return store


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
        out.writelines(line + "\n" for line in format_table(table))


def cmd_flows(args: argparse.Namespace) -> int:
    if args.source == "headspin":
        with HeadSpinClient(_token(args), base_url=_url(args)) as client:
            rows = client.list_user_flows()
        _emit(
            rows, ("user_flow_id", "name", "description", "created_time"), args.format, "user_flows"
        )
        return 0
    store = _open_store(args.store)
    columns = ("user_flow_id", "name", "description", "created_time", "tests", "measurements")
    _emit(store.flows(), columns, args.format, "user_flows")
    return 0


def cmd_measurements(args: argparse.Namespace) -> int:
    filters = {
        "session_ids": args.session_ids,
        "keys": args.keys,
        "statuses": args.statuses,
        "start_time": args.start_time,
        "end_time": args.end_time,
    }
    table_columns = (
        "event_time",
        "user_flow_name",
        "key_name",
        "value",
        "key_units",
        "key_type",
        "session_id",
    )
    columns = API_COLUMNS if args.format != "table" else table_columns
    if args.source == "headspin":
        if not args.flow:
            raise CliError("--flow (the user flow id) is required with --source headspin")
        with HeadSpinClient(_token(args), base_url=_url(args)) as client:
            if args.limit is not None or args.offset is not None:
                rows: Iterable[dict[str, Any]] = client.get_measurements(
                    args.flow, limit=args.limit, offset=args.offset, **filters
                )
            else:
                rows = client.iter_measurements(args.flow, **filters)
            _emit(rows, columns, args.format, "measurements")
        return 0
    store = _open_store(args.store)
    rows = store.query_measurements(flow=args.flow, limit=args.limit, offset=args.offset, **filters)
    _emit(rows, columns, args.format, "measurements")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    states = (PENDING, FAILED) if args.retry_failed else (PENDING,)
    uploads = list(store.uploads(states))
    if not uploads:
        print(f"nothing to push: no pending uploads in {args.store}")
        return 0
    token = _token(args)
    by_url: dict[str, list[Any]] = {}
    for upload in uploads:
        url = args.headspin_url or upload.base_url or _url(args)
        by_url.setdefault(url, []).append(upload)
    sent = failed = 0
    auth_error = None
    for url, group in by_url.items():
        client = HeadSpinClient(token, base_url=url)
        sender = Sender(client, _locked_apply(store))
        print(f"pushing {len(group)} upload(s) to {url} ...", flush=True)
        for upload in group:
            sender.submit(upload)
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        bar = _ProgressBar(len(group), sender) if show else None
        sender.drain(args.timeout, tick=bar.draw if bar else None)
        if bar:
            bar.finish()
        sender.close()
        sent += sender.stats.sent
        failed += sender.stats.failed
        auth_error = auth_error or sender.stats.auth_error
        for error in sender.stats.errors[:10]:
            print(f"refused: {error}", file=sys.stderr)
    pending = store.count_uploads((PENDING,))
    print(f"sent {sent}, refused {failed}, still pending {pending}")
    if auth_error:
        print(
            f"error: HeadSpin refused the API token ({auth_error}); check {TOKEN_ENV}",
            file=sys.stderr,
        )
    return 0 if pending == 0 and failed == 0 else 1


def _locked_apply(store: Store) -> Callable[[dict[str, Any]], None]:
    """Apply the sender's marks to the store, one small transaction each."""
    lock = threading.Lock()

    def apply(op: dict[str, Any]) -> None:
        with lock:
            store.apply([op])

    return apply


class _ProgressBar:
    """``[#########.......]  120/300  sent 118  refused 2`` on stderr, redrawn in place."""

    width = 30

    def __init__(self, total: int, sender: Sender) -> None:
        self.total = total
        self.sender = sender

    def draw(self) -> None:
        done = self.total - self.sender.unfinished
        filled = self.width * done // max(1, self.total)
        stats = self.sender.stats
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}"
            f"  sent {stats.sent}  refused {stats.failed}"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        self.draw()
        sys.stderr.write("\n")


COMMANDS = {"flows": cmd_flows, "measurements": cmd_measurements, "push": cmd_push}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, StoreError, UserflowError) as exc:
        print(f"pytest-userflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
