"""``pytest-userflow changes`` and the run's own line about a change, on a history that real
pytest runs build in the local store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

SUITE = """
import os, pytest

@pytest.mark.userflow("Login")
def test_login(record_measurement):
    i = int(os.environ["RUN"])
    noise = [0, 2, -1, 3, -2, 1, -3, 2, 0, -1, 1, -2][i % 12]
    record_measurement("Login Time", float(os.environ["LOGIN"]) + noise, units="ms")
    record_measurement("FPS", 60.0 + noise, units="fps")
"""


def build(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, values: list[int], *args: str
) -> pytest.RunResult:
    pytester.makepyfile(SUITE)
    result = None
    for i, login in enumerate(values):
        monkeypatch.setenv("RUN", str(i))
        monkeypatch.setenv("LOGIN", str(login))
        result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result is not None
    return result


def test_changes_names_the_run_where_a_slowdown_began(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    build(pytester, monkeypatch, [100] * 10 + [130] * 6)
    runs = [
        r["run_id"]
        for r in json.loads(run_cli(store_path, "runs", "--format", "json").stdout)["runs"]
    ][::-1]
    out = run_cli(store_path, "changes", "--format", "json")
    assert out.returncode == 0, out.stderr
    changes = json.loads(out.stdout)["changes"]
    assert [(c["flow"], c["key"], c["run_id"], c["direction"]) for c in changes] == [
        ("Login", "Login Time", runs[10], "worse")
    ]
    (change,) = changes
    assert change["before"] == pytest.approx(100, abs=2)
    assert change["after"] == pytest.approx(130, abs=2)
    assert change["change_pct"] == pytest.approx(30, abs=3)
    assert change["units"] == "ms" and change["runs_ago"] == 5
    # FPS did not move: no change there, whichever way is better
    table = run_cli(store_path, "changes", "--higher-is-better", "FPS").stdout
    assert "1 change(s) in 2 series" in table and runs[10] in table
    markdown = run_cli(store_path, "changes", "--format", "markdown").stdout.splitlines()
    assert markdown[:2] == ["1 change(s) in 2 series; 0 worse in the last 5 run(s)", ""]
    assert markdown[2].startswith("| flow | key | type | test | device | run\\_id |")
    row = markdown[4]
    assert row.startswith("| Login | Login Time | - | test\\_changes\\_names") and runs[10] in row
    # a nightly job: worse within the last 6 runs fails, within the last 3 does not
    failing = run_cli(store_path, "changes", "--fail-on", "worse", "--recent", "6")
    assert failing.returncode == 1
    assert "Login/Login Time +" in failing.stderr and runs[10] in failing.stderr
    assert run_cli(store_path, "changes", "--fail-on", "worse", "--recent", "3").returncode == 0
    # higher is better: the same rise is better, never a failure
    better = json.loads(
        run_cli(
            store_path, "changes", "--higher-is-better", "Login Time", "--format", "json"
        ).stdout
    )["changes"]
    assert [c["direction"] for c in better] == ["better"]
    # the same history gives the same answer, every time
    assert run_cli(store_path, "changes", "--format", "json").stdout == out.stdout


def test_no_change_in_a_steady_history(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    build(pytester, monkeypatch, [100] * 16)
    out = run_cli(store_path, "changes", "--fail-on", "worse")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 change(s) in 2 series")
    assert run_cli(store_path, "changes", "--key", "Nope").stdout.startswith("0 change(s) in 0")


def test_the_run_that_confirms_a_worse_change_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    build(pytester, monkeypatch, [100] * 10 + [130] * 3)
    monkeypatch.setenv("RUN", "13")
    result = pytester.runpytest("-p", "no:cacheprovider", "--userflow-baseline", "local")
    runs = [
        r["run_id"]
        for r in json.loads(run_cli(store_path, "runs", "--format", "json").stdout)["runs"]
    ][::-1]
    result.stdout.fnmatch_lines(
        [
            f"worse change confirmed: Login/Login Time (test_the_run_that_confirms_a_worse_change_says_so.py::test_login) +3*% (median 10* -> 13* ms) since run {runs[10]}, 3 run(s) ago; see pytest-userflow changes --flow Login"
        ]
    )
    # FPS did not change; without the local baseline the line is not looked for
    assert "worse change confirmed: Login/FPS" not in result.stdout.str()
    monkeypatch.setenv("RUN", "14")
    assert "worse change" not in pytester.runpytest("-p", "no:cacheprovider").stdout.str()


def test_a_change_of_the_newest_run_is_suspected_until_confirmed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    build(pytester, monkeypatch, [100] * 10 + [130])
    out = run_cli(store_path, "changes", "--format", "json")
    (change,) = json.loads(out.stdout)["changes"]
    assert (change["key"], change["direction"], change["state"]) == (
        "Login Time",
        "worse",
        "suspected",
    )
    assert change["runs_ago"] == 0 and change["p_value"] is None
    # listed and marked, never a failure
    failing = run_cli(store_path, "changes", "--fail-on", "worse")
    assert failing.returncode == 0, failing.stderr
    assert failing.stdout.splitlines()[0] == (
        "1 change(s) in 2 series; 0 worse in the last 5 run(s), 1 suspected in the newest runs"
    )
    assert " suspected " in failing.stdout.splitlines()[2]
    build(pytester, monkeypatch, [130, 130])
    failing = run_cli(store_path, "changes", "--fail-on", "worse", "--format", "csv")
    assert failing.returncode == 1
    header, row = failing.stdout.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["state"] == "confirmed"
    assert "worse within the last 5 run(s): Login/Login Time +3" in failing.stderr


def test_a_key_can_have_its_own_least_change(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    build(pytester, monkeypatch, [100] * 10 + [130] * 4)
    pytester.makeini("[pytest]\nuserflow_min_change =\n    Login :: Login Time 40%\n")
    out = run_cli(store_path, "changes", "--fail-on", "worse")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 change(s) in 2 series")
    # the command line's --min-change is for every key, and wins over the ini
    assert run_cli(store_path, "changes", "--min-change", "20").stdout.startswith("1 change(s)")
    pytester.makeini("[pytest]\nuserflow_min_change =\n    Login :: Login Time lots\n")
    bad = run_cli(store_path, "changes")
    assert bad.returncode != 0
    assert "userflow_min_change" in bad.stderr and "'Login :: Login Time lots'" in bad.stderr


def test_changes_needs_a_store(tmp_path: Path) -> None:
    out = run_cli(tmp_path / "none.db", "changes")
    assert out.returncode == 2 and "no store at" in out.stderr
