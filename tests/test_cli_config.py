"""The CLI reads the project's configuration as the plugin does: its own options, then the
environment, then the ini file pytest would use from the current folder, then defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SESSION = "8a37be67-c718-11ec-896d-0acbaa89a1b0"

ONE_FLOW = """
    import pytest

    @pytest.mark.userflow("Login")
    def test_login(record_measurement):
        record_measurement("Login Time", 1.5)
"""

INI_FILES = {
    "pytest.ini": "[pytest]\nuserflow_store = perf/history.db\n",
    "pyproject.toml": '[tool.pytest.ini_options]\nuserflow_store = "perf/history.db"\n',
    "tox.ini": "[pytest]\nuserflow_store = perf/history.db\n",
    "setup.cfg": "[tool:pytest]\nuserflow_store = perf/history.db\n",
}


def run_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest-userflow ARGS...`` run in *folder*, as a user runs it there."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_userflow", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
        env={**os.environ, **env},
        timeout=60,
    )


def flows(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [flow["name"] for flow in json.loads(result.stdout)["user_flows"]]


@pytest.mark.parametrize("ini_file", list(INI_FILES))
def test_the_cli_reads_the_store_the_ini_file_names(pytester: pytest.Pytester, ini_file) -> None:
    (pytester.path / ini_file).write_text(INI_FILES[ini_file])
    pytester.makepyfile(ONE_FLOW)
    pytester.runpytest().assert_outcomes(passed=1)
    assert (pytester.path / "perf" / "history.db").exists()
    assert flows(run_in(pytester.path, "flows", "--format", "json")) == ["Login"]
    # From a folder below, as pytest finds its rootdir and the store relative to it.
    below = pytester.mkdir("tests")
    assert flows(run_in(below, "flows", "--format", "json")) == ["Login"]


def test_options_before_or_after_the_command_then_environment_then_ini(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nuserflow_store = perf/history.db\n")
    pytester.makepyfile(ONE_FLOW)
    pytester.runpytest("--userflow-store", "other.db").assert_outcomes(passed=1)
    from_ini = run_in(pytester.path, "flows")
    assert from_ini.returncode == 2
    assert f"no store at {pytester.path / 'perf' / 'history.db'}" in from_ini.stderr
    for args in (["--store", "other.db", "flows"], ["flows", "--store", "other.db"]):
        assert flows(run_in(pytester.path, *args, "--format", "json")) == ["Login"]
    from_env = run_in(pytester.path, "flows", "--format", "json", USERFLOW_STORE="other.db")
    assert flows(from_env) == ["Login"]
    given = run_in(pytester.path, "flows", "--store", "none.db", USERFLOW_STORE="other.db")
    assert given.returncode == 2 and f"no store at {pytester.path / 'none.db'}" in given.stderr


def test_a_config_file_and_rootdir_as_pytest_takes_them(pytester: pytest.Pytester) -> None:
    """``-c FILE``: the rootdir is the file's folder, and the store relative to it."""
    config = pytester.mkdir("ci")
    (config / "perf.ini").write_text("[pytest]\nuserflow_store = history.db\n")
    pytester.makepyfile(ONE_FLOW)
    pytester.runpytest("-c", "ci/perf.ini").assert_outcomes(passed=1)
    assert (config / "history.db").exists()
    assert flows(run_in(pytester.path, "-c", "ci/perf.ini", "flows", "--format", "json")) == [
        "Login"
    ]
    rooted = run_in(pytester.path, "flows", "-c", "ci/perf.ini", "--rootdir", str(pytester.path))
    assert rooted.returncode == 2 and str(pytester.path / "history.db") in rooted.stderr
    bad = run_in(pytester.path, "-c", "nope.ini", "flows")
    assert bad.returncode == 2 and "nope.ini" in bad.stderr


def test_a_bad_value_in_the_ini_is_named(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nuserflow_noise = loud\n")
    result = run_in(pytester.path, "flows")
    assert result.returncode == 2
    assert "ini key userflow_noise: 'loud' is not a number >= 0" in result.stderr


def test_push_finds_the_ini_store_and_takes_the_url_after_the_command(
    pytester: pytest.Pytester, hs_env, monkeypatch
) -> None:
    hs_env.state.add_session(SESSION)
    pytester.makeini("[pytest]\nuserflow_store = perf/history.db\n")
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Login")
        def test_login(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("Login Time", 1.5)
    """)
    result = pytester.runpytest(
        "--headspin-url", "http://127.0.0.1:9", "--userflow-flush-timeout", "0.5"
    )
    result.stdout.fnmatch_lines(["*1 test(s) with 1 measurement(s) are still pending*"])
    monkeypatch.delenv("HEADSPIN_API_URL")
    push = run_in(pytester.path, "push", "--headspin-url", hs_env.url, "--no-progress")
    assert push.returncode == 0, push.stdout + push.stderr
    assert f"pushing 1 upload(s) to {hs_env.url}" in push.stdout
    assert [m["value"] for m in hs_env.state.measurements_of("Login")] == [1.5]


FPS_SUITE = """
    import os, pytest

    @pytest.mark.userflow("Feed Scroll")
    def test_scroll(record_measurement):
        i = int(os.environ["RUN"])
        noise = [0, 0.5, -0.25, 0.75, -0.5, 0.25, -0.75, 0.5][i % 8]
        record_measurement("FPS", float(os.environ["FPS"]) + noise, units="fps")
"""


def test_one_direction_in_every_reader(pytester: pytest.Pytester, monkeypatch) -> None:
    """``* :: FPS higher`` in the ini: a 30% drop of FPS is worse for the run's line,
    ``changes``, ``compare``, the report's "Needs attention" and ``plot``."""
    pytester.makeini("[pytest]\nuserflow_directions =\n    * :: FPS higher\n")
    pytester.makepyfile(FPS_SUITE)
    for i, fps in enumerate([60] * 10 + [42] * 3):
        monkeypatch.setenv("RUN", str(i))
        monkeypatch.setenv("FPS", str(fps))
        result = pytester.runpytest(
            "-p",
            "no:cacheprovider",
            "--userflow-baseline",
            "local",
            "--userflow-regression-mode",
            "warn",
        )
    result.stdout.fnmatch_lines(["worse change confirmed: Feed Scroll/FPS (*::test_scroll) -30*"])
    changes = run_in(pytester.path, "changes", "--format", "json")
    assert changes.returncode == 0, changes.stderr
    found = json.loads(changes.stdout)["changes"]
    assert [(c["key"], c["direction"]) for c in found] == [("FPS", "worse")]
    failing = run_in(pytester.path, "changes", "--fail-on", "worse")
    assert failing.returncode == 1 and "Feed Scroll/FPS -30" in failing.stderr
    compared = run_in(pytester.path, "compare", "--format", "json", "--last", "8")
    assert compared.returncode == 0, compared.stderr
    (row,) = json.loads(compared.stdout)["comparisons"]
    assert (row["direction"], row["verdict"]) == ("higher is better", "worse")
    report = run_in(pytester.path, "report", "-o", "r.html")
    assert report.returncode == 0, report.stderr
    page = (pytester.path / "r.html").read_text()
    attention = page[page.index('<section id="attention">') :]
    attention = attention[: attention.index("</section>")]
    assert (
        "worse change: Feed Scroll/FPS (test_one_direction_in_every_reader.py::test_scroll) -30"
        in attention
    )
    plot = run_in(pytester.path, "plot", "--key", "FPS", "-o", "fps.png")
    assert plot.returncode == 0, plot.stderr
    assert "higher is better" in plot.stdout
