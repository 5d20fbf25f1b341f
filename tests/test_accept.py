"""A kept step in fail mode: the test's own outcome and the gate's verdict kept apart, and
``pytest-userflow accept`` for a level that is intended; real pytest runs and the command."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from pytest_userflow.storage import is_url

SUITE = """
import os, pytest

@pytest.mark.userflow("Login")
def test_login(record_measurement):
    i = int(os.environ["RUN"])
    noise = [0, 2, -1, 3, -2, 1, -3, 2, 0, -1, 1, -2][i % 12]
    record_measurement("Login Time", float(os.environ["LOGIN"]) + noise, units="ms")
"""


class History:
    """A suite run again and again against the local baseline in fail mode (the default),
    recording into *store*."""

    def __init__(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store: str
    ) -> None:
        pytester.makepyfile(SUITE)
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.store = store
        self.count = 0

    def run(self, login: float) -> pytest.RunResult:
        self.monkeypatch.setenv("RUN", str(self.count))
        self.monkeypatch.setenv("LOGIN", str(login))
        self.count += 1
        return self.pytester.runpytest(
            "-p", "no:cacheprovider", "--userflow-baseline", "local", "--userflow-store", self.store
        )

    def runs(self, *levels: float) -> list[pytest.RunResult]:
        return [self.run(level) for level in levels]


@pytest.fixture
def store(request: pytest.FixtureRequest, store_path: Path) -> str:
    """Where the runs record: the local SQLite store, or (``indirect`` parameter
    ``postgresql``) a team store of the test's own, which the gate and the CLI read."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return str(store_path)
    return str(request.getfixturevalue("pg_url"))


#: The tests that run on both stores.
BOTH_STORES = pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store: str) -> History:
    return History(pytester, monkeypatch, store)


def run_ids(store: str | Path) -> list[str]:
    """The store's runs, oldest first."""
    runs = json.loads(run_cli(store, "runs", "--limit", "100", "--format", "json").stdout)["runs"]
    return [r["run_id"] for r in runs][::-1]


def cli_json(store: str | Path, *args: str) -> Any:
    out = run_cli(store, *args, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def page_data(path: Path) -> dict[str, Any]:
    """The data the HTML report draws its charts from."""
    text = path.read_text()
    found = re.search(
        r'<script type="application/json" id="userflow-data">\n(.*?)\n</script>', text
    )
    assert found is not None
    return dict(json.loads(found[1]))


@BOTH_STORES
def test_a_kept_step_fails_the_gate_and_is_counted_by_every_reader(
    suite: History, store: str, history: Any, pytester: pytest.Pytester
) -> None:
    for result in suite.runs(*[100] * 10):
        result.assert_outcomes(passed=1)
    kept = suite.runs(130, 130, 130)
    for result in kept:  # the gate fails each run at the new level
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["flow 'Login': 1 test (1 Failed, 1 of them only by the gate);*"]
        )
        result.stdout.fnmatch_lines(
            ["*Login/Login Time = 1[23]* ms regressed +*against its baseline 10*"]
        )
    runs = run_ids(store)
    step = runs[10]
    # the run's own line, by the third run at the new level
    assert "worse change confirmed" not in kept[1].stdout.str()
    kept[2].stdout.fnmatch_lines(
        [
            f"worse change confirmed: Login/Login Time (*::test_login) +3*% (median 10* -> 13* ms) since run {step}*"
        ]
    )
    # history keeps both facts: Failed as HeadSpin got it, passed on its own
    rows = cli_json(store, "measurements", "--run", runs[-1])["measurements"]
    assert [(r["status"], r["outcome"]) for r in rows] == [("Failed", "Passed")]
    tests = history(store).tests(runs[-1])
    assert [(t["status"], t["outcome"]) for t in tests] == [("Failed", "Passed")]
    assert tests[0]["status_message"].startswith("Login/Login Time = 13")
    # changes finds it, and a nightly job fails on it
    (change,) = cli_json(store, "changes")["changes"]
    assert (change["run_id"], change["direction"]) == (step, "worse")
    failing = run_cli(store, "changes", "--fail-on", "worse")
    assert failing.returncode == 1 and step in failing.stderr
    # compare shows the values: the newest run against the five before it
    (row,) = cli_json(store, "compare")["comparisons"]
    assert row["candidate"] == pytest.approx(130, abs=3) and row["verdict"] == "worse"
    # stats counts them; --status passed means the status sent, as on HeadSpin
    (stat,) = cli_json(store, "stats")["stats"]
    assert stat["count"] == 13
    (passed,) = cli_json(store, "stats", "--status", "passed")["stats"]
    assert passed["count"] == 10
    # the report draws them as failed by the gate, and its median line through them
    made = run_cli(store, "report", "-o", str(pytester.path / "r.html"))
    assert made.returncode == 0, made.stderr
    data = page_data(pytester.path / "r.html")
    (chart,) = data["charts"]
    statuses = [data["statusNames"][p[3]] for p in chart["points"]]
    assert statuses == ["Passed"] * 10 + ["Failed by the gate"] * 3
    assert [round(m[1] / 10) for m in chart["medians"]] == [10] * 10 + [13] * 3
    page = (pytester.path / "r.html").read_text()
    assert '<td class="failed-by-the-gate">Failed by the gate</td>' in page
    # the baseline still leaves them out: the gate keeps failing at the new level
    again = suite.run(130)
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*regressed +*against its baseline 10* (median of 10)*"])


