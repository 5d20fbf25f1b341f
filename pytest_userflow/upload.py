"""Where a finished test goes: the local store, HeadSpin (through the store), or a dry run.

Every sink commits the test to the local store first (the write-ahead log). The HeadSpin
sink stores an *upload plan* with it: the client calls that deliver the test, with
``$user_flow_id`` / ``$perf_event_id`` standing for ids HeadSpin hands back. A
:class:`Sender`'s background threads run the plans and mark them sent in the store;
``pytest-userflow push`` runs what is left with the same code. The requests of one
session, or of one (flow, device), go out in order, one upload at a time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .model import MeasurementError, RunInfo, TestRecord
from .store import FAILED, LOCAL_ONLY, PENDING, SENT, Store, Upload

if TYPE_CHECKING:
    from .client import HeadSpinClient

Plan = list[dict[str, Any]]

#: The client methods a plan may name (a plan is data read back from a file).
PLAN_OPS = frozenset(
    {
        "create_user_flow",
        "attach_session",
        "add_session_measurements",
        "create_event",
        "update_event",
        "add_event_measurements",
        "legacy_upload",
    }
)


def build_plan(record: TestRecord, api: str = "v0") -> Plan | None:
    """The calls that deliver *record*; None when it has neither session nor device."""
    data = [m.to_api() for m in record.measurements]
    if api == "legacy" and record.session_id:
        args: dict[str, Any] = {
            "test_name": record.flow,
            "session_id": record.session_id,
            "status": record.status,
        }
        if data:
            args["data"] = data
        return [{"op": "legacy_upload", "args": args}]
    flow: dict[str, Any] = {
        "op": "create_user_flow",
        "args": {"name": record.flow, "description": record.description},
    }
    if record.session_id:
        plan = [
            flow,
            {
                "op": "attach_session",
                "args": {
                    "user_flow_id": "$user_flow_id",
                    "session_id": record.session_id,
                    "status": record.status,
                    "status_message": record.status_message,
                },
                "save": {"perf_event_id": "perf_event_id"},
            },
        ]
        if data:
            plan.append(
                {
                    "op": "add_session_measurements",
                    "args": {
                        "user_flow_id": "$user_flow_id",
                        "session_id": record.session_id,
                        "measurements": data,
                    },
                }
            )
        return plan
    if record.device_address:
        # The event id is saved as soon as it exists, so a replay never creates it twice.
        plan = [
            flow,
            {
                "op": "create_event",
                "args": {"user_flow_id": "$user_flow_id", "device_address": record.device_address},
                "save": {"perf_event_id": "perf_event_id"},
                "checkpoint": True,
            },
            {
                "op": "update_event",
                "args": {
                    "user_flow_id": "$user_flow_id",
                    "event_id": "$perf_event_id",
                    "status": record.status,
                    "status_message": record.status_message,
                },
            },
        ]
        if data:
            plan.append(
                {
                    "op": "add_event_measurements",
                    "args": {
                        "user_flow_id": "$user_flow_id",
                        "event_id": "$perf_event_id",
                        "measurements": data,
                    },
                }
            )
        return plan
    return None


def plan_lane(plan: Plan) -> Hashable:
    """What a plan's requests must not overtake: its session, or its flow and device."""
    for step in plan:
        args = step["args"]
        if "session_id" in args:
            return ("session", args["session_id"])
        if step["op"] == "create_event":
            return ("device", plan[0]["args"]["name"], args["device_address"])
    return ("flow", plan[0]["args"].get("name") if plan else None)


