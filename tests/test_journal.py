"""The journal in front of the store: exactly-once folding, crash leftovers, live journals."""

from __future__ import annotations

import json
import marshal
import pickle
from pathlib import Path

import pytest
from conftest import store_rows

from pytest_userflow.journal import (
    MAGIC,
    MAGIC_2,
    JournalWriter,
    decode,
    encode,
    fold_from,
    recover,
)
from pytest_userflow.measurement import Measurement, UserflowError
from pytest_userflow.store import EventRecord, Store


def event_op(n: int) -> dict:
    event = EventRecord(
        run_id="r",
        flow="F",
        nodeid=f"t::{n}",
        status="Passed",
        perf_event_id=f"e{n}",
        measurements=[Measurement("k", n, None, "ms")],
    )
    return {"op": "event", "event": event, "upload": None, "state": "pending"}


def test_a_dead_processs_journal_is_folded_once_from_where_it_stopped(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    records = [encode(event_op(n)) for n in range(3)]
    journal = tmp_path / "s.db.journal-999-dead"
    journal.write_bytes(MAGIC + b"".join(records) + encode(event_op(3))[:-5])  # torn last write
    # the first record was folded before the crash, in the same transaction as its offset
    store.apply([event_op(0)], journal=journal.name, offset=len(MAGIC) + len(records[0]))
    assert recover(store) == 2
    assert store_rows(store.path, "SELECT value FROM measurements ORDER BY value") == [
        (0,),
        (1,),
        (2,),
    ]
    assert not journal.exists()
    assert store_rows(store.path, "SELECT COUNT(*) FROM journals") == [(0,)]
    assert recover(store) == 0


def test_a_journal_of_the_first_format_json_lines_is_still_folded(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    lines = [
        json.dumps(
            {
                "op": "event",
                "event": {
                    "run": "r",
                    "flow": "F",
                    "node": f"t::{n}",
                    "status": "Passed",
                    "msg": None,
                    "desc": None,
                    "worker": None,
                    "device": None,
                    "session": None,
                    "ts": 1700000000.5,
                    "dur": 0.1,
                    "id": f"e{n}",
                    "m": [["k", n, None, "ms"]],
                },
                "upload": None,
                "state": "pending",
            }
        )
        + "\n"
        for n in range(3)
    ]
    journal = tmp_path / "s.db.journal-998-old"
    journal.write_text("".join(lines) + '{"op": "event", "event": {"trunc')  # torn last line
    assert recover(store) == 3
    assert store_rows(store.path, "SELECT nodeid, key_units, value FROM measurements") == [
        ("t::0", "ms", 0),
        ("t::1", "ms", 1),
        ("t::2", "ms", 2),
    ]
    assert not journal.exists()


def pickled(record: bytes, protocol: int) -> bytes:
    """*record* as the second format wrote it: its body pickled."""
    body = pickle.dumps(marshal.loads(record[4:]), protocol=protocol)
    return len(body).to_bytes(4, "little") + body


def test_a_journal_of_the_second_format_pickled_records_is_still_folded(tmp_path: Path) -> None:
    """Journals left by earlier versions hold pickled records (protocols 2 and 5)."""
    assert MAGIC_2 != MAGIC and len(MAGIC_2) == len(MAGIC)
    store = Store(tmp_path / "s.db")
    journal = tmp_path / "s.db.journal-996-old"
    torn = pickled(encode(event_op(2)), 5)[:-3]
    journal.write_bytes(
        MAGIC_2 + pickled(encode(event_op(0)), 2) + pickled(encode(event_op(1)), 5) + torn
    )
    assert recover(store) == 2
    assert store_rows(store.path, "SELECT nodeid, value FROM measurements ORDER BY value") == [
        ("t::0", 0),
        ("t::1", 1),
    ]


def test_a_pickled_record_holding_anything_but_plain_data_is_refused(tmp_path: Path) -> None:
    body = pickle.dumps(("event", Path("/etc/passwd"), None, "pending"))
    store = Store(tmp_path / "s.db")
    journal = tmp_path / "s.db.journal-997-bad"
    journal.write_bytes(MAGIC_2 + len(body).to_bytes(4, "little") + body)
    with pytest.raises(pickle.UnpicklingError, match="plain data, not pathlib"):
        fold_from(store, journal)
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(0,)]


def test_a_record_that_is_no_op_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds an op tuple, not dict"):
        decode(marshal.dumps({"op": "event"}))
    with pytest.raises(ValueError, match="unknown journal operation 'drop'"):
        decode(marshal.dumps(("drop", "e1")))
    store = Store(tmp_path / "s.db")
    journal = tmp_path / "s.db.journal-995-bad"
    body = b"\xff" * 8  # not marshal's
    journal.write_bytes(MAGIC + encode(event_op(0)) + len(body).to_bytes(4, "little") + body)
    with pytest.raises(ValueError):
        fold_from(store, journal)
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(0,)]  # nothing half-done


