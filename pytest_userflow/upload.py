"""Where a finished test goes: the local store, HeadSpin (through the store), or a dry run.

Every sink commits the test to the local store first (the write-ahead log). The HeadSpin
sink stores an *upload plan* with it: the client calls that deliver the test, with
``$user_flow_id`` / ``$perf_event_id`` standing for ids HeadSpin hands back. A
:class:`Sender`'s background threads run the plans and mark them sent in the store;
``pytest-userflow push`` runs what is left with the same code. The requests of one
session, or of one (flow, device), go out in order, one upload at a time.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .model import MeasurementError, RunInfo, TestRecord, truncate_message
from .storage import FAILED, LOCAL_ONLY, PENDING, SENT, Outbox, Upload

if TYPE_CHECKING:
    from .client import HeadSpinClient
    from .storage.sqlite import SQLiteStore

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


def build_plan(
    record: TestRecord, api: str = "v0", status: tuple[str, str | None] | None = None
) -> Plan | None:
    """The calls that deliver *record*; None when it has neither session nor device.

    *status*: the (status, message) to send instead of the record's own (a shared session's).
    """
    data = [m.to_api() for m in record.measurements]
    status_text, message = status or (record.status, record.status_message)
    if api == "legacy" and record.session_id:
        args: dict[str, Any] = {
            "test_name": record.flow,
            "session_id": record.session_id,
            "status": status_text,
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
                    "status": status_text,
                    "status_message": message,
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
        # Made exactly once (see create_event_once); its id is saved as soon as it exists,
        # so a replay goes on from there.
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
                    "status": status_text,
                    "status_message": message,
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

    def forget(self, name: str) -> None:
        """The flow is gone from HeadSpin: the next use PUTs it again."""
        with self._lock:
            self._ids.pop(name, None)


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
        if op == "create_event":
            creating = progress.get("creating") if index == progress.get("step") else None
            answer = create_event_once(
                client,
                args["user_flow_id"],
                args["device_address"],
                creating,
                functools.partial(_creating, checkpoint, index, dict(variables)),
            )
        else:
            answer = getattr(client, op)(**args)
        for var, answer_field in step.get("save", {}).items():
            variables[var] = answer.get(answer_field)
        if step.get("checkpoint") and index + 1 < len(plan):
            checkpoint({"step": index + 1, "vars": variables})
    return {"step": len(plan), "vars": variables}


def _creating(
    checkpoint: Callable[[dict[str, Any]], None],
    step: int,
    variables: dict[str, Any],
    known: list[str],
) -> None:
    """Save that the upload is creating its event at *step*, with the events known before."""
    checkpoint({"step": step, "vars": variables, "creating": known})


def _unset_events(client: HeadSpinClient, flow_id: str, device: str) -> dict[str, dict[str, Any]]:
    """The flow's events on *device* that no status was set for yet, by id."""
    device_id, _, host = device.partition("@")
    return {
        e["perf_event_id"]: e
        for e in client.list_events(flow_id)
        if e.get("device_id") == device_id
        and e.get("host") == host
        and e.get("status") == "Not Set"
        and not e.get("session_id")
    }


def create_event_once(
    client: HeadSpinClient,
    flow_id: str,
    device: str,
    creating: list[str] | None,
    checkpoint: Callable[[list[str]], None],
) -> dict[str, Any]:
    """Create *device*'s event in the flow exactly once, whatever happens to the answers.

    Before each try, the events of the device with no status yet are listed and saved in the
    upload's progress (*checkpoint*); after a lost answer, or on a replay of an upload that
    was *creating* one, an event that is in the listing now and was not then is the one
    HeadSpin made, and it is adopted. Event creation is serialised per flow and device (one
    lane in the sender), so no other event can be that new one.
    """
    from .client import HeadSpinError, LostAnswer

    if creating is not None:
        made = _made(client, flow_id, device, set(creating))
        if made is not None:
            return made
    before = set(_unset_events(client, flow_id, device))
    for attempt in range(client.retries + 1):
        checkpoint(sorted(before))
        try:
            return client.create_event(flow_id, device)
        except LostAnswer:
            made = _made(client, flow_id, device, before)
            if made is not None:
                return made
            if attempt == client.retries:
                raise
            client.sleep(client.retry_delay(attempt, None))
    raise HeadSpinError("unreachable")  # pragma: no cover  (the loop returns or raises)


