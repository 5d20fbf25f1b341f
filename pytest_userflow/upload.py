"""Where a finished test goes: the local store, HeadSpin (through the store), or a dry run.

Every sink commits the test to the local store first (the write-ahead log). The HeadSpin
sink commits an *upload* with it: where the test goes, and later how far its delivery got
(the ids HeadSpin made for it). A :class:`Sender`'s background threads read each test back
from the store, send it with plain client calls (:func:`send_test`), skipping what its
progress says is done, and mark it sent; ``pytest-userflow push`` sends what is left with
the same code. The requests of one session, or of one (flow, device), go out in order, one
upload at a time.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .model import (
    MeasurementError,
    RunInfo,
    SessionShare,
    SinkNotes,
    TestRecord,
    truncate_message,
)
from .storage import (
    FAILED,
    LOCAL_ONLY,
    PENDING,
    SENT,
    Outbox,
    Progress,
    StoreError,
    TeamStore,
    Upload,
)

if TYPE_CHECKING:
    from .client import HeadSpinClient
    from .storage.sqlite import SQLiteStore


def routable(record: TestRecord) -> bool:
    """Whether HeadSpin can take *record*: it has a session or a device."""
    return record.session_id is not None or record.device_address is not None


def lane(upload: Upload) -> Hashable:
    """What an upload's requests must not overtake: its session, or its flow and device."""
    if upload.session_id is not None:
        return ("session", upload.session_id)
    return ("device", upload.flow, upload.device_address)


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


def send_test(
    client: HeadSpinClient,
    record: TestRecord,
    status: tuple[str, str | None],
    api: str,
    progress: Progress,
    flows: FlowCache,
    save: Callable[[Progress], None] = lambda progress: None,
    own: Callable[[], OwnLane] = lambda: OwnLane(),
) -> Progress:
    """Send *record* with *status* from where *progress* says; return how far it got (all
    the way). *save* keeps the progress made on the way (the device's event, once made);
    *own* tells the other uploads of its (flow, device) (see ``create_event_once``).

    The flow (PUT once per process), then the session attached with its measurements, or the
    device's event made once, its status set and its measurements added; with the legacy API
    and a session, one upload. A flow deleted meanwhile is made again once, and the test sent
    anew into it.
    """
    from .client import NotFound

    if api == "legacy" and record.session_id is not None:
        client.legacy_upload(
            test_name=record.flow,
            session_id=record.session_id,
            status=status[0],
            data=record.measurements or None,
        )
        return progress
    flow_id = progress.flow_id or flows.get_or_create(client, record.flow, record.description)
    try:
        return _send_to_flow(client, record, status, flow_id, progress, save, own)
    except NotFound:
        if not _flow_gone(client, flow_id):
            raise
    flows.forget(record.flow)
    flow_id = flows.get_or_create(client, record.flow, record.description)
    return _send_to_flow(client, record, status, flow_id, Progress(), save, own)


def _send_to_flow(
    client: HeadSpinClient,
    record: TestRecord,
    status: tuple[str, str | None],
    flow_id: str,
    progress: Progress,
    save: Callable[[Progress], None],
    own: Callable[[], OwnLane],
) -> Progress:
    from .client import HeadSpinError

    data = record.measurements
    if record.session_id is not None:
        made = client.attach_session(flow_id, record.session_id, *status)
        if data:
            client.add_session_measurements(flow_id, record.session_id, data)
        return Progress(flow_id, made.get("perf_event_id"))
    if record.device_address is None:
        raise MeasurementError(f"{record.nodeid}: no session and no device to send it to")
    event_id = progress.event_id
    if event_id is None:
        made = create_event_once(
            client,
            flow_id,
            record.device_address,
            progress.creating,
            lambda known: save(Progress(flow_id, creating=tuple(known))),
            own,
        )
        event_id = made.get("perf_event_id")
        if not isinstance(event_id, str):
            raise HeadSpinError(f"the event made on {record.device_address} came with no id")
        save(Progress(flow_id, event_id))
    client.update_event(flow_id, event_id, *status)
    if data:
        client.add_event_measurements(flow_id, event_id, data)
    return Progress(flow_id, event_id)


