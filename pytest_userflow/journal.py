"""The per-process journal in front of the SQLite store (no pytest import).

A SQLite commit costs 100-200 us here even in WAL mode; an append to a file costs under
10 us. So at each test's teardown its data is appended to this process's journal (one
``os.write``: it survives the process being killed), and a helper process, the folder,
folds the journal into SQLite as it grows, each batch one transaction that also records
how far the journal was folded. A process of its own, not a thread: the fold shares no
interpreter lock with the tests. Where the folder cannot run, the writing process folds
every *batch* lines itself. A journal left behind by a dead process is folded by the next
process that opens the store; a live process holds a lock on its journal, so nobody else
touches it.

A journal is the line ``MAGIC`` then one record per op: the length of its body (4 bytes,
little-endian) and the body, the op as plain data (tuples, lists, dicts, str, numbers, None)
in ``marshal``'s format, version 4: the quickest of the standard library's encoders to write
inside a test run (about 4 us a record there, where pickle took 6, and loading pickle another
2 ms a run), and loading it looks up no class and runs no code. A record cut short by a
crash is an op that never happened; a record that does not load stops the fold there (the
journal is set aside as unfoldable, see ``recover``). The ops, as tuples:

- ``("event", event, upload, state)``: *event* as ``_event_tuple`` lays it out (its
  measurements may repeat a key and type: the last one counts), *upload*
  ``[plan, base_url, api]`` or None;
- ``("mark", perf_event_id, state, error, progress, remote)``;
- ``("progress", perf_event_id, progress)``.

Journals written by earlier versions are still folded: ``MAGIC_2`` (the same records,
pickled) and, before it, JSON objects one a line, no magic line.
"""

from __future__ import annotations

import contextlib
import io
import json
import marshal
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .measurement import Measurement, Row, UserflowError, dedupe
from .store import PENDING, EventRecord, Store
from .tally import Tally

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True


MAGIC = b"pytest-userflow journal 3\n"
MAGIC_2 = b"pytest-userflow journal 2\n"  # records pickled: read, no longer written
_LENGTH = 4  # bytes of a record's length


def _event_tuple(e: EventRecord) -> tuple[Any, ...]:
    return (
        e.run_id,
        e.flow,
        e.nodeid,
        e.status,
        e.status_message,
        e.description,
        e.worker,
        e.device_address,
        e.session_id,
        e.event_ts,
        e.duration,
        e.perf_event_id,
        [tuple(m) for m in e.measurements],  # plain tuples: loading makes no classes
    )


def _event_from_tuple(t: tuple[Any, ...] | list[Any]) -> EventRecord:
    # A quick write keeps duplicates: the last value of each key and type is the one kept
    return EventRecord.from_head(t[:12], dedupe(list(map(Measurement._make, t[12]))))


def encode(op: dict[str, Any]) -> bytes:
    """One journal record: *op* (as the sinks write it) as a length and a marshalled tuple."""
    kind = op["op"]
    if kind == "event":
        body: tuple[Any, ...] = (
            kind,
            _event_tuple(op["event"]),
            op.get("upload"),
            op.get("state", PENDING),
        )
    elif kind == "mark":
        body = (
            kind,
            op["id"],
            op["state"],
            op.get("error"),
            op.get("progress"),
            op.get("remote"),
        )
    elif kind == "progress":
        body = (kind, op["id"], op["progress"])
    else:
        raise ValueError(f"unknown journal operation {kind!r}")
    try:
        data = marshal.dumps(body, 4)
    except ValueError as exc:
        raise _unwritable(exc) from None
    return len(data).to_bytes(_LENGTH, "little") + data


def _unwritable(exc: ValueError) -> UserflowError:
    """marshal met an object other than plain data."""
    return UserflowError(
        f"it holds an object other than plain data ({exc}): a journal record takes str, int, "
        "float, None, and tuples, lists and dicts of them, not their subclasses"
    )


def decode(data: bytes) -> dict[str, Any]:
    """A record's body back into the op ``Store.apply`` takes."""
    return _op(marshal.loads(data))


def _op(body: Any) -> dict[str, Any]:
    if not isinstance(body, tuple) or not body:
        raise ValueError(f"a journal record holds an op tuple, not {type(body).__name__}")
    kind = body[0]
    if kind == "event":
        _, event, upload, state = body
        return {"op": kind, "event": _event_from_tuple(event), "upload": upload, "state": state}
    if kind == "mark":
        _, event_id, state, error, progress, remote = body
        return {
            "op": kind,
            "id": event_id,
            "state": state,
            "error": error,
            "progress": progress,
            "remote": remote,
        }
    if kind == "progress":
        return {"op": kind, "id": body[1], "progress": body[2]}
    raise ValueError(f"unknown journal operation {kind!r}")


