"""The per-process journal in front of the SQLite store (no pytest import).

A SQLite commit costs 100-200 us here even in WAL mode; an append to a file costs under
10 us. So at each test's teardown its data is appended to this process's journal (one
``os.write``: it survives the process being killed), and a background thread folds the
journal into SQLite in batches, each batch one transaction that also records how far the
journal was folded. A journal left behind by a dead process is folded by the next
process that opens the store; a live process holds a lock on its journal, so nobody
else touches it.

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
            start = store.journal_offset(path.name)
            batch = list(_lines(path, start))
            if batch:
                store.fold([line for line, _ in batch], journal=path.name, offset=batch[-1][1])
                folded += len(batch)
            path.unlink()
            store.forget_journal(path.name)
        finally:
            os.close(fd)
    return folded


class JournalWriter:
    """This process's journal, folded into the store in batches by a background thread.

    ``write`` is what a test's teardown pays: one JSON line appended to a file. The fold
    thread takes the lines written since its last fold, every *batch* lines or *interval*
    seconds, and hands them to ``Store.fold``, where SQLite does the work without Python's
    GIL: the tests go on meanwhile on another core. Any thread may write.
    """

    def __init__(self, store_path: Path, *, batch: int = 100, interval: float = 0.5) -> None:
        self.store_path = store_path
        name = f"{store_path.name}.journal-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = store_path.parent / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _try_lock(self.fd)
        self.offset = 0
        self.batch = batch
        self.interval = interval
        self.error: BaseException | None = None
        self._encode = json.JSONEncoder(
            separators=(",", ":"), check_circular=False, default=_encode
        ).encode
        self._pending: list[bytes] = []  # lines written and not yet folded, in file order
        self._lock = threading.Lock()  # orders appends and keeps the queue in file order
        self._folding = threading.Lock()  # one fold at a time: the thread's or flush's
        self._wake = threading.Event()
        self._closed = False
        self._folded_offset = 0
        self._store: Store | None = None
        self._thread = threading.Thread(target=self._run, name="userflow-journal", daemon=True)
        self._thread.start()

    def write(self, op: dict[str, Any]) -> None:
        line = self._encode(op).encode()
        with self._lock:
            os.write(self.fd, line + b"\n")
            self.offset += len(line) + 1
            self._pending.append(line)
            if len(self._pending) >= self.batch:
                self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._closed:
                self._fold()

    def _fold(self) -> bool:
        """Fold what is queued; on failure keep it queued (it is in the journal anyway)."""
        with self._folding:
            with self._lock:
                taken, self._pending = self._pending, []
                end = self.offset  # just after the last line taken
            if not taken:
                return True
            try:
                if self._store is None:
                    self._store = Store(self.store_path)
                self._store.fold(taken, journal=self.path.name, offset=end)
            except Exception as exc:  # the store is busy or broken: retried at the next fold
                self.error = exc
                with self._lock:
                    self._pending[:0] = taken
                return False
            self.error = None
            self._folded_offset = end
            return True

    def flush(self) -> bool:
        """Fold everything written so far; True when it is all in the store."""
        return self._fold() and self._folded_offset >= self.offset

    def close(self) -> None:
        """Stop the thread, fold what is left, then remove the journal (it is all in the store).

        If folding failed, the journal stays, locked until this process ends, and the next
        process that opens the store folds it.
        """
        self._closed = True
        self._wake.set()
        self._thread.join()
        if self.flush():
            with contextlib.suppress(OSError):
                self.path.unlink()
            if self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.forget_journal(self.path.name)
        os.close(self.fd)
        if self._store is not None:
            self._store.close()
