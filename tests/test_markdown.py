"""The markdown summary of a run (--userflow-markdown), through real pytest runs."""

from __future__ import annotations

import pytest

SUITE = """
    import os, pytest

    @pytest.mark.userflow("Login")
    def test_login(record_measurement):
        record_measurement("Login Time", float(os.environ["LOGIN_TIME"]), units="ms")

    @pytest.mark.userflow("Feed")
    def test_feed(record_measurement):
        record_measurement(os.environ.get("FEED_KEY", "Frame Time"), 16, units="ms")
"""
REGRESSED_ROW = (
    "| Login Time | test\\_markdown\\_suite.py::test\\_login | 100 ms | 130 ms | +30.0% | 1.5% "
    "| regressed |"
)


def seed(pytester: pytest.Pytester, monkeypatch, values=(100, 102, 98, 101, 99)) -> None:
    pytester.makepyfile(test_markdown_suite=SUITE)
    for value in values:
        monkeypatch.setenv("LOGIN_TIME", str(value))
        pytester.runpytest().assert_outcomes(passed=2)
    monkeypatch.setenv("LOGIN_TIME", "130")


def test_a_regression_is_listed_first_and_in_its_flows_table(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    seed(pytester, monkeypatch)
    result = pytester.runpytest("--userflow-baseline", "local", "--userflow-markdown", "run.md")
    result.assert_outcomes(passed=1, failed=1)
    lines = (pytester.path / "run.md").read_text().splitlines()
    assert lines[0] == "## pytest-userflow" and lines[2].startswith("run ")
    assert lines[4] == "### 1 regression(s) and budget breach(es)"
    assert lines[6].startswith("- **regressed**: Login/Login Time = 130 ms regressed +30.0%")
    login = lines.index("### Login")
    assert lines[login + 2 : login + 7] == [
        "1 test: 1 Failed",
        "",
        "| key | test | baseline | value | change | noise | verdict |",
        "|---|---|---|---|---|---|---|",
        REGRESSED_ROW,
    ]
    assert "### Feed" in lines


def test_a_hostile_key_cannot_break_the_table(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("FEED_KEY", "a|b`c <img src=x> [l](u) *d*")
    monkeypatch.setenv("LOGIN_TIME", "100")
    pytester.makepyfile(test_markdown_suite=SUITE)
    pytester.runpytest("--userflow-markdown", "run.md").assert_outcomes(passed=2)
    rows = [
        line
        for line in (pytester.path / "run.md").read_text().splitlines()
        if "Frame" in line or "img" in line
    ]
    assert rows == [
        "| a\\|b\\`c \\<img src=x\\> \\[l\\](u) \\*d\\* | - | - | 16 ms (median of 1) | - | - "
        "| not checked |"
    ]


def test_under_xdist_the_controller_appends_to_the_step_summary_once(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    pytest.importorskip("xdist")
    seed(pytester, monkeypatch)
    step = pytester.path / "step_summary.md"
    step.write_text("# an earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--userflow-baseline", "local", "--userflow-markdown", str(step)
    )
    result.assert_outcomes(passed=1, failed=1)
    text = step.read_text()
    assert text.startswith("# an earlier step\n## pytest-userflow\n")
    assert text.count("## pytest-userflow") == 1 and REGRESSED_ROW in text.splitlines()


def test_another_path_is_written_whole(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("LOGIN_TIME", "100")
    pytester.makepyfile(test_markdown_suite=SUITE)
    (pytester.path / "run.md").write_text("stale\n")
    pytester.runpytest("--userflow-markdown", "run.md").assert_outcomes(passed=2)
    assert (pytester.path / "run.md").read_text().startswith("## pytest-userflow\n")