def _flow_gone(client: HeadSpinClient, flow_id: str) -> bool:
    """Whether the flow no longer exists on HeadSpin (its own route answers 404)."""
    from .client import NotFound

    try:
        client.get_user_flow(flow_id)
    except NotFound:
        return True
    return False


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


@dataclass(frozen=True)
class OwnLane:
    """What the local store knows of the uploads of one (flow, device), beside the one
    making its event: the events they hold already (*held*), and how many are making one
    (*creating*, this one included): at most that many new events with no status are ours."""

    held: frozenset[str] = frozenset()
    creating: int = 1


def settle_time(client: HeadSpinClient) -> float:
    """How long an event creation whose answer was lost may still take on HeadSpin: as long
    again as the client waited for the answer."""
    return client.timeout[1]


#: At most how long a replay looks for the event its upload was making: the sender that
#: sent the creation has ended (it waited itself, or was killed), so only a push started
#: right after it can find HeadSpin still at the work.
REPLAY_SETTLE = 2.0


def create_event_once(
    client: HeadSpinClient,
    flow_id: str,
    device: str,
    creating: Collection[str] | None,
    checkpoint: Callable[[list[str]], None],
    own: Callable[[], OwnLane] = OwnLane,
) -> dict[str, Any]:
    """Create *device*'s event in the flow exactly once, whatever happens to the answers.

    Before each try, the events of the device with no status yet are listed and saved in the
    upload's progress (*checkpoint*). After a lost answer, or on a replay of an upload that
    was *creating* one, an event that is in the listing now and was not then is one that
    this store's uploads made, and it is adopted. When none is there yet after an answer that
    timed out, or on a replay, HeadSpin may still be making it: the listing is asked again
    for ``settle_time`` (``REPLAY_SETTLE`` at most on a replay) before the event is made
    again. Such events have no status and
    no data: any of them does for any upload that was making one, so an upload adopts the
    oldest, skipping those other uploads hold (*own*). More new ones than this store's
    uploads were making means another program makes events there: refused.
    """
    from .client import HeadSpinError, LostAnswer

    if creating is not None:
        wait = min(settle_time(client), REPLAY_SETTLE)
        made = _await_made(client, flow_id, device, set(creating), own, wait)
        if made is not None:
            return made
    before = set(_unset_events(client, flow_id, device))
    for attempt in range(client.retries + 1):
        checkpoint(sorted(before))
        try:
            return client.create_event(flow_id, device)
        except LostAnswer as lost:
            wait = settle_time(client) if lost.timed_out else 0.0
            made = _await_made(client, flow_id, device, before, own, wait)
            if made is not None:
                return made
            if attempt == client.retries:
                raise
            if not lost.timed_out:  # the exchange ended with nothing made: back off first
                client.sleep(client.retry_delay(attempt, None))
    raise HeadSpinError("unreachable")  # pragma: no cover  (the loop returns or raises)


def _await_made(
    client: HeadSpinClient,
    flow_id: str,
    device: str,
    before: set[str],
    own: Callable[[], OwnLane],
    wait: float,
) -> dict[str, Any] | None:
    """The event a creation made, looked for during *wait* seconds; None if none came."""
    deadline = time.monotonic() + wait
    while True:
        made = _made(client, flow_id, device, before, own)
        left = deadline - time.monotonic()
        if made is not None or left <= 0:
            return made
        client.sleep(min(left, max(0.05, wait / 8)))