def _made(
    client: HeadSpinClient, flow_id: str, device: str, before: set[str]
) -> dict[str, Any] | None:
    from .client import HeadSpinError

    new = [e for i, e in _unset_events(client, flow_id, device).items() if i not in before]
    if len(new) > 1:
        raise HeadSpinError(
            f"{len(new)} events with no status appeared on {device} while one was being "
            "created: another program creates events on this device in this flow; this "
            "test's data is kept locally"
        )
    return new[0] if new else None


class _Stopped(Exception):
    """Raised inside a sender thread's backoff sleep when the sender is stopped."""


class SendStats:
    """What a sender did: counters, the token's refusal, and the errors seen."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.retried_later = 0
        self.auth_error: str | None = None
        self.unreachable: str | None = None  # why the server could not be reached
        self.errors: list[str] = []


class Sender:
    """Background threads that deliver uploads and mark them in *store*.

    At most *concurrency* uploads at once, and never two of one lane (see ``plan_lane``): a
    lane's uploads go out in the order they were submitted, and one that cannot be sent now
    holds back those behind it (they stay pending, for ``push`` to send in that order).
    A server that cannot be reached stops the sending: the rest stays pending.
    """

    def __init__(self, client: HeadSpinClient, store: Outbox, *, concurrency: int = 8) -> None:
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
            done = False
            try:
                done = self.deliver(upload)
            finally:
                with self._cond:
                    uploads = self._lanes[lane]
                    uploads.popleft()
                    self._unfinished -= 1
                    if not done:  # held back behind it: they stay pending, in order
                        self._unfinished -= len(uploads)
                        uploads.clear()
                    if uploads:
                        self._ready.append(lane)
                    else:
                        del self._lanes[lane]
                    self._cond.notify_all()

    def deliver(self, upload: Upload) -> bool:
        """Run one upload and record the outcome in the store; False when it stays pending."""
        from .client import AuthError, HeadSpinError, NotFound, RetryableError

        if self.stats.auth_error or self._stop.is_set():
            return False
        key = upload.perf_event_id

        def save(progress: dict[str, Any]) -> None:
            with self._cond:
                if not self._closed:
                    self.store.save_progress(key, progress)

        try:
            try:
                progress = run_plan(self.client, upload.plan, upload.progress, self.flows, save)
            except NotFound as exc:
                # The flow was deleted meanwhile: made again once, and the plan run anew.
                if exc.message != "User flow does not exist" or upload.plan[0]["op"] != (
                    "create_user_flow"
                ):
                    raise
                self.flows.forget(upload.plan[0]["args"]["name"])
                progress = run_plan(self.client, upload.plan, {}, self.flows, save)
        except _Stopped:
            return False
        except AuthError as exc:
            if self.stats.auth_error is None:
                self.stats.auth_error = str(exc)
            self._mark(key, PENDING, error=str(exc))
            return False
        except RetryableError as exc:
            self.stats.retried_later += 1
            if exc.status_code is None and self.stats.unreachable is None:
                self.stats.unreachable = str(exc)
                self.stop()
            self._mark(key, PENDING, error=str(exc))
            return False
        except (HeadSpinError, MeasurementError) as exc:
            self.stats.failed += 1
            self.stats.errors.append(str(exc))
            self._mark(key, FAILED, error=str(exc))
            return True
        self.stats.sent += 1
        remote = progress["vars"].get("perf_event_id")
        self._mark(key, SENT, progress=progress, remote_event_id=remote)
        return True

    def _mark(self, key: str, state: str, **how: Any) -> None:
        with self._cond:
            if not self._closed:  # a thread that outlived close(): its upload stays pending
                self.store.mark(key, state, **how)

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
            while self._unfinished and not self.stats.auth_error and not self._stop.is_set():
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

    def __init__(self, store: SQLiteStore, run: RunInfo) -> None:
        self.store = store
        self.run = run

    def keep(self, record: TestRecord) -> None:
        """Write *record* (once) and set where it went."""
        self.store.add_test(record, self.run)
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

    def __init__(self, run: RunInfo) -> None:
        self.run = run

    def keep(self, record: TestRecord) -> None:
        record.destination = self.destination


class DryRunSink(Sink):
    """Keeps the test in the local store and notes the calls HeadSpin would get."""

    destination = "dry-run"

    def __init__(self, store: SQLiteStore, run: RunInfo, base_url: str, api: str) -> None:
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


class SharedSession:
    """A HeadSpin session that several tests of this run attached: HeadSpin keeps it as one
    event, with one status and one value per key and type.

    Its status is Failed when any of its tests failed (the message is the first failure,
    naming its test), else Passed when any passed, else Excluded; the uploads go out in test
    order, so each key and type keeps the last test's value."""

    def __init__(self, flow: str) -> None:
        self.flow = flow
        self.tests = 0
        self.status = "Excluded"
        self.message: str | None = None

    def add(self, record: TestRecord) -> tuple[str, str | None]:
        """Count *record* in; the (status, message) the session has with it."""
        self.tests += 1
        if record.status == "Failed" and self.status != "Failed":
            self.status = "Failed"
            self.message = record.status_message
            if self.tests > 1:
                self.message = truncate_message(f"{record.nodeid}: {record.status_message or ''}")
        elif record.status == "Passed" and self.status == "Excluded":
            self.status, self.message = "Passed", None
        elif self.tests == 1:
            self.message = record.status_message
        return self.status, self.message


