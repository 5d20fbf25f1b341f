"""What the commands and the run say: no rows left out unsaid, no file beside an error, and a
push hint that works as printed."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

SESSION = "8a37be67-c718-11ec-896d-0acbaa89a1b0"

ONE_TEST = """
    import pytest

    @pytest.mark.userflow("Login")
    def test_login(record_measurement):
        record_measurement("Login Time", 1.5)
"""


def test_runs_says_when_it_leaves_runs_out(pytester: pytest.Pytester, store_path: Path) -> None:
    pytester.makepyfile(ONE_TEST)
    for _ in range(3):
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    cut = run_cli(store_path, "runs", "--limit", "2", "--format", "csv")
    assert cut.returncode == 0, cut.stderr
    assert len(cut.stdout.splitlines()) == 3  # the header and two runs: the note is apart
    assert "the newest 2 runs; there are more: --limit N for more, --limit 0 for all" in (
        cut.stderr
    )
    every = run_cli(store_path, "runs", "--limit", "0", "--format", "json")
    assert len(json.loads(every.stdout)["runs"]) == 3 and every.stderr == ""
    assert run_cli(store_path, "runs", "--limit", "3").stderr == ""


def test_plot_writes_no_file_with_its_error(
    pytester: pytest.Pytester, store_path: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("matplotlib") is None:  # not imported here: numpy loads once
        pytest.skip("matplotlib is not installed (the [plot] extra)")
    pytester.makepyfile(ONE_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    output = tmp_path / "nope.png"
    result = run_cli(store_path, "plot", "--key", "Nope", "-o", str(output), own_process=True)
    assert result.returncode == 2 and "no numeric values of key 'Nope'" in result.stderr
    assert not output.exists()


def test_the_push_hint_names_the_store_and_works_as_printed(
    pytester: pytest.Pytester, hs_env
) -> None:
    hs_env.state.add_session(SESSION)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Login")
        def test_login(userflow, record_measurement):
            userflow.attach_session("{SESSION}")
            record_measurement("Login Time", 1.5)
    """)
    store = pytester.path / "elsewhere" / "perf.db"
    result = pytester.runpytest(
        "--userflow-store",
        str(store),
        "--headspin-url",
        "http://127.0.0.1:9",
        "--userflow-flush-timeout",
        "0.5",
    )
    (line,) = [line for line in result.stdout.lines if "still pending" in line]
    command = line.split("run '")[1].split("' to send")[0]
    assert command == f"pytest-userflow --store {store} push"
    push = subprocess.run(
        [sys.executable, "-m", "pytest_userflow", *shlex.split(command)[1:]],
        capture_output=True,
        text=True,
        check=False,
        cwd=pytester.path.parent,  # anywhere: the hint holds the store's whole path
    )
    assert push.returncode == 0, push.stdout + push.stderr
    assert [m["value"] for m in hs_env.state.measurements_of("Login")] == [1.5]