def advice(result: pytest.RunResult, store: str) -> list[str]:
    """The accept command a failure gives, as words (``pytest-userflow`` left out, and the
    ``--store`` it names for a team store, which must be *store*)."""
    said = "if the new level is intended: "
    # Under the CI variable pytest's short summary repeats the failure's message whole.
    commands = {line.split(said, 1)[1] for line in result.stdout.lines if said in line}
    assert len(commands) == 1, result.stdout.str()
    words = shlex.split(commands.pop())[1:]
    if is_url(store):
        assert words[:2] == ["--store", store]
        return words[2:]
    return words


@BOTH_STORES
def test_accept_makes_the_level_the_baseline_and_a_further_step_fails_again(
    suite: History, store: str, pytester: pytest.Pytester
) -> None:
    suite.runs(*[100] * 10)
    kept = suite.runs(130, 130, 130)
    step = run_ids(store)[10]
    # each failure says since which run, and the exact command that accepts the level
    for result in kept:
        result.assert_outcomes(failed=1)
        assert advice(result, store) == [
            "accept", "--flow", "Login", "--key", "Login Time", "--test",
            "test_accept_makes_the_level_the_baseline_and_a_further_step_fails_again.py::test_login",
            "--run", step,
        ]  # fmt: skip
        result.stdout.fnmatch_lines([f"*Login/Login Time is worse since run {step}; if the new*"])
    made = run_cli(store, *advice(kept[-1], store), "--reason", "the new TLS handshake")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("accepted #1: Login/Login Time (test test_accept_")
    # the same level passes from now on (its baseline fills up from the accepted run on)
    for result in suite.runs(*[130] * 5):
        result.assert_outcomes(passed=1)
        assert "worse change confirmed" not in result.stdout.str()
    # the accepted change is listed as such, and is no failure for a nightly job
    changes = cli_json(store, "changes")["changes"]
    assert [(c["run_id"], c["accepted"]) for c in changes] == [(step, 1)]
    assert run_cli(store, "changes", "--fail-on", "worse", "--recent", "20").returncode == 0
    # a further +30% fails again, against the accepted level
    further = suite.run(169)
    further.assert_outcomes(failed=1)
    further.stdout.fnmatch_lines(["*= 1[67]* ms regressed +*against its baseline 13* (median of*"])
    assert advice(further, store)[-1] == run_ids(store)[-1]  # worse since this run
    # the report lists the accept, and names the change it covers
    out = pytester.path / "r.html"
    assert run_cli(store, "report", "-o", str(out)).returncode == 0
    page = out.read_text()
    assert "<h2>Accepted levels</h2>" in page
    assert re.search(r"#1 Login/Login Time \(test_accept_[^)]*\) from run " + step, page)
    assert "(accepted #1)" in page_data(out)["charts"][0]["changes"][0][1]


