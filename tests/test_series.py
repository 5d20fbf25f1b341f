"""Like with like: a series is flow, key, type, units, test (parameters included) and device,
in ``changes``, the HTML report, ``stats`` and the run's summary; real runs and the CLI."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

CASES = """
import os, pytest

@pytest.mark.userflow("App")
@pytest.mark.parametrize("size", [15, 51])
def test_load(record_measurement, size):
    run = int(os.environ["RUN"])
    record_measurement("Load Time", size + [0, 1, -1, 0.5, -0.5][run % 5], units="ms")
"""


def cases_history(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight runs of both cases, then six ``-k`` runs that leave the slow case (51) out."""
    pytester.makepyfile(CASES)
    for run in range(14):
        monkeypatch.setenv("RUN", str(run))
        only = ["-k", "15"] if run >= 8 else []
        pytester.runpytest("-p", "no:cacheprovider", *only).assert_outcomes(passed=1 if only else 2)


def test_a_k_run_leaving_a_slow_case_out_is_no_change(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    cases_history(pytester, monkeypatch)
    out = run_cli(store_path, "changes", "--fail-on", "worse")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 change(s) in 2 series;"), out.stdout
    # pooled, the median of both cases (33) drops to 15 when the slow one is left out: --by
    # flow finds that "change", and says the series are pooled
    pooled = run_cli(store_path, "changes", "--by", "flow")
    assert pooled.stdout.startswith(
        "1 change(s) in 1 series; each flow's tests and devices pooled (--by flow);"
    ), pooled.stdout
    as_json = run_cli(store_path, "changes", "--by", "flow", "--format", "json")
    assert "each flow's tests and devices pooled" in as_json.stderr
    (change,) = json.loads(as_json.stdout)["changes"]
    assert (change["test"], change["device"]) == (None, None)
    assert (change["before"], change["after"]) == (33, pytest.approx(15, abs=1))


def test_the_report_draws_a_median_line_per_case(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    if importlib.util.find_spec("vl_convert") is None:  # not imported: the CLI's process does
        pytest.skip("the [html] extra is not installed")
    cases_history(pytester, monkeypatch)
    out = pytester.path / "report.html"
    made = run_cli(store_path, "report", "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert ", 0 needing attention, " in made.stdout  # no false change
    text = out.read_text()
    found = re.search(r'id="userflow-data">\n(.*?)\n</script>', text, re.S)
    assert found is not None
    data = json.loads(found[1])
    (chart,) = data["charts"]
    lines: dict[str, set[float]] = {}
    for _, median, line in chart["medians"]:
        lines.setdefault(data["tests"][line], set()).add(median)
    assert {name.rsplit("[", 1)[1]: (min(v), max(v)) for name, v in lines.items()} == {
        "15]": (14, 16),
        "51]": (50, 52),
    }
    assert chart["changes"] == []


UNITS = """
import os, pytest

@pytest.mark.userflow("App")
def test_a(record_measurement):
    record_measurement("Idle", 1.5)

@pytest.mark.userflow("App")
def test_b(record_measurement):
    record_measurement("Idle", 1800, units=os.environ.get("UNITS_B") or None)
"""


def test_one_key_in_two_units_is_never_one_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    pytester.makepyfile(UNITS)
    first = pytester.runpytest("-p", "no:cacheprovider")
    assert "WARNING" not in first.stdout.str()
    monkeypatch.setenv("UNITS_B", "ms")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "  key * n * min * median * max * units",
            "  Idle * 1 * 1.5 * 1.5 * 1.5 * -",
            "  Idle * 1 * 1800 * 1800 * 1800 * ms",
        ]
    )
    # one warning for the test whose units changed, naming both
    warnings = [line for line in result.stdout.lines if line.startswith("WARNING")]
    assert warnings == [
        "WARNING: test_one_key_in_two_units_is_never_one_summary.py::test_b records App/Idle "
        "in ms, its history in (no units): their values are summarised apart"
    ]
    stats = json.loads(run_cli(store_path, "stats", "--format", "json").stdout)["stats"]
    assert sorted((s["units"] or "-", s["count"], s["min"], s["max"]) for s in stats) == [
        ("-", 3, 1.5, 1800),  # test_b's first run recorded 1800 with no units, as test_a does
        ("ms", 1, 1800, 1800),
    ]


LATER = """
import os, pytest

@pytest.mark.userflow("App")
def test_c(record_measurement):
    run = os.environ["RUN"]
    if run == "1":
        record_measurement("Idle", 1.5, units="s")
        record_measurement("Load", 2.0, units="s")
    elif run == "2":
        record_measurement("Load", 2.0, units="s")
    else:
        record_measurement("Load", 2.1, units="s")
        record_measurement("Idle", 1500, units="ms")
"""


def test_units_are_compared_with_the_newest_run_that_recorded_the_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run 2 leaves Idle out and run 3 records the keys in another order: only Idle's units
    # changed, against run 1, the newest that recorded it.
    pytester.makepyfile(LATER)
    for run in "123":
        monkeypatch.setenv("RUN", run)
        result = pytester.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        warnings = [line for line in result.stdout.lines if line.startswith("WARNING")]
        assert warnings == (
            []
            if run != "3"
            else [
                "WARNING: test_units_are_compared_with_the_newest_run_that_recorded_the_key.py"
                "::test_c records App/Idle in ms, its history in s: their values are "
                "summarised apart"
            ]
        )