class HeadSpinSink(Sink):
    """Commits each test with its upload plan, then hands the plan to the sender."""

    def __init__(self, store: SQLiteStore, run: RunInfo, client: HeadSpinClient, api: str) -> None:
        super().__init__(store, run)
        self.sender = Sender(client, store)
        self.url = client.base_url
        self.api = api
        self.unroutable: list[str] = []
        self.sessions: dict[str, SharedSession] = {}
        self.refused: list[str] = []  # sessions attached to two flows

    def keep(self, record: TestRecord) -> None:
        status = None
        if record.session_id is not None:
            session = self.sessions.setdefault(record.session_id, SharedSession(record.flow))
            if session.flow != record.flow:
                self._refuse(record, session)
                return
            status = session.add(record)
        record.plan = plan = build_plan(record, self.api, status)
        if plan is None:
            self.store.add_test(record, self.run, ([], self.url, self.api, LOCAL_ONLY))
            record.destination = "local-only"
            self.unroutable.append(record.nodeid)
            return
        self.store.add_test(record, self.run, (plan, self.url, self.api, PENDING))
        record.destination = "queued"
        self.sender.submit(Upload(record.perf_event_id, plan, {}, self.url, self.api))

    def _refuse(self, record: TestRecord, session: SharedSession) -> None:
        """A session already attached in this run to another flow: HeadSpin keeps a session
        in one flow, so this test's data stays here, refused."""
        why = (
            f"{record.nodeid} attached the HeadSpin session {record.session_id} to the flow "
            f"{record.flow!r}, but this run attached it to the flow {session.flow!r} before: a "
            "session belongs to one flow; this test's data is kept locally only"
        )
        self.store.add_test(record, self.run, ([], self.url, self.api, FAILED), error=why)
        record.destination = "local-only"
        self.refused.append(why)

    def finish(self, timeout: float) -> None:
        self.sender.drain(timeout)

    def close(self) -> None:
        self.sender.close()

    def notes(self) -> dict[str, Any]:
        stats = self.sender.stats
        shared = {
            sid: {"flow": s.flow, "tests": s.tests, "status": s.status}
            for sid, s in self.sessions.items()
            if s.tests > 1
        }
        return {
            "unroutable": self.unroutable,
            "auth_error": stats.auth_error,
            "unreachable": stats.unreachable and f"{self.url}: {stats.unreachable}",
            "send_errors": stats.errors + self.refused,
            "shared_sessions": shared,
            "legacy": self.api == "legacy",
        }