def test_only_plain_data_is_written(tmp_path: Path) -> None:
    class Label(str):
        pass

    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=None)
    head = ("r", Label("F"), "t::1", "Passed", None, None, None, None, None, 1.0, 0.1, "e1")
    with pytest.raises(UserflowError, match=r"other than plain data .*not their subclasses"):
        writer.write_event(head, [("k", 1, None, None)])
    op = event_op(1)
    op["event"].flow = Label("F")
    with pytest.raises(UserflowError, match="other than plain data"):
        writer.write(op)
    writer.write(event_op(2))  # what comes after is kept
    writer.close()
    assert store_rows(store.path, "SELECT nodeid FROM events") == [("t::2",)]


def test_a_live_processs_journal_is_left_to_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=None)  # no folder: folds when asked
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


def wait_for(predicate, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_folder_process_folds_the_journal_as_it_grows(tmp_path: Path) -> None:
    import threading

    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=0)
    assert writer._folder is not None and writer._folder.poll() is None

    def events() -> int:
        return store_rows(store.path, "SELECT COUNT(*) FROM events")[0][0]

    writer.write(event_op(1))
    assert wait_for(lambda: events() == 1)  # no flush asked: the folder follows the file
    assert store_rows(store.path, "SELECT name, folded FROM journals") == [
        (writer.path.name, writer.path.stat().st_size)
    ]
    others = [threading.Thread(target=writer.write, args=(event_op(n),)) for n in range(2, 8)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join()
    assert writer.flush()  # asked: everything written so far is in the store on return
    assert events() == 7
    folder = writer._folder
    writer.close()
    assert folder.poll() is not None  # stopped
    assert not writer.path.exists()
    assert store_rows(store.path, "SELECT COUNT(*) FROM journals") == [(0,)]


def test_the_last_flush_lets_the_folder_go_and_a_later_record_is_still_folded(
    tmp_path: Path,
) -> None:
    """The run's last flush (the summary's) lets the folder exit while the run ends; a record
    written after it (an upload's mark, say) is folded by the writer at close."""
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=0)
    folder = writer._folder
    assert folder is not None
    for n in range(3):
        writer.write(event_op(n))
    # A folder still starting when asked is not waited for (the writer folds): let it start.
    assert wait_for(lambda: store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)])
    assert writer.flush(aggregates=True, last=True)
    assert writer.aggregates is not None  # the folder folded the whole journal
    assert wait_for(lambda: folder.poll() is not None)  # it exits without being waited for
    writer.write(event_op(3))
    writer.close()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(4,)]
    assert not writer.path.exists()
    assert store_rows(store.path, "SELECT COUNT(*) FROM journals") == [(0,)]


def test_the_folder_loads_no_more_than_folding_needs() -> None:
    """The folder starts while tests run, on another core: what it loads costs them."""
    import subprocess
    import sys

    code = (
        "import sys; from pytest_userflow.journal import fold_forever; "
        "print(sorted(m for m in sys.modules if m.startswith('pytest_userflow')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pytest_userflow.journal" in loaded
    assert "pytest_userflow.budgets" not in loaded
    assert "pytest_userflow.client" not in loaded


def test_a_dead_folder_is_replaced_by_folding_here(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=0)
    assert writer._folder is not None
    writer._folder.kill()
    writer._folder.wait()
    for n in range(3):
        writer.write(event_op(n))
    assert writer.flush()
    assert writer._folder is None
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]
    writer.close()