def _made(
    client: HeadSpinClient,
    flow_id: str,
    device: str,
    before: set[str],
    own: Callable[[], OwnLane],
) -> dict[str, Any] | None:
    from .client import HeadSpinError

    new = [e for i, e in _unset_events(client, flow_id, device).items() if i not in before]
    if not new:
        return None
    lane = own()
    new = [e for e in new if e["perf_event_id"] not in lane.held]
    if len(new) > lane.creating:
        raise HeadSpinError(
            f"{len(new)} events with no status appeared on {device} while this store's "
            f"uploads were making {lane.creating}: another program creates events on this "
            "device in this flow; this test's data is kept locally"
        )
    # the oldest first; the listing's order among those of one second
    return min(new, key=lambda e: str(e.get("event_time") or ""), default=None)


#: What a ``Deliveries`` delivers: an upload, or a local event id.
Item = TypeVar("Item")


#: Seconds between looks at an upload another sender is sending.
CLAIM_POLL = 0.1


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
        self.busy = 0  # uploads another sender had claimed, left to it
        self.errors: list[str] = []


class Deliveries(Generic[Item]):
    """Background threads that deliver items (``deliver``, a subclass's) and note each
    outcome in the outbox.

    At most *concurrency* items at once, and never two of one lane (see ``lane``): a lane's
    items go out in the order they were submitted, and one that cannot be delivered now
    holds back those behind it (they stay pending, for ``push`` to deliver in that order).
    A destination that cannot be reached stops the delivery: the rest stays pending.
    """

    def __init__(self, store: Outbox, *, concurrency: int = 8) -> None:
        self.store = store
        self.concurrency = max(1, concurrency)
        self.stats = SendStats()
        self._cond = threading.Condition()
        self._lanes: dict[Hashable, deque[Item]] = {}  # lanes with items not finished
        self._ready: deque[Hashable] = deque()  # lanes whose first item may start
        self._unfinished = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._closed = False  # the store is not touched any more (see close)

    #: How many items of a lane one ``deliver_all`` takes at most.
    batch = 1

    def lane(self, item: Item) -> Hashable:
        """What *item* must not overtake."""
        raise NotImplementedError

    def deliver(self, item: Item) -> bool:
        """Deliver one item and note the outcome in the store; False when it stays pending."""
        raise NotImplementedError

    def deliver_all(self, items: list[Item]) -> bool:
        """Deliver the next items of one lane, in order; False when the rest stays pending."""
        return all(self.deliver(item) for item in items)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def submit(self, item: Item) -> None:
        key = self.lane(item)
        with self._cond:
            if self._stop.is_set():
                return  # stays pending in the store
            self._unfinished += 1
            if key in self._lanes:
                self._lanes[key].append(item)
            else:
                self._lanes[key] = deque([item])
                self._ready.append(key)
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
                key = self._ready.popleft()
                taken = list(itertools.islice(self._lanes[key], self.batch))
            done = False
            try:
                done = self.deliver_all(taken)
            except Exception as exc:  # the sender outlives any failure: the items stay pending
                self._unexpected(taken, exc)
            finally:
                with self._cond:
                    items = self._lanes[key]
                    for _ in taken:
                        items.popleft()
                    self._unfinished -= len(taken)
                    if not done:  # held back behind it: they stay pending, in order
                        self._unfinished -= len(items)
                        items.clear()
                    if items:
                        self._ready.append(key)
                    else:
                        del self._lanes[key]
                    self._cond.notify_all()

    def _unexpected(self, items: list[Item], exc: Exception) -> None:
        """A delivery failed in a way no rule foresaw: said in the summary, kept on its
        items, which stay pending (with those behind them) for ``pytest-userflow push``."""
        why = f"{type(exc).__name__}: {exc}"
        self.stats.errors.append(
            f"a delivery stopped by {why}: its test(s) stay pending for 'pytest-userflow push'"
        )
        with contextlib.suppress(Exception):  # a store that cannot be written is said above
            self._noting(lambda: self.hold(items, why))

    def hold(self, items: list[Item], why: str) -> None:
        """Keep *items* pending in the store, with *why*."""
        raise NotImplementedError

    def _noting(self, note: Callable[[], object]) -> bool:
        """Run *note* (a write to the store) unless closed; False when it was not run."""
        with self._cond:
            if self._closed:  # a thread that outlived close(): its item stays pending
                return False
            note()
            return True

    @property
    def unfinished(self) -> int:
        """Items submitted and not finished yet."""
        return self._unfinished

    def drain(self, timeout: float, tick: Callable[[], None] | None = None) -> bool:
        """Wait up to *timeout* seconds for every submitted item; True when all finished.

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
        """Stop, give running threads *wait* seconds to finish, then let go of the
        destination (``release``). A thread still blocked after that writes nothing more.
        """
        self.stop()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            if not any(thread.is_alive() for thread in self._threads):
                with contextlib.suppress(StoreError):  # else they end with the process
                    self.unclaim()
            self._closed = True
        self.release()

    def unclaim(self) -> None:
        """Let go of the items this sender claimed and did not finish: another may send them."""

    def release(self) -> None:
        """Close the connection to the destination."""


class Sender(Deliveries[Upload]):
    """Delivers uploads to HeadSpin, one lane per session or (flow, device)."""

    def __init__(
        self,
        client: HeadSpinClient,
        store: Outbox,
        *,
        concurrency: int = 8,
        states: tuple[str, ...] = (PENDING,),
    ) -> None:
        super().__init__(store, concurrency=concurrency)
        self.client = client
        self.flows = FlowCache()
        self.states = states  # what it sends: pending uploads, and refused ones on request
        self.owner = uuid.uuid4().hex  # its claims on uploads, against other senders'
        client.sleep = self._sleep

    def lane(self, item: Upload) -> Hashable:
        return lane(item)

    def deliver(self, item: Upload) -> bool:
        """Send one upload's test and record the outcome in the store; False when it stays
        pending."""
        from .client import AuthError, HeadSpinError, RetryableError

        if self.stats.auth_error or self._stop.is_set():
            return False
        key = item.perf_event_id

        def save(progress: Progress) -> None:
            self._noting(lambda: self.store.save_progress(key, progress))

        # Another sender (a push, a run) may have it: never two send one test. Its lane waits
        # for the other to finish it, so that the lane's order holds.
        try:
            while (claimed := self._claim(key)) == "busy":
                self._sleep(CLAIM_POLL)
        except _Stopped:
            self.stats.busy += 1
            return False
        if claimed != "mine":  # done by the other, or this sender is closed
            return claimed == "done"
        with self._cond:  # once closed, the store is not touched again
            if self._closed:
                return False
            record = self.store.record(key)
            # Read now, under the claim: a sender before this one may have got further.
            done = self.store.progress(key)
        status = item.status or (record.status, record.status_message)
        try:
            progress = send_test(
                self.client,
                record,
                status,
                item.api,
                done,
                self.flows,
                save,
                lambda: self._own_lane(item),
            )
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
        self._mark(key, SENT, progress=progress)
        return True

    def unclaim(self) -> None:
        self.store.unclaim(self.owner)

    def _own_lane(self, item: Upload) -> OwnLane:
        """What the store's other uploads of *item*'s (flow, device) hold and make."""
        with self._cond:
            if self._closed:
                return OwnLane()
            uploads = self.store.uploads((PENDING, FAILED))
        held, creating = set(), 1
        for other in uploads:
            if other.perf_event_id == item.perf_event_id or (lane(other), other.base_url) != (
                lane(item),
                item.base_url,
            ):
                continue
            if other.progress.event_id is not None:
                held.add(other.progress.event_id)
            elif other.progress.creating is not None:
                creating += 1
        return OwnLane(frozenset(held), creating)

    def _claim(self, key: str) -> str:
        with self._cond:
            return "closed" if self._closed else self.store.claim(key, self.owner, self.states)

    def _mark(self, key: str, state: str, **how: Any) -> None:
        self._noting(lambda: self.store.mark(key, state, **how))

    def hold(self, items: list[Upload], why: str) -> None:
        for item in items:
            self.store.mark(item.perf_event_id, PENDING, error=why)

    def release(self) -> None:
        self.client.close()


class TeamSender(Deliveries[str]):
    """Delivers tests (by local event id) from the outbox to the team store, a PostgreSQL
    history, in the order recorded, over one connection of its own: what waits is sent in
    one transaction (up to ``batch`` tests). The history keeps a test once by its event id,
    so a delivery repeated after a lost answer doubles nothing. Any failure there (down,
    slow past the connect timeout, a refused password, no right to write) stops the
    delivery: what is left stays pending for ``pytest-userflow push``."""

    batch = 500

    def __init__(self, history: TeamStore, store: Outbox) -> None:
        super().__init__(store, concurrency=1)
        self.history = history

    def lane(self, item: str) -> Hashable:
        return "team"

    def deliver_all(self, items: list[str]) -> bool:
        if self._stop.is_set():
            return False
        with self._cond:
            if self._closed:
                return False
            stored = list(self.store.records(items))
        try:
            self.history.add_tests(stored)
        except StoreError as exc:
            why = str(exc)
            if self.stats.unreachable is None:
                self.stats.unreachable = why
            self.stop()
            self._noting(lambda: self.store.mark_deliveries(items, PENDING, error=why))
            return False
        self.stats.sent += len(items)
        self._noting(lambda: self.store.mark_deliveries(items, SENT))
        return True

    def hold(self, items: list[str], why: str) -> None:
        self.store.mark_deliveries(items, PENDING, error=why)

    def release(self) -> None:
        # A thread still waiting on the server holds the connection: it is left to the
        # process's end rather than waited for.
        if not any(thread.is_alive() for thread in self._threads):
            self.history.close()


def waiting(
    sender: Deliveries[Any], what: str, say: Callable[[str], None] | None
) -> Callable[[], None] | None:
    """A ``drain`` tick that, once the wait passes a second, says once what it waits for."""
    if say is None:
        return None
    start = time.monotonic()
    said = False

    def tick() -> None:
        nonlocal said
        if not said and sender.unfinished and time.monotonic() - start >= 1.0:
            said = True
            say(
                f"userflow: waiting for {sender.unfinished} {what} ... (Ctrl-C leaves them "
                "pending for pytest-userflow push)"
            )

    return tick


class Sink:
    """Commits each finished test to the local store; subclasses decide what else happens.

    *team*: the sender to the team store (a PostgreSQL history): each test is committed with
    a delivery for it, then handed to the sender.
    """

    destination = "local"

    def __init__(self, store: SQLiteStore, run: RunInfo, team: TeamSender | None = None) -> None:
        self.store = store
        self.run = run
        self.team = team

    def keep(self, record: TestRecord) -> None:
        """Write *record* (once) and set where it went."""
        self._commit(record)
        record.destination = self.destination

    def _commit(self, record: TestRecord, upload: Upload | None = None, **how: Any) -> None:
        """The test's one write to the outbox (with its *upload*, in the state *how* says),
        then its delivery to the team store starts."""
        team = None if self.team is None else self.team.history.location
        self.store.add_test(record, self.run, upload, team=team, **how)
        if self.team is not None:
            self.team.submit(record.perf_event_id)

    def finish(self, timeout: float, say: Callable[[str], None] | None = None) -> None:
        """Called once at session end, to let pending work end within *timeout* seconds;
        a wait of more than a second is told through *say*."""
        if self.team is not None:
            self.team.drain(timeout, waiting(self.team, "test(s) for the team store", say))

    def stop(self) -> None:
        """End the wait at once (Ctrl-C): what is not delivered stays pending."""
        if self.team is not None:
            self.team.stop()

    def close(self) -> None:
        """Called once when the plugin is unconfigured."""
        if self.team is not None:
            self.team.close()

    def notes(self) -> SinkNotes:
        """What the summary says of this sink."""
        if self.team is None:
            return SinkNotes()
        stats = self.team.stats
        return SinkNotes(
            team_store=self.team.history.location,
            team_delivered=stats.sent,
            team_error=stats.unreachable,
        )


class NullSink(Sink):
    """``--userflow-backend off``: values are validated, nothing is kept."""

    destination = "off"

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self.team = None

    def keep(self, record: TestRecord) -> None:
        record.destination = self.destination


class DryRunSink(Sink):
    """Keeps the test in the local store and notes the calls HeadSpin would get."""

    destination = "dry-run"

    def __init__(self, store: SQLiteStore, run: RunInfo, base_url: str, api: str) -> None:
        from .client import DryRunClient

        super().__init__(store, run)  # a dry run sends nothing to a team store either
        self.client = DryRunClient(base_url)
        self.api = api
        self.flows = FlowCache()
        self.lines: list[str] = []

    def keep(self, record: TestRecord) -> None:
        super().keep(record)
        if not routable(record):
            self.lines.append(f"{record.nodeid}: no session and no device, nothing would be sent")
            return
        before = len(self.client.calls)
        own = (record.status, record.status_message)
        send_test(self.client, record, own, self.api, Progress(), self.flows)
        self.lines.append(f"{record.nodeid} ({record.status}):")
        self.lines += [f"  {call.describe()}" for call in self.client.calls[before:]]

    def notes(self) -> SinkNotes:
        return SinkNotes(dry_run_lines=self.lines)


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
    """Commits each test with its upload, then hands the upload to the sender."""

    def __init__(
        self,
        store: SQLiteStore,
        run: RunInfo,
        client: HeadSpinClient,
        api: str,
        team: TeamSender | None = None,
    ) -> None:
        super().__init__(store, run, team)
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
            if status == (record.status, record.status_message):
                status = None  # the test's own
        upload = self._upload(record, status)
        if not routable(record):
            self._commit(record, upload, state=LOCAL_ONLY)
            record.destination = "local-only"
            self.unroutable.append(record.nodeid)
            return
        self._commit(record, upload)
        record.destination = "queued"
        self.sender.submit(upload)

    def _upload(self, record: TestRecord, status: tuple[str, str | None] | None) -> Upload:
        return Upload(
            record.perf_event_id,
            record.flow,
            record.session_id,
            record.device_address,
            self.url,
            self.api,
            status,
        )

    def _refuse(self, record: TestRecord, session: SharedSession) -> None:
        """A session already attached in this run to another flow: HeadSpin keeps a session
        in one flow, so this test's data stays here, refused."""
        why = (
            f"{record.nodeid} attached the HeadSpin session {record.session_id} to the flow "
            f"{record.flow!r}, but this run attached it to the flow {session.flow!r} before: a "
            "session belongs to one flow; this test's data is kept locally only"
        )
        upload = self._upload(record, None)
        self._commit(record, upload, state=FAILED, error=why)
        record.destination = "local-only"
        self.refused.append(why)

    def finish(self, timeout: float, say: Callable[[str], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        self.sender.drain(timeout, waiting(self.sender, f"upload(s) to {self.url}", say))
        super().finish(deadline - time.monotonic(), say)

    def stop(self) -> None:
        self.sender.stop()
        super().stop()

    def close(self) -> None:
        self.sender.close()
        super().close()

    def notes(self) -> SinkNotes:
        stats = self.sender.stats
        shared = {
            sid: SessionShare(s.flow, s.tests, s.status)
            for sid, s in self.sessions.items()
            if s.tests > 1
        }
        notes = super().notes()
        notes.unroutable = self.unroutable
        notes.auth_error = stats.auth_error
        notes.unreachable = f"{self.url}: {stats.unreachable}" if stats.unreachable else None
        notes.send_errors = stats.errors + self.refused
        notes.shared_sessions = shared
        notes.legacy = self.api == "legacy"
        return notes