def test_accept_by_default_starts_where_the_newest_change_began(suite: History, store: str) -> None:
    suite.runs(*[100] * 10, 130, 130, 130)
    step = run_ids(store)[10]
    made = run_cli(store, "accept", "--flow", "Login", "--key", "Login Time")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(
        f"accepted #1: Login/Login Time from run {step}, where its newest change began (+3"
    )
    suite.run(130).assert_outcomes(passed=1)
    # listed with when, who and why; taken back once, and kept
    made = run_cli(store, "accept", "--flow", "Login", "--key", "Login Time", "--run", step[:6])
    assert made.returncode == 0, made.stderr
    (first, second) = cli_json(store, "accept", "--list")["accepts"]
    assert (first["id"], first["from_run"], first["reason"], first["undone"]) == (
        1,
        step,
        None,
        None,
    )
    assert "@" in first["who"] and second["id"] == 2
    for accept in ("1", "2"):
        undone = run_cli(store, "accept", "--undo", accept)
        assert undone.returncode == 0 and undone.stdout.startswith(f"took back accept #{accept} ")
    again = run_cli(store, "accept", "--undo", "1")
    assert again.returncode == 2 and "accept 1 was taken back already in" in again.stderr
    listed = cli_json(store, "accept", "--list")["accepts"]
    assert [a["undone"] is not None for a in listed] == [True, True]
    # taken back: the level fails again, and says how to accept it
    result = suite.run(130)
    result.assert_outcomes(failed=1)
    assert advice(result, store)[-1] == step


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--flow", "Nope", "--key", "Login Time"], "no user flow named or with id 'Nope' in "),
        (["--flow", "Login", "--key", "Nope"], "no numeric values of Login/Nope in "),
        (
            ["--flow", "Login", "--key", "Login Time", "--test", "t.py::x"],
            "no numeric values of Login/Login Time (test t.py::x) in ",
        ),
        (["--flow", "Login", "--key", "Login Time"], "no change found in Login/Login Time "),
        (["--flow", "Login", "--key", "Login Time", "--run", "zz"], "run 'zz' matches 0 of the 6"),
        (["--key", "Login Time"], "accept needs --flow and --key (or --list, or --undo ID)"),
        (["--list", "--flow", "Login"], "--list and --undo take no other option, got --flow"),
        (["--undo", "7"], "accept 7 is not in "),
    ],
)
def test_accept_errors_say_what_was_wrong(
    suite: History, store_path: Path, args: list[str], error: str
) -> None:
    suite.runs(*[100] * 6)
    out = run_cli(store_path, "accept", *args)
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith(f"pytest-userflow accept: error: {error}"), out.stderr


@BOTH_STORES
def test_the_outcome_is_the_tests_own_and_the_status_is_what_was_sent(
    pytester: pytest.Pytester, store: str, history: Any
) -> None:
    pytester.makepyfile("""
        import pytest

        pytestmark = [pytest.mark.userflow("F"), pytest.mark.userflow_budget("t", max=1)]

        def test_gate_only(record_measurement):
            record_measurement("t", 2)

        def test_both(record_measurement):
            record_measurement("t", 2)
            assert 0

        def test_own(record_measurement):
            record_measurement("t", 0.5)
            assert 0

        def test_said(record_measurement, userflow):
            record_measurement("t", 2)
            userflow.set_status("Excluded", "not this time")

        def test_ok(record_measurement):
            record_measurement("t", 0.5)
    """)
    pytester.runpytest("--userflow-store", store).assert_outcomes(passed=1, failed=4)
    tests = history(store).tests()
    assert [(t["nodeid"].split("::")[1], t["status"], t["outcome"]) for t in tests] == [
        ("test_gate_only", "Failed", "Passed"),
        ("test_both", "Failed", "Failed"),
        ("test_own", "Failed", "Failed"),
        ("test_said", "Excluded", "Excluded"),
        ("test_ok", "Passed", "Passed"),
    ]
    assert tests[0]["status_message"] == "F/t = 2 is over its budget <= 1"
    # the listing's --status is the status sent, as on HeadSpin; each row names the outcome
    rows = cli_json(store, "measurements", "--status", "failed")["measurements"]
    assert [r["outcome"] for r in rows] == ["Passed", "Failed", "Failed"]


def test_the_benchmarks_kept_step_meets_its_goals(tmp_path: Path) -> None:
    """One seeded history of ``benchmarks/accept.py``: its figures' goals hold there too."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "accept.py"
    spec = importlib.util.spec_from_file_location("benchmark_accept", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seen = bench.history(random.Random(2032), 0.01, tmp_path / "history.db")
    assert seen["changes"] <= 3 and seen["line"] <= 3 and seen["before"] is None
    assert seen["kept_failed"] == bench.KEPT and seen["accepted_at_step"]
    assert seen["after_failed"] == 0 and seen["further_caught"]