def test_a_folder_that_cannot_start_leaves_the_folding_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import threading

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no processes left")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=0)
    assert writer._folder is None
    assert writer._folder_ended.wait(5)  # the reader saw its pipe end, and ends
    readers = [t for t in threading.enumerate() if t.name == "userflow-folder-reader"]
    for reader in readers:
        reader.join(5)
        assert not reader.is_alive()
    for n in range(3):
        writer.write(event_op(n))
    assert writer.flush()
    writer.close()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]


def test_a_short_run_starts_no_folder_and_a_long_one_starts_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=3)
    writer.write(event_op(1))
    writer.write(event_op(2))
    assert writer._folder is None
    assert writer.flush()  # folded here
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(2,)]
    writer.write(event_op(3))
    assert writer._folder is not None  # the third record since the journal was opened
    folder = writer._folder
    writer.close()
    assert folder.poll() is not None
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]


def test_a_folder_still_starting_at_the_end_is_stopped_and_the_writer_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from pytest_userflow import journal

    monkeypatch.setattr(journal, "_FOLDER", "import time; time.sleep(60)")  # never ready
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=1)
    writer.write(event_op(1))
    folder = writer._folder
    assert folder is not None
    start = time.monotonic()
    assert writer.flush()
    assert time.monotonic() - start < 10  # not the flush timeout: nobody waited for it
    assert folder.poll() is not None and writer._folder is None
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(1,)]
    writer.close()


def test_without_a_folder_the_writer_folds_every_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, batch=3, folder_after=None)
    writer.write(event_op(1))
    writer.write(event_op(2))
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(0,)]
    writer.write(event_op(3))  # completes a batch: one transaction, here
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]
    writer.close()
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(3,)]


def dump_store(path: Path) -> dict[str, list]:
    """Every row of the tables a fold writes, without the ids and times made at the fold."""
    return {
        "events": store_rows(
            path,
            "SELECT perf_event_id, run_id, user_flow_name, nodeid, worker, device_address,"
            " session_id, status, status_message, event_ts, event_time, duration FROM events"
            " ORDER BY rowid",
        ),
        "measurements": store_rows(
            path,
            "SELECT perf_event_id, run_id, user_flow_name, event_time, event_ts, session_id,"
            " status, key_name, key_type, key_units, value, typeof(value), nodeid, worker,"
            " device_address FROM measurements ORDER BY id",
        ),
        "uploads": store_rows(
            path,
            "SELECT perf_event_id, run_id, state, base_url, api, json(plan), progress, attempts,"
            " last_error, remote_event_id FROM uploads ORDER BY rowid",
        ),
        "flows": store_rows(path, "SELECT name, description FROM flows ORDER BY name"),
    }


def test_ops_fold_from_the_journal_exactly_as_applied_from_memory(tmp_path: Path) -> None:
    """Every field of every kind of op survives the journal: folding the file leaves the
    same rows as applying the ops directly."""
    ops: list[dict] = []
    for n in range(6):
        event = EventRecord(
            run_id="r",
            flow=["Login", "Caf\u00e9 \U0001f600"][n % 2],
            nodeid=f"t.py::test[{n}]",
            status=["Passed", "Failed", "Excluded"][n % 3],
            status_message=None if n % 3 == 0 else f'line "{n}"\nnext',
            description="the flow" if n == 1 else None,
            worker="gw1" if n % 2 else None,
            device_address="emulator-5554@host" if n == 4 else None,
            session_id="5b4a2b3e-0000-4000-8000-000000000001" if n == 3 else None,
            event_ts=1700000000.9999 + n,
            duration=0.25 * n,
            perf_event_id=f"e{n}",
            measurements=[
                Measurement("Login Time", 1.5 + n, None, "seconds"),
                Measurement("Frames", 60 + n, "Custom Metrics", None),
                Measurement("Build", f"v{n}", None, None),
                Measurement("Big", 2**53 + n, None, "bytes"),
            ][: n % 5],
        )
        upload = None if n % 2 else [[{"op": "create_user_flow", "args": {"name": "F"}}], "u", "v0"]
        ops.append({"op": "event", "event": event, "upload": upload, "state": "pending"})
    ops.insert(
        3,
        {
            "op": "mark",
            "id": "e0",
            "state": "sent",
            "error": None,
            "progress": {"a": 1},
            "remote": "x",
        },
    )
    ops.insert(5, {"op": "progress", "id": "e2", "progress": {"step": 2, "vars": {"x": "y"}}})
    ops.append(ops[0])  # an event folded twice counts once
    assert [decode(encode(op)[4:]) for op in ops] == ops
    from_memory = Store(tmp_path / "memory.db")
    from_memory.apply(ops)
    journal = tmp_path / "file.db.journal-1-x"
    journal.write_bytes(MAGIC + b"".join(encode(op) for op in ops))
    from_file = Store(tmp_path / "file.db")
    assert fold_from(from_file, journal) == (len(ops), journal.stat().st_size)
    assert fold_from(from_file, journal) == (0, journal.stat().st_size)  # nothing new
    assert dump_store(from_file.path) == dump_store(from_memory.path)
    assert len(dump_store(from_file.path)["measurements"]) == sum(n % 5 for n in range(6))


