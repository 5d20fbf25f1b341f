"""Where a finished test's data goes: the local store, HeadSpin (through the store), or a dry run.

Every sink writes the test to the local store first (the write-ahead log), through the
process's journal (see journal.py): one append at teardown, folded into SQLite in batches,
so test time does not pay for a database commit. The HeadSpin
sink also stores an *upload plan*: the client calls that deliver the test, with
``$user_flow_id`` / ``$perf_event_id`` standing for ids HeadSpin hands back. A
background :class:`Sender` runs the plans and marks them sent; ``pytest-userflow push``
runs what is left with the same code. The client is loaded by the HeadSpin and dry-run
sinks only: a run on the local store does without it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .measurement import MeasurementError
from .store import FAILED, LOCAL_ONLY, PENDING, SENT, EventRecord, Upload

if TYPE_CHECKING:
    from .client import HeadSpinClient

#: Where a sink writes: a journal op such as ``{"op": "event", ...}`` (see journal.py).
Write = Callable[[dict[str, Any]], None]
#: ``JournalWriter.write_event``: a test's head fields and its measurements, no EventRecord
WriteEvent = Callable[[tuple[Any, ...], list[Any]], None]

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


def build_plan(event: EventRecord, api: str = "v0") -> Plan | None:
    """The calls that deliver *event*; None when it has neither session nor device."""
    data = [m.to_api() for m in event.measurements]
    if api == "legacy" and event.session_id:
        args: dict[str, Any] = {
            "test_name": event.flow,
            "session_id": event.session_id,
            "status": event.status,
        }
        if data:
            args["data"] = data
        return [{"op": "legacy_upload", "args": args}]
    flow: dict[str, Any] = {
        "op": "create_user_flow",
        "args": {"name": event.flow, "description": event.description},
        "save": {"user_flow_id": "user_flow_id"},
    }
    if event.session_id:
        plan = [
            flow,
            {
                "op": "attach_session",
                "args": {
                    "user_flow_id": "$user_flow_id",
                    "session_id": event.session_id,
                    "status": event.status,
                    "status_message": event.status_message,
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
                        "session_id": event.session_id,
                        "measurements": data,
                    },
                }
            )
        return plan
    if event.device_address:
        # The event id is saved as soon as it exists, so a replay never creates it twice.
        plan = [
            flow,
            {
                "op": "create_event",
                "args": {"user_flow_id": "$user_flow_id", "device_address": event.device_address},
                "save": {"perf_event_id": "perf_event_id"},
                "checkpoint": True,
            },
            {
                "op": "update_event",
                "args": {
                    "user_flow_id": "$user_flow_id",
                    "event_id": "$perf_event_id",
                    "status": event.status,
                    "status_message": event.status_message,
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


class _Stopped(Exception):
    """Raised inside a sender thread's backoff sleep when the sender is stopped."""


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
    start = int(progress.get("step", 0))
    for index in range(start, len(plan)):
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


