"""A kept step in fail mode: the test's own outcome and the gate's verdict kept apart, and
``pytest-userflow accept`` for a level that is intended; real pytest runs and the command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

SUITE = """
import os, pytest

@pytest.mark.userflow("Login")
def test_login(record_measurement):
    i = int(os.environ["RUN"])
    noise = [0, 2, -1, 3, -2, 1, -3, 2, 0, -1, 1, -2][i % 12]
    record_measurement("Login Time", float(os.environ["LOGIN"]) + noise, units="ms")
"""


class History:
    """A suite run again and again against the local baseline in fail mode (the default)."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        pytester.makepyfile(SUITE)
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.count = 0

    def run(self, login: float) -> pytest.RunResult:
        self.monkeypatch.setenv("RUN", str(self.count))
        self.monkeypatch.setenv("LOGIN", str(login))
        self.count += 1
        return self.pytester.runpytest("-p", "no:cacheprovider", "--userflow-baseline", "local")

    def runs(self, *levels: float) -> list[pytest.RunResult]:
        return [self.run(level) for level in levels]


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> History:
    return History(pytester, monkeypatch)


def run_ids(store: Path) -> list[str]:
    """The store's runs, oldest first."""
    runs = json.loads(run_cli(store, "runs", "--limit", "100", "--format", "json").stdout)["runs"]
    return [r["run_id"] for r in runs][::-1]


def cli_json(store: Path, *args: str) -> Any:
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


def test_a_kept_step_fails_the_gate_and_is_counted_by_every_reader(
    suite: History, store_path: Path, history: Any, pytester: pytest.Pytester
) -> None:
    for result in suite.runs(*[100] * 10):
        result.assert_outcomes(passed=1)
    kept = suite.runs(130, 130, 130)
    for result in kept:  # the gate fails each run at the new level
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["*Login/Login Time = 1[23]* ms regressed +*against its baseline 10*"]
        )
    runs = run_ids(store_path)
    step = runs[10]
    # the run's own line, by the third run at the new level
    assert "worse change confirmed" not in kept[1].stdout.str()
    kept[2].stdout.fnmatch_lines(
        [f"worse change confirmed: Login/Login Time +3*% (median 10* -> 13* ms) since run {step}*"]
    )
    # history keeps both facts: Failed as HeadSpin got it, passed on its own
    rows = cli_json(store_path, "measurements", "--run", runs[-1])["measurements"]
    assert [(r["status"], r["outcome"]) for r in rows] == [("Failed", "Passed")]
    tests = history(store_path).tests(runs[-1])
    assert [(t["status"], t["outcome"]) for t in tests] == [("Failed", "Passed")]
    assert tests[0]["status_message"].startswith("Login/Login Time = 13")
    # changes finds it, and a nightly job fails on it
    (change,) = cli_json(store_path, "changes")["changes"]
    assert (change["run_id"], change["direction"]) == (step, "worse")
    failing = run_cli(store_path, "changes", "--fail-on", "worse")
    assert failing.returncode == 1 and step in failing.stderr
    # compare shows the values: the newest run against the five before it
    (row,) = cli_json(store_path, "compare")["comparisons"]
    assert row["candidate"] == pytest.approx(130, abs=3) and row["verdict"] == "worse"
    # stats counts them; --status passed means the status sent, as on HeadSpin
    (stat,) = cli_json(store_path, "stats")["stats"]
    assert stat["count"] == 13
    (passed,) = cli_json(store_path, "stats", "--status", "passed")["stats"]
    assert passed["count"] == 10
    # the report draws them as failed by the gate, and its median line through them
    made = run_cli(store_path, "report", "-o", str(pytester.path / "r.html"))
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
