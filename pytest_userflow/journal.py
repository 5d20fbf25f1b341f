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

Journal lines are JSON objects, one per line:

- ``{"op": "event", "event": {...}, "upload": [plan, base_url, api] | null, "state": ...}``
- ``{"op": "mark", "id": perf_event_id, "state": ..., "error": ..., "progress": ...,
  "remote": ...}``
- ``{"op": "progress", "id": perf_event_id, "progress": {...}}``
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .store import EventRecord, Store, event_to_json

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


def _encode(obj: object) -> object:
    """Ops keep objects in memory (the fold needs no parsing); the file gets JSON."""
    if isinstance(obj, EventRecord):
        return event_to_json(obj)
    return str(obj)


def journal_glob(store_path: Path) -> str:
    return f"{store_path.name}.journal-*"


def _lines(path: Path, offset: int) -> Iterator[tuple[bytes, int]]:
    """Complete lines from *offset* (without their newline), each with the offset after it."""
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # the write was cut short by a crash: that op never happened
            offset += len(raw)
            yield raw[:-1], offset


def fold_from(store: Store, path: Path) -> tuple[int, int]:
    """Fold *path*'s complete lines after the offset the store has for it; (ops, offset)."""
    start = store.journal_offset(path.name)
    batch = list(_lines(path, start))
    if not batch:
        return 0, start
    store.fold([line for line, _ in batch], journal=path.name, offset=batch[-1][1])
    return len(batch), batch[-1][1]


def recover(store: Store) -> int:
    """Fold every journal left by a dead process into *store*; return how many ops."""
    folded = 0
    for path in sorted(store.path.parent.glob(journal_glob(store.path))):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile by its owner or another recoverer
        try:
            if not _try_lock(fd):
                continue  # its process is alive and folds it itself
            folded += fold_from(store, path)[0]
            path.unlink()
            store.forget_journal(path.name)
        finally:
            os.close(fd)
    return folded


def fold_forever(journal: str, store_path: str, interval: float = 0.1) -> None:
    """The folder: fold *journal* into the store as it grows, until standard input ends.

    A line on standard input asks for everything written so far (the writer wrote it before
    asking); the answer, on standard output, is one JSON line: how far the journal is folded,
    and the last error.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tests' to handle
    asks: queue.Queue[bool] = queue.Queue()

    def read_asks() -> None:
        for _ in sys.stdin:
            asks.put(True)
        asks.put(False)  # the writer closed its end, or died

    threading.Thread(target=read_asks, daemon=True).start()
    path = Path(journal)
    store = Store(store_path)
    folded, error = store.journal_offset(path.name), ""
    while True:
        try:
            ask: bool | None = asks.get(timeout=interval)
        except queue.Empty:
            ask = None  # nobody asked: fold what has come meanwhile
        try:
            folded, error = fold_from(store, path)[1], ""
        except Exception as exc:  # busy or broken: tried again at the next turn
            error = f"{type(exc).__name__}: {exc}"
        if ask is False:
            return
        if ask:
            print(json.dumps({"folded": folded, "error": error}), flush=True)


# The folder's command line: the package is found where this process found it.
_FOLDER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from pytest_userflow.journal import fold_forever; fold_forever(sys.argv[2], sys.argv[3])"
)


class JournalWriter:
    """This process's journal, folded into *store* by the folder process.

    ``write`` is what a test's teardown pays: one JSON line appended to a file. Any thread
    may write. Without a folder (*spawn* false, or it could not start or died), the
    writing thread that created the journal folds every *batch* lines itself.
    """

    def __init__(self, store: Store, *, batch: int = 500, spawn: bool = True) -> None:
        self.store = store
        name = f"{store.path.name}.journal-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = store.path.parent / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _try_lock(self.fd)
        self.offset = 0
        self.batch = batch
        self.error: str | None = None
        self._encode = json.JSONEncoder(
            separators=(",", ":"), check_circular=False, default=_encode
        ).encode
        self._lock = threading.Lock()  # one append at a time, offsets in file order
        self._owner = threading.get_ident()
        self._unfolded = 0  # lines written since the last fold here (no folder)
        self._folder: subprocess.Popen[bytes] | None = None
        if spawn:
            package_parent = str(Path(__file__).resolve().parent.parent)
            with contextlib.suppress(OSError):
                self._folder = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _FOLDER,
                        package_parent,
                        str(self.path),
                        str(store.path),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )

    def write(self, op: dict[str, Any]) -> None:
        line = self._encode(op).encode() + b"\n"
        with self._lock:
            os.write(self.fd, line)
            self.offset += len(line)
            self._unfolded += 1
            due = self._folder is None and self._unfolded >= self.batch
        if due and threading.get_ident() == self._owner:
            self._fold_here()

    def _fold_here(self) -> bool:
        """Fold from the journal what the store does not have yet, in this process."""
        self._unfolded = 0
        try:
            folded = fold_from(self.store, self.path)[1]
        except Exception as exc:  # busy or broken: the journal keeps it
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self.error = None
        return folded >= self.offset

    def _ask_folder(self, timeout: float) -> bool:
        folder = self._folder
        assert folder is not None and folder.stdin is not None and folder.stdout is not None
        answers: queue.Queue[bytes] = queue.Queue()
        try:
            folder.stdin.write(b"flush\n")
            folder.stdin.flush()
        except OSError:
            return False  # it died
        stdout = folder.stdout
        threading.Thread(target=lambda: answers.put(stdout.readline()), daemon=True).start()
        try:
            answer = json.loads(answers.get(timeout=timeout) or b"null")
        except (queue.Empty, ValueError):
            return False
        if not isinstance(answer, dict):
            return False
        self.error = answer.get("error") or None
        return int(answer.get("folded", 0)) >= self.offset

    def _stop_folder(self) -> None:
        folder, self._folder = self._folder, None
        if folder is None:
            return
        with contextlib.suppress(OSError):
            assert folder.stdin is not None
            folder.stdin.close()
        try:
            folder.wait(5)
        except subprocess.TimeoutExpired:
            folder.kill()
            folder.wait()
        if folder.stdout is not None:
            folder.stdout.close()

    def flush(self, timeout: float = 60.0) -> bool:
        """Fold everything written so far; True when it is all in the store.

        The folder is asked first; if it does not answer in *timeout* seconds, it is stopped
        and this process folds what is left itself.
        """
        if self._folder is not None:
            if self._ask_folder(timeout):
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
