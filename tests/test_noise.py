"""Noise that is never zero and a zero that is never invisible: the gate, ``changes`` and
``compare`` on keys whose baseline has no spread or a median of zero, in real runs."""

from __future__ import annotations

import html
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import run_cli

SUITE = """
import os, pytest

@pytest.mark.userflow("App")
def test_app(record_measurement):
    record_measurement("Value", float(os.environ["VALUE"]), units=os.environ.get("UNITS") or None)
"""


def record(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    pytester.makepyfile(SUITE)
    for value in values:
        monkeypatch.setenv("VALUE", str(value))
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("history", "value", "outcome", "line"),
    [
        # two-valued timings (MAD 0): a value the baseline has shown is no regression ...
        ([100, 200, 100, 100, 100, 100, 200], 200, "passed", "*Value*200*ok"),
        # ... one far beyond it is, in percent of a median far from zero
        (
            [100, 200, 100, 100, 100, 100, 200],
            300,
            "failed",
            "E   *App/Value = 300 regressed +200.0%, 200.0x its noise of 1.0% against its "
            "baseline 100 (median of 7)",
        ),
        # a count that is always 1: one more is within its noise of one unit
        ([1, 1, 1, 1, 1], 2, "passed", "*Value*2*within the noise"),
        # errors 0 -> 50: told in the key's units, never as a percent of zero
        (
            [0, 0, 0, 0, 0],
            50,
            "failed",
            "E   *App/Value = 50 regressed +50 (from 0), 50.0x its noise of 1 against its "
            "baseline 0 (median of 5)",
        ),
        # a steady key written to the hundredth: its noise is the step, 0.01, never "0.0%"
        (
            [100.25] * 6,
            130.5,
            "failed",
            "E   *App/Value = 130.5 regressed +30.2%, 3025.0x its noise of 0.01 against its "
            "baseline 100.25 (median of 6)",
        ),
    ],
    ids=["two-valued-seen", "two-valued-beyond", "count-one-more", "errors-from-zero", "steady"],
)
def test_the_gate_decides_with_no_spread_and_at_zero(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    history: list[float],
    value: float,
    outcome: str,
    line: str,
) -> None:
    record(pytester, monkeypatch, history)
    monkeypatch.setenv("VALUE", str(value))
    result = pytester.runpytest("-p", "no:cacheprovider", "--userflow-baseline", "local")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines([line])


def test_changes_and_compare_see_a_step_from_zero(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    record(pytester, monkeypatch, [0] * 8 + [100] * 8)
    out = run_cli(store_path, "changes")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 change(s) in 1 series"), out.stdout
    assert "+100 (from 0)" in out.stdout and "%" not in out.stdout
    (change,) = json.loads(run_cli(store_path, "changes", "--format", "json").stdout)["changes"]
    assert (change["before"], change["after"], change["change"]) == (0, 100, 100)
    assert change["change_pct"] is None and change["direction"] == "worse"

    # compare: the newest run (100) against four runs at 0, in the key's units
    old = [r["run_id"] for r in json.loads(run_cli(store_path, "runs", "--format", "json").stdout)
           ["runs"]][-4:]  # fmt: skip
    args = [arg for run in old for arg in ("--baseline-run", run)]
    table = run_cli(store_path, "compare", *args, "--fail-over", "10")
    assert table.returncode == 1
    row = next(line for line in table.stdout.splitlines() if line.startswith("App"))
    assert "+100 (from 0)" in row and "worse" in row.split(), row
    assert "App/Value +100 (from 0)" in table.stderr


def test_a_change_near_zero_is_told_in_units(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    """A median of 0.5 whose values swing by 1 either way: "+900%" would say nothing."""
    noise = [1.0, -1.0, 0.8, -0.8, 1.2, -1.2, 0.9, -0.9]
    record(pytester, monkeypatch, [0.5 + n for n in noise] + [5.0 + n for n in noise])
    out = run_cli(store_path, "changes", "--format", "json")
    (change,) = json.loads(out.stdout)["changes"]
    assert change["change_pct"] is None
    assert change["change"] == pytest.approx(4.5)
    assert "+4.5 (from 0.5)" in run_cli(store_path, "changes").stdout


def test_the_report_tells_a_regression_from_zero_in_units(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    if importlib.util.find_spec("vl_convert") is None:  # not imported: the CLI's process does
        pytest.skip("the [html] extra is not installed")
    record(pytester, monkeypatch, [0, 0, 0, 0, 0])
    monkeypatch.setenv("VALUE", "50")
    pytester.runpytest("-p", "no:cacheprovider", "--userflow-baseline", "local")
    out = pytester.path / "report.html"
    assert run_cli(store_path, "report", "-o", str(out)).returncode == 0
    page = html.unescape(out.read_text())  # what needs attention, as the page lists it
    assert "App/Value = 50 regressed +50 (from 0) against its baseline 0 (median of 5)" in page