def journal_glob(store_path: Path) -> str:
    return f"{store_path.name}.journal-*"


def read_ops(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete ops after *offset*, and the offset after the last of them."""
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC and magic != MAGIC_2:
            return _json_ops(f, offset)
        offset = max(offset, len(MAGIC))
        f.seek(offset)
        data = f.read()
    if magic == MAGIC_2:
        return _pickled_ops(path, data, offset)
    ops, at = [], 0
    view = memoryview(data)
    while at + _LENGTH <= len(data):
        end = at + _LENGTH + int.from_bytes(view[at : at + _LENGTH], "little")
        if end > len(data):
            break  # the write was cut short by a crash: that op never happened
        ops.append(_op(marshal.loads(view[at + _LENGTH : end])))
        at = end
    return ops, offset + at


def _pickled_ops(path: Path, data: bytes, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The ops of a journal of the second format: the same records, pickled."""
    import pickle  # only for journals an earlier version left behind

    class PlainData(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise pickle.UnpicklingError(f"a journal record holds plain data, not {module}.{name}")

    ops, at = [], 0
    stream = io.BytesIO(data)
    while at + _LENGTH <= len(data):
        end = at + _LENGTH + int.from_bytes(data[at : at + _LENGTH], "little")
        if end > len(data):
            break  # the write was cut short by a crash: that op never happened
        stream.seek(at + _LENGTH)
        # An unpickler a record: one for several would number protocol 4's memo on from the
        # previous record's, however cleared.
        ops.append(_op(PlainData(stream).load()))
        if stream.tell() != end:
            raise pickle.UnpicklingError(f"a record of {path} does not end where it says")
        at = end
    return ops, offset + at


def _json_ops(f: io.BufferedReader, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A journal of the first format: one JSON object a line."""
    f.seek(offset)
    ops = []
    for raw in f:
        if not raw.endswith(b"\n"):
            break  # the write was cut short by a crash: that op never happened
        offset += len(raw)
        op = json.loads(raw)
        if op["op"] == "event":
            op["event"] = _event_from_json(op["event"])
        ops.append(op)
    return ops, offset


def _event_from_json(data: dict[str, Any]) -> EventRecord:
    return _event_from_tuple(
        [
            data[name]
            for name in (
                "run",
                "flow",
                "node",
                "status",
                "msg",
                "desc",
                "worker",
                "device",
                "session",
                "ts",
                "dur",
                "id",
                "m",
            )
        ]
    )


def fold_from(store: Store, path: Path, tally: Tally | None = None) -> tuple[int, int]:
    """Fold *path*'s complete ops after the offset the store has for it; (ops, offset).

    The events stored are added to *tally*.
    """
    ops, offset = read_ops(path, store.journal_offset(path.name))
    if ops:
        stored = store.apply(ops, journal=path.name, offset=offset)
        if tally is not None:
            tally.add(stored)
    return len(ops), offset


def recover(store: Store, problems: list[str] | None = None) -> int:
    """Fold every journal left by a dead process into *store*; return how many ops.

    A journal that cannot be folded for what it holds (not for a busy or full disk) would
    stop every later run at this point: it is renamed ``*.unfoldable-*`` beside the store,
    kept as it is, and described in *problems*.
    """
    folded = 0
    for path in sorted(store.path.parent.glob(journal_glob(store.path))):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile by its owner or another recoverer
        try:
            if not _try_lock(fd):
                continue  # its process is alive and folds it itself
            try:
                folded += fold_from(store, path)[0]
            except (OSError, sqlite3.OperationalError):
                raise  # the store or the disk: the journal waits for the next try
            except Exception as exc:
                aside = path.with_name(path.name.replace(".journal-", ".unfoldable-", 1))
                path.rename(aside)
                if problems is not None:
                    problems.append(
                        f"the journal {path.name} left by a process that ended early cannot be "
                        f"folded into the store ({type(exc).__name__}: {exc}); it is kept as "
                        f"{aside}"
                    )
            else:
                path.unlink()
            store.forget_journal(path.name)
        finally:
            os.close(fd)
    return folded


#: The folder folds once this much is unfolded, or once the oldest unfolded record waited
#: FOLD_AFTER seconds: batches of ~80 tests. What is unfolded when the run ends is what the
#: run waits for (about 50 us a test, 4-11 ms here), but folding more often costs more: the
#: folder's work, on another core, slows the tests' process (measured on 2 cores: batches of
#: ~20 tests made the tests' process use some 70 ms more CPU over 2,000 tests, and the run
#: 3-7% longer, for 4 ms less waiting at the end).
FOLD_BYTES = 32 * 1024
FOLD_AFTER = 0.1


def fold_forever(journal: str, store_path: str, interval: float = 0.01) -> None:
    """The folder: fold *journal* into the store as it grows, until standard input ends.

    A line on standard input asks for everything written so far (the writer wrote it before
    asking); the answer, on standard output, is one JSON line: how far the journal is folded,
    and the last error. The first such line comes unasked, when the folder is ready. A line
    ``aggregates`` also asks for the aggregates of what it folded (``Tally``), null unless
    it folded the journal from its start.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tests' to handle
    asks: queue.Queue[bytes | None] = queue.Queue()

    def read_asks() -> None:
        for line in sys.stdin.buffer:
            asks.put(line.strip())
        asks.put(None)  # the writer closed its end, or died

    threading.Thread(target=read_asks, daemon=True).start()
    path = Path(journal)
    store = Store(store_path)
    # Checkpoint the WAL often, here and in the background: the tests' process closes the
    # store last, and would otherwise copy up to 4 MB of WAL into it on its way out (5-8 ms).
    store.checkpoint_every(100)
    folded, error = store.journal_offset(path.name), ""
    tally = Tally() if folded == 0 else None  # it sees the journal from its start
    print(json.dumps({"folded": folded, "error": error}), flush=True)
    waiting_since: float | None = None  # when unfolded records were first seen
    while True:
        try:
            ask: bytes | None = asks.get(timeout=interval)
        except queue.Empty:
            ask = b""  # nobody asked: fold what has come meanwhile, when it is time
        try:
            unfolded = os.stat(path).st_size - folded
            now = time.monotonic()
            if unfolded > 0 and waiting_since is None:
                waiting_since = now
            if (
                ask != b""
                or unfolded >= FOLD_BYTES
                or (waiting_since is not None and now - waiting_since >= FOLD_AFTER)
            ):
                waiting_since = None
                folded, error = fold_from(store, path, tally)[1], ""
        except Exception as exc:  # busy or broken: tried again after FOLD_AFTER
            error = f"{type(exc).__name__}: {exc}"
        if ask is None:
            store.close()
            return
        if ask:
            answer: dict[str, Any] = {"folded": folded, "error": error}
            if ask == b"aggregates":
                answer["aggregates"] = tally.aggregates() if tally is not None else None
            print(json.dumps(answer), flush=True)


# The folder's command line: the package is found where this process found it. Once the
# folder is done, the interpreter's own teardown is skipped: the writer waits for the exit.
_FOLDER = (
    "import os, sys; sys.path.insert(0, sys.argv[1]); "
    "from pytest_userflow.journal import fold_forever; fold_forever(sys.argv[2], sys.argv[3]); "
    "os._exit(0)"
)


class JournalWriter:
    """This process's journal, folded into *store* by the folder process.

    ``write`` is what a test's teardown pays: one record appended to a file. Any thread
    may write. The folder is started once *folder_after* records are written (a short run
    never pays for one; None: never). Without a folder (not yet, or it could not start or
    died), the thread that created the journal folds every *batch* records itself, and
    ``flush`` folds what is left.
    """

    def __init__(self, store: Store, *, batch: int = 500, folder_after: int | None = 200) -> None:
        self.store = store
        name = f"{store.path.name}.journal-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = store.path.parent / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _try_lock(self.fd)
        os.write(self.fd, MAGIC)
        self.offset = len(MAGIC)
        self.batch = batch
        self.error: str | None = None
        self._lock = threading.Lock()  # one append at a time, offsets in file order
        self._owner = threading.get_ident()
        self.written = 0  # records
        self._unfolded = 0  # records written since the last fold here
        self._folder_after = folder_after
        self._folder: subprocess.Popen[bytes] | None = None
        self._answers: queue.Queue[bytes] = queue.Queue()  # the folder's lines
        self._folder_ended = threading.Event()  # its output ended: it exited
        self._ready = False  # the folder said it is ready
        self._folded_here = False  # this process folded some of the journal itself
        self._leaving = False  # the folder was let go (see flush)
        self.aggregates: dict[str, Any] | None = None  # see flush
        if folder_after == 0:
            self._start_folder()

    def write(self, op: dict[str, Any]) -> None:
        self._append(encode(op))

    def write_event(self, head: tuple[Any, ...], measurements: list[Row]) -> None:
        """A finished test, the quick way: no EventRecord and no op are made for it.

        *head* is the first twelve fields of ``_event_tuple``; *measurements* are the rows as
        recorded (plain tuples, written as they are), duplicates and all: folding keeps the
        last value of each key and type.
        """
        try:
            data = marshal.dumps(("event", (*head, measurements), None, PENDING), 4)
        except ValueError as exc:
            raise _unwritable(exc) from None
        self._append(len(data).to_bytes(_LENGTH, "little") + data)

    def _append(self, record: bytes) -> None:
        with self._lock:
            os.write(self.fd, record)
            self.offset += len(record)
            self._unfolded += 1
            self.written += 1
            unfolded, written = self._unfolded, self.written
        if self._folder is not None or threading.get_ident() != self._owner:
            return
        if self._folder_after is not None and written >= self._folder_after:
            self._start_folder()
        elif unfolded >= self.batch:
            self._fold_here()

    def _start_folder(self) -> None:
        """Start the folder (once: where it cannot run, this process folds)."""
        self._folder_after = None
        package_parent = str(Path(__file__).resolve().parent.parent)
        read_end, write_end = os.pipe()  # the folder's standard output
        answers, ended = self._answers, self._folder_ended

        def read() -> None:
            with open(read_end, "rb") as stdout:
                for line in stdout:
                    answers.put(line)
            answers.put(b"")  # it ended (or never started)
            ended.set()

        # The reader first, while the other core is free: started once the folder was, it
        # waited 1.5-3 ms (of the tests' time) for a core that the folder's start was taking.
        threading.Thread(target=read, name="userflow-folder-reader", daemon=True).start()
        try:
            folder = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _FOLDER,
                    package_parent,
                    str(self.path),
                    str(self.store.path),
                ],
                stdin=subprocess.PIPE,
                stdout=write_end,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            return
        finally:
            os.close(write_end)  # the folder's copy is its own: its exit ends the reader
        self._folder = folder

    def _fold_here(self) -> bool:
        """Fold from the journal what the store does not have yet, in this process."""
        self._unfolded = 0
        try:
            ops, folded = fold_from(self.store, self.path)
        except Exception as exc:  # busy or broken: the journal keeps it
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self._folded_here = self._folded_here or ops > 0
        self.error = None
        return folded >= self.offset

    def _answer(self, timeout: float | None) -> dict[str, Any] | None:
        """The folder's next line (None: none in time, or it ended)."""
        try:
            line = self._answers.get(timeout=timeout) if timeout else self._answers.get_nowait()
            answer = json.loads(line or b"null")
        except (queue.Empty, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    def _ask_folder(self, timeout: float, aggregates: bool) -> bool:
        folder = self._folder
        assert folder is not None and folder.stdin is not None
        if not self._ready:  # still starting: this process is quicker at folding the rest
            if self._answer(None) is None:
                return False
            self._ready = True
        try:
            folder.stdin.write(b"aggregates\n" if aggregates else b"flush\n")
            folder.stdin.flush()
        except OSError:
            return False  # it died
        answer = self._answer(timeout)
        if answer is None:
            return False
        if not self._folded_here:  # else the folder's are not the whole journal's
            self.aggregates = answer.get("aggregates")
        self.error = answer.get("error") or None
        return int(answer.get("folded", 0)) >= self.offset

    def _stop_folder(self) -> None:
        folder, self._folder = self._folder, None
        if folder is None:
            return
        if not self._ready:
            folder.kill()  # it has folded nothing yet, or nothing that is not committed
        with contextlib.suppress(OSError):
            assert folder.stdin is not None
            folder.stdin.close()
        # Its output ends when it exits: waiting for that wakes at once, where Popen.wait
        # with a timeout polls (and costs a run up to a few milliseconds more).
        if not self._folder_ended.wait(5):
            folder.kill()
        folder.wait()

    def flush(self, timeout: float = 60.0, *, aggregates: bool = False, last: bool = False) -> bool:
        """Fold everything written so far; True when it is all in the store.

        The folder is asked first; if it is not ready yet, or does not answer in *timeout*
        seconds, it is stopped and this process folds what is left itself. With
        *aggregates*, ``self.aggregates`` is then the journal's ``Tally.aggregates()``
        when the folder folded all of it, else None (the store has them). *last*: once it
        has answered, the folder is let go: it exits while the summary is written, and
        ``close`` only reaps it; what is written after is folded here.
        """
        self.aggregates = None
        folder = self._folder
        if folder is not None and not self._leaving and self._ask_folder(timeout, aggregates):
            if last:
                self._leaving = True
                with contextlib.suppress(OSError):
                    assert folder.stdin is not None
                    folder.stdin.close()  # it folds nothing more, and exits
            return True
        self._stop_folder()
        return self._fold_here()

    def close(self) -> None:
        """Fold what is left, stop the folder, then remove the journal (it is all in the store).

        If folding failed, the journal stays, locked until this process ends, and the next
        process that opens the store folds it.
        """
        done = self.flush()
        self._stop_folder()
        if done:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(Exception):
                self.store.forget_journal(self.path.name)
        os.close(self.fd)
