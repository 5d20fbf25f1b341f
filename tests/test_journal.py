"""The journal in front of the store: exactly-once folding, crash leftovers, live journals."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import store_rows

from pytest_userflow.journal import JournalWriter, recover
from pytest_userflow.measurement import Measurement
from pytest_userflow.store import EventRecord, Store, event_to_json


def event_op(n: int) -> dict:
    event = EventRecord(
        run_id="r",
        flow="F",
        nodeid=f"t::{n}",
        status="Passed",
        perf_event_id=f"e{n}",
        measurements=[Measurement("k", n, None, "ms")],
    )
    return {"op": "event", "event": event_to_json(event), "upload": None, "state": "pending"}


def test_a_dead_processs_journal_is_folded_once_from_where_it_stopped(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    lines = [json.dumps(event_op(n)) + "\n" for n in range(3)]
    journal = tmp_path / "s.db.journal-999-dead"
    journal.write_text("".join(lines) + '{"op": "event", "event": {"trunc')  # torn last write
    # the first line was folded before the crash, in the same transaction as its offset
    store.apply([event_op(0)], journal=journal.name, offset=len(lines[0].encode()))
    assert recover(store) == 2
    assert store_rows(store.path, "SELECT value FROM measurements ORDER BY value") == [
        (0,),
        (1,),
        (2,),
    ]
    assert not journal.exists()
    assert store_rows(store.path, "SELECT COUNT(*) FROM journals") == [(0,)]
    assert recover(store) == 0


def test_a_live_processs_journal_is_left_to_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store.path, interval=60)  # folds only when asked
    writer.write(event_op(1))
    assert recover(store) == 0  # locked by its (live) writer
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(0,)]
    assert writer.flush()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(1,)]
    writer.write(event_op(2))
    writer.close()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(2,)]
    assert not writer.path.exists()


def test_marks_follow_their_event_and_refolding_is_harmless(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    op = event_op(1)
    op["upload"] = [[{"op": "create_user_flow", "args": {"name": "F"}}], "http://x", "v0"]
    mark = {
        "op": "mark",
        "id": "e1",
        "state": "sent",
        "error": None,
        "progress": None,
        "remote": "r1",
    }
    store.apply([op, mark])
    store.apply([op])  # the same event again changes nothing
    assert store_rows(store.path, "SELECT state, remote_event_id FROM uploads") == [("sent", "r1")]
    assert store_rows(store.path, "SELECT COUNT(*) FROM measurements") == [(1,)]


def test_the_owner_folds_every_batch_other_threads_only_append(tmp_path: Path) -> None:
    import threading

    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store.path, batch=3, interval=3600)
    writer.write(event_op(1))
    writer.write(event_op(2))
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(0,)]
    writer.write(event_op(3))  # the third op completes a batch: one transaction
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]
    others = [threading.Thread(target=writer.write, args=(event_op(n),)) for n in range(4, 8)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]  # not their job
    writer.close()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(7,)]