class FlowCache:
    """Flow name -> HeadSpin id, so each flow is PUT once per process (thread-safe)."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def get_or_create(self, client: HeadSpinClient, name: str, description: str | None) -> str:
        with self._lock:  # held across the PUT: two threads never create the same flow
            if name not in self._ids:
                self._ids[name] = str(client.create_user_flow(name, description)["user_flow_id"])
            return self._ids[name]


def run_plan(
    client: HeadSpinClient,
    plan: Plan,
    progress: dict[str, Any],
    flows: FlowCache,
    checkpoint: Callable[[dict[str, Any]], None] = lambda p: None,
) -> dict[str, Any]:
    """Run *plan* from where *progress* says; return the final progress."""
    variables: dict[str, Any] = dict(progress.get("vars", {}))
    for index in range(int(progress.get("step", 0)), len(plan)):
        step = plan[index]
        op = step["op"]
        if op not in PLAN_OPS:
            raise MeasurementError(f"unknown operation {op!r} in a stored upload plan")
        args = {
            k: variables[v[1:]] if isinstance(v, str) and v.startswith("$") else v
            for k, v in step["args"].items()
        }
        if op == "create_user_flow":
            variables["user_flow_id"] = flows.get_or_create(
                client, args["name"], args.get("description")
            )
            continue
        answer = getattr(client, op)(**args)
        for var, answer_field in step.get("save", {}).items():
            variables[var] = answer.get(answer_field)
        if step.get("checkpoint") and index + 1 < len(plan):
            checkpoint({"step": index + 1, "vars": variables})
    return {"step": len(plan), "vars": variables}


class _Stopped(Exception):
    """Raised inside a sender thread's backoff sleep when the sender is stopped."""


class SendStats:
    """What a sender did: counters, the token's refusal, and the errors seen."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.retried_later = 0
        self.auth_error: str | None = None
        self.errors: list[str] = []


class Sender:
    """Background threads that deliver uploads and mark them in *store*.

    At most *concurrency* uploads at once, and never two of one lane (see ``plan_lane``):
    a lane's uploads go out in the order they were submitted.
    """

    def __init__(self, client: HeadSpinClient, store: Store, *, concurrency: int = 8) -> None:
        self.client = client
        self.store = store
        self.concurrency = max(1, concurrency)
        self.flows = FlowCache()
        self.stats = SendStats()
        self._cond = threading.Condition()
        self._lanes: dict[Hashable, deque[Upload]] = {}  # lanes with uploads not finished
        self._ready: deque[Hashable] = deque()  # lanes whose first upload may start
        self._unfinished = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._closed = False  # no more writes to the store (see close)
        client.sleep = self._sleep

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def submit(self, upload: Upload) -> None:
        lane = plan_lane(upload.plan)
        with self._cond:
            if self._stop.is_set():
                return  # stays pending in the store
            self._unfinished += 1
            if lane in self._lanes:
                self._lanes[lane].append(upload)
            else:
                self._lanes[lane] = deque([upload])
                self._ready.append(lane)
                self._cond.notify()
            if len(self._threads) < min(self.concurrency, len(self._lanes)):
                thread = threading.Thread(
                    target=self._work, name=f"userflow-sender-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                lane = self._ready.popleft()
                upload = self._lanes[lane][0]
            try:
                self.deliver(upload)
            finally:
                with self._cond:
                    uploads = self._lanes[lane]
                    uploads.popleft()
                    if uploads:
                        self._ready.append(lane)
                    else:
                        del self._lanes[lane]
                    self._unfinished -= 1
                    self._cond.notify_all()

    def _write(self, write: Callable[[], None]) -> None:
        with self._cond:
            if not self._closed:  # a thread that outlived close(): its upload stays pending
                write()

    def deliver(self, upload: Upload) -> None:
        """Run one upload and record the outcome in the store."""
        from .client import AuthError, HeadSpinError, RetryableError

        if self.stats.auth_error or self._stop.is_set():
            return
        key = upload.perf_event_id

        def save(progress: dict[str, Any]) -> None:
            self._write(lambda: self.store.save_progress(key, progress))

        try:
            progress = run_plan(self.client, upload.plan, upload.progress, self.flows, save)
        except _Stopped:
            return
        except AuthError as exc:
            if self.stats.auth_error is None:
                self.stats.auth_error = str(exc)
            state, error = PENDING, str(exc)
        except RetryableError as exc:
            self.stats.retried_later += 1
            state, error = PENDING, str(exc)
        except (HeadSpinError, MeasurementError) as exc:
            self.stats.failed += 1
            self.stats.errors.append(str(exc))
            state, error = FAILED, str(exc)
        else:
            self.stats.sent += 1
            remote = progress["vars"].get("perf_event_id")
            self._write(
                lambda: self.store.mark(key, SENT, progress=progress, remote_event_id=remote)
            )
            return
        self._write(lambda: self.store.mark(key, state, error=error))

    @property
    def unfinished(self) -> int:
        """Uploads submitted and not finished yet."""
        return self._unfinished

    def drain(self, timeout: float, tick: Callable[[], None] | None = None) -> bool:
        """Wait up to *timeout* seconds for every submitted upload; True when all finished.

        *tick* is called about every 0.2 s while waiting (progress display). What is not
        finished by then stays pending in the store for ``pytest-userflow push``.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._unfinished and not self.stats.auth_error:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2) if tick else left)
                if tick is not None:
                    tick()
            done = self._unfinished == 0
        self.stop()
        return done

    def stop(self) -> None:
        with self._cond:
            self._stop.set()
            self._cond.notify_all()

    def close(self, wait: float = 2.0) -> None:
        """Stop, give running threads *wait* seconds to finish, then close the client.

        A thread still blocked on the network after that writes nothing more.
        """
        self.stop()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._closed = True
        self.client.close()