class SendStats:
    """What a sender did: counters, the token's refusal, and the errors seen."""

    __slots__ = ("auth_error", "errors", "failed", "retried_later", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.retried_later = 0
        self.auth_error: str | None = None
        self.errors: list[str] = []


class Sender:
    """Background threads that deliver uploads, at most *concurrency* at once."""

    def __init__(self, client: HeadSpinClient, write: Write, *, concurrency: int = 8) -> None:
        self.write = write  # where marks and progress go: the journal, or the store for push
        self.client = client
        self.concurrency = max(1, concurrency)
        self.flows = FlowCache()
        self.stats = SendStats()
        self._queue: queue.Queue[Upload | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unfinished = 0
        self._idle = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        client.sleep = self._sleep

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def submit(self, upload: Upload) -> None:
        if self._stop.is_set():
            return  # stays pending in the store
        with self._idle:
            self._unfinished += 1
        self._queue.put(upload)
        if len(self._threads) < min(self.concurrency, self._unfinished):
            thread = threading.Thread(
                target=self._work, name=f"userflow-sender-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _report(self, op: dict[str, Any]) -> None:
        with self._write_lock:
            if not self._closed:  # a thread that outlived close(): its upload stays pending
                self.write(op)

    def _mark(
        self,
        perf_event_id: str,
        state: str,
        *,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
        remote_event_id: str | None = None,
    ) -> None:
        self._report(
            {
                "op": "mark",
                "id": perf_event_id,
                "state": state,
                "error": error,
                "progress": progress,
                "remote": remote_event_id,
            }
        )

    def _checkpoint(self, perf_event_id: str) -> Callable[[dict[str, Any]], None]:
        def save(progress: dict[str, Any]) -> None:
            self._report({"op": "progress", "id": perf_event_id, "progress": progress})

        return save

    def deliver(self, upload: Upload) -> None:
        """Run one upload and record the outcome in the store (also used by ``push``)."""
        from .client import AuthError, HeadSpinError, RetryableError

        if self.stats.auth_error or self._stop.is_set():
            return
        try:
            progress = run_plan(
                self.client,
                upload.plan,
                upload.progress,
                self.flows,
                self._checkpoint(upload.perf_event_id),
            )
        except _Stopped:
            return
        except AuthError as exc:
            if self.stats.auth_error is None:
                self.stats.auth_error = str(exc)
            self._mark(upload.perf_event_id, PENDING, error=str(exc))
        except RetryableError as exc:
            self.stats.retried_later += 1
            self._mark(upload.perf_event_id, PENDING, error=str(exc))
        except (HeadSpinError, MeasurementError) as exc:
            self.stats.failed += 1
            self.stats.errors.append(str(exc))
            self._mark(upload.perf_event_id, FAILED, error=str(exc))
        else:
            self.stats.sent += 1
            self._mark(
                upload.perf_event_id,
                SENT,
                progress=progress,
                remote_event_id=progress["vars"].get("perf_event_id"),
            )

    def _work(self) -> None:
        while True:
            upload = self._queue.get()
            if upload is None:
                return
            try:
                self.deliver(upload)
            finally:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()

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
        with self._idle:
            while self._unfinished and not self.stats.auth_error:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(min(left, 0.2 if tick else 0.5))
                if tick is not None:
                    tick()
            done = self._unfinished == 0
        self.stop()
        return done

    def stop(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)

    def close(self, wait: float = 2.0) -> None:
        """Stop, give running threads *wait* seconds to finish, then close the client.

        A thread still blocked on the network after that reports nothing more.
        """
        self.stop()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._write_lock:
            self._closed = True
        self.client.close()


class FlushOutcome(NamedTuple):
    """What happened to one test's data at its teardown."""

    destination: str  # local, queued, local-only, dry-run, off
    plan: Plan | None = None


_LOCAL = FlushOutcome("local")


def _keep_nothing(head: tuple[Any, ...], measurements: list[Any]) -> None:
    pass


class Sink:
    """Writes each finished test to the local store; subclasses decide what else happens.

    ``write_event`` is the quick way for a test that needs nothing but keeping: no
    EventRecord is made for it. It is None where a sink needs the event (to send it).
    """

    def __init__(self, write: Write | None, write_event: WriteEvent | None = None) -> None:
        self.write = write
        self.write_event = write_event

    def _write_event(
        self, event: EventRecord, upload: list[Any] | None = None, state: str = PENDING
    ) -> None:
        assert self.write is not None
        self.write({"op": "event", "event": event, "upload": upload, "state": state})

    def submit(self, event: EventRecord) -> FlushOutcome:
        self._write_event(event)
        return _LOCAL

    def finish(self, timeout: float) -> None:
        """Called once at session end."""

    def close(self) -> None:
        """Called once when the plugin is unconfigured."""


class NullSink(Sink):
    """``--userflow-backend off``: values are validated, nothing is kept."""

    def __init__(self) -> None:
        super().__init__(None, _keep_nothing)

    def submit(self, event: EventRecord) -> FlushOutcome:
        return FlushOutcome("off")


class DryRunSink(Sink):
    """Keeps the test in the local store and notes the calls HeadSpin would get."""

    def __init__(self, write: Write, base_url: str, api: str) -> None:
        from .client import DryRunClient

        super().__init__(write)
        self.client = DryRunClient(base_url)
        self.api = api
        self.flows = FlowCache()
        self.lines: list[str] = []

    def submit(self, event: EventRecord) -> FlushOutcome:
        super().submit(event)
        plan = build_plan(event, self.api)
        if plan is None:
            self.lines.append(f"{event.nodeid}: no session and no device, nothing would be sent")
            return FlushOutcome("dry-run")
        before = len(self.client.calls)
        run_plan(self.client, plan, {}, self.flows)
        self.lines.append(f"{event.nodeid} ({event.status}):")
        self.lines += [f"  {call.describe()}" for call in self.client.calls[before:]]
        return FlushOutcome("dry-run", plan)


class HeadSpinSink(Sink):
    """Commits each test and its upload plan, then hands the plan to the sender."""

    def __init__(self, write: Write, sender: Sender, api: str) -> None:
        super().__init__(write)
        self.sender = sender
        self.api = api
        self.unroutable: list[str] = []

    def submit(self, event: EventRecord) -> FlushOutcome:
        url = self.sender.client.base_url
        plan = build_plan(event, self.api)
        if plan is None:
            self._write_event(event, [[], url, self.api], LOCAL_ONLY)
            self.unroutable.append(event.nodeid)
            return FlushOutcome("local-only")
        # Written (to the journal) before it is sent, so its marks always come after it.
        self._write_event(event, [plan, url, self.api])
        self.sender.submit(Upload(event.perf_event_id, plan, {}, url, self.api))
        return FlushOutcome("queued", plan)

    def finish(self, timeout: float) -> None:
        self.sender.drain(timeout)

    def close(self) -> None:
        self.sender.close()