def test_run_aggregates_give_count_min_median_max_of_numbers_per_group(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    ops = []
    for n in range(7):
        event = EventRecord(
            run_id="r",
            flow=["Login", "Search"][n % 2],
            nodeid=f"t::{n}",
            status="Passed",
            device_address="d1" if n < 3 else None,
            perf_event_id=f"e{n}",
            measurements=[
                Measurement("Time", [5, 1.5, 9, 3, 7.25, 2, 8][n], None, "s"),
                Measurement("Build", f"v{n}" if n % 3 else 4 - n, None, None),
            ],
        )
        ops.append({"op": "event", "event": event, "upload": None})
    store.apply(ops)
    got = {
        (k["flow"], k["key"], k["device"]): (
            k["count"],
            k["numeric"],
            k["min"],
            k["median"],
            k["max"],
        )
        for k in store.run_aggregates("r")["keys"]
    }
    assert got[("Login", "Time", "d1")] == (2, 2, 5, 7, 9)
    assert got[("Search", "Time", "d1")] == (1, 1, 1.5, 1.5, 1.5)
    assert got[("Search", "Time", None)] == (2, 2, 2, 2.5, 3)
    assert got[("Login", "Time", None)] == (2, 2, 7.25, 7.625, 8)
    assert got[("Login", "Build", "d1")] == (2, 1, 4, 4, 4)  # 4 and "v2": only the number
    assert got[("Search", "Build", None)] == (2, 1, 1, 1, 1)  # 1 and "v5"
    assert got[("Search", "Build", "d1")] == (1, 0, None, None, None)  # "v1" alone


def varied_events(run: str = "r", worker: str | None = None) -> list[EventRecord]:
    """Events with every shape the aggregates meet: several flows, statuses, devices, types,
    units; ints, floats, big ints and text; odd and even counts; a test measuring nothing."""
    events = []
    for n in range(23):
        values: list[int | float | str] = [n * 1.25, -n, 2**53 + n, f"v{n}" if n % 4 else n]
        events.append(
            EventRecord(
                run_id=run,
                flow=["Login", "Caf\u00e9 \U0001f600", "Search"][n % 3],
                nodeid=f"t::{n}",
                status=["Passed", "Failed", "Excluded", "Passed"][n % 4],
                worker=worker,
                device_address=["d1@h", None][n % 2],
                perf_event_id=f"{run}-{worker}-{n}",
                measurements=[]
                if n == 5
                else [
                    Measurement("Time", values[0], None, ["s", "ms", None][n % 3]),
                    Measurement("Time", values[1], "Custom Metrics", None),
                    Measurement("Big", values[2], None, "bytes"),
                    Measurement("Build", values[3], None, None),
                ][: 1 + n % 4],
            )
        )
    return events


def test_a_tally_gives_exactly_the_stores_run_aggregates(tmp_path: Path) -> None:
    from pytest_userflow.tally import Tally

    store = Store(tmp_path / "s.db")
    mine = varied_events("r", "gw0")
    others = varied_events("r", "gw1") + varied_events("r2", "gw0")  # not this process's
    store.apply([{"op": "event", "event": e, "upload": None} for e in others])
    tally = Tally()
    for start in range(0, len(mine), 5):  # batch by batch, as the folder folds
        ops = [{"op": "event", "event": e, "upload": None} for e in mine[start : start + 5]]
        tally.add(store.apply(ops))
        tally.add(store.apply(ops))  # folded again: nothing is stored, nothing counted twice
    expected = store.run_aggregates("r", "gw0")
    assert len(expected["keys"]) > 20 and len(expected["flows"]) == 3
    assert tally.aggregates() == expected
    assert json.loads(json.dumps(tally.aggregates())) == expected  # as the folder sends them
    assert list(tally.aggregates()["flows"]) == list(expected["flows"])  # the same order


def test_a_tally_of_a_run_with_uploads_leaves_it_to_the_store() -> None:
    from pytest_userflow.tally import Tally

    tally = Tally()
    event = varied_events()[0]
    tally.add([(event, None)])
    assert tally.aggregates() is not None
    tally.add([(varied_events()[1], [[], "u", "v0"])])  # its place changes as it is sent
    assert tally.aggregates() is None


def test_the_folder_answers_with_the_aggregates_of_the_whole_journal(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=0)
    events = varied_events()
    for event in events:
        writer.write({"op": "event", "event": event, "upload": None, "state": "pending"})
    # A folder still starting when asked is not waited for (the writer folds): let it start.
    assert wait_for(lambda: store_rows(store.path, "SELECT COUNT(*) FROM events") == [(23,)])
    assert writer.flush(aggregates=True)
    assert writer.aggregates == store.run_aggregates("r", None)
    assert writer.flush() and writer.aggregates is None  # not asked
    writer.close()


def test_no_aggregates_when_the_writer_folded_part_of_the_journal(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = JournalWriter(store, folder_after=3)
    events = varied_events()
    writer.write({"op": "event", "event": events[0], "upload": None})
    assert writer.flush(aggregates=True) and writer.aggregates is None  # no folder yet
    for event in events[1:]:
        writer.write({"op": "event", "event": event, "upload": None})
    assert writer._folder is not None
    assert writer.flush(aggregates=True)
    assert writer.aggregates is None  # the folder did not see the first event
    writer.close()


def test_a_journal_that_cannot_be_folded_is_set_aside_not_retried_forever(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db")
    bad = event_op(1)
    bad["event"].measurements = [Measurement("bytes", 2**64)]  # past validation, by hand
    poisoned = tmp_path / "s.db.journal-1-poisoned"
    poisoned.write_bytes(MAGIC + encode(bad))
    fine = tmp_path / "s.db.journal-2-fine"
    fine.write_bytes(MAGIC + encode(event_op(2)))
    problems: list[str] = []
    assert recover(store, problems) == 1  # the other dead process's journal is folded
    aside = tmp_path / "s.db.unfoldable-1-poisoned"
    assert [p.name for p in tmp_path.glob("s.db.*-*")] == [aside.name]
    assert aside.read_bytes() == MAGIC + encode(bad)  # kept as it was
    assert problems == [
        "the journal s.db.journal-1-poisoned left by a process that ended early cannot be "
        "folded into the store (OverflowError: Python int too large to convert to SQLite "
        f"INTEGER); it is kept as {aside}"
    ]
    assert recover(store, problems) == 0 and len(problems) == 1  # and not tried again
    assert store_rows(store.path, "SELECT nodeid FROM events") == [("t::2",)]


def test_a_pickled_record_longer_than_its_body_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    body = pickled(encode(event_op(1)), 5)[4:] + b"junk"  # what a damaged length would claim
    journal = tmp_path / "s.db.journal-3-damaged"
    journal.write_bytes(MAGIC_2 + len(body).to_bytes(4, "little") + body)
    with pytest.raises(pickle.UnpicklingError, match="does not end where it says"):
        fold_from(store, journal)
    assert store_rows(store.path, "SELECT COUNT(*) FROM events") == [(0,)]