class Sink:
    """Commits each finished test to the local store; subclasses decide what else happens."""

    destination = "local"

    def __init__(self, store: Store | None, run: RunInfo) -> None:
        self._store = store
        self.run = run

    @property
    def store(self) -> Store:
        assert self._store is not None, "only NullSink goes without a store"
        return self._store

    def keep(self, record: TestRecord) -> None:
        """Write *record* (once) and set where it went."""
        self.store.write_test(record, self.run)
        record.destination = self.destination

    def finish(self, timeout: float) -> None:
        """Called once at session end, to let pending work end within *timeout* seconds."""

    def close(self) -> None:
        """Called once when the plugin is unconfigured."""

    def notes(self) -> dict[str, Any]:
        """What the summary says of this sink."""
        return {}


class NullSink(Sink):
    """``--userflow-backend off``: values are validated, nothing is kept."""

    destination = "off"

    def keep(self, record: TestRecord) -> None:
        record.destination = self.destination


class DryRunSink(Sink):
    """Keeps the test in the local store and notes the calls HeadSpin would get."""

    destination = "dry-run"

    def __init__(self, store: Store, run: RunInfo, base_url: str, api: str) -> None:
        from .client import DryRunClient

        super().__init__(store, run)
        self.client = DryRunClient(base_url)
        self.api = api
        self.flows = FlowCache()
        self.lines: list[str] = []

    def keep(self, record: TestRecord) -> None:
        super().keep(record)
        record.plan = build_plan(record, self.api)
        if record.plan is None:
            self.lines.append(f"{record.nodeid}: no session and no device, nothing would be sent")
            return
        before = len(self.client.calls)
        run_plan(self.client, record.plan, {}, self.flows)
        self.lines.append(f"{record.nodeid} ({record.status}):")
        self.lines += [f"  {call.describe()}" for call in self.client.calls[before:]]

    def notes(self) -> dict[str, Any]:
        return {"dry_run_lines": self.lines}


class HeadSpinSink(Sink):
    """Commits each test with its upload plan, then hands the plan to the sender."""

    def __init__(self, store: Store, run: RunInfo, client: HeadSpinClient, api: str) -> None:
        super().__init__(store, run)
        self.sender = Sender(client, store)
        self.url = client.base_url
        self.api = api
        self.unroutable: list[str] = []

    def keep(self, record: TestRecord) -> None:
        record.plan = plan = build_plan(record, self.api)
        if plan is None:
            self.store.write_test(record, self.run, ([], self.url, self.api, LOCAL_ONLY))
            record.destination = "local-only"
            self.unroutable.append(record.nodeid)
            return
        self.store.write_test(record, self.run, (plan, self.url, self.api, PENDING))
        record.destination = "queued"
        self.sender.submit(Upload(record.perf_event_id, plan, {}, self.url, self.api))

    def finish(self, timeout: float) -> None:
        self.sender.drain(timeout)

    def close(self) -> None:
        self.sender.close()

    def notes(self) -> dict[str, Any]:
        stats = self.sender.stats
        return {
            "unroutable": self.unroutable,
            "auth_error": stats.auth_error,
            "send_errors": stats.errors,
        }
