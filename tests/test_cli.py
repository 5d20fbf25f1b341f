"""The ``pytest-userflow`` command, run for real on stores made by real pytest runs."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from headspin_server import MEASUREMENT_FIELDS

SUITE = """
    import os, pytest
    VALUE = float(os.environ.get("LOGIN_TIME", "100"))

    @pytest.mark.userflow("Login")
    @pytest.mark.parametrize("n", range(4))
    def test_login(record_measurement, userflow, n):
        userflow.attach_session("8a37be67-c718-11ec-896d-0acbaa89a1b%d" % n)
        record_measurement("Login Time", VALUE + n, units="ms", type="Custom Metrics")
        record_measurement("FPS", 60 - n)
        record_measurement("Screen", "home")

    @pytest.mark.userflow("Login")
    def test_failed(record_measurement):
        record_measurement("Login Time", 999, units="ms", type="Custom Metrics")
        assert 0

    @pytest.mark.userflow("Login")
    def test_skipped(record_measurement):
        record_measurement("Login Time", 5, units="ms", type="Custom Metrics")
        pytest.skip("excluded")
"""


def cli(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_cli(store, *args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def store(pytester: pytest.Pytester, store_path: Path, monkeypatch) -> Path:
    """Two runs of SUITE: Login Time around 100 ms, then around 130 ms (a 30% slowdown)."""
    pytester.makepyfile(SUITE)
    monkeypatch.setenv("LOGIN_TIME", "100")
    pytester.runpytest().assert_outcomes(passed=4, failed=1, skipped=1)
    monkeypatch.setenv("LOGIN_TIME", "130")
    pytester.runpytest().assert_outcomes(passed=4, failed=1, skipped=1)
    return store_path


def test_measurements_csv_has_exactly_the_api_columns(store: Path) -> None:
    out = cli(
        store, "measurements", "--flow", "Login", "--key", "Login Time", "--format", "csv"
    ).stdout
    rows = list(csv.reader(io.StringIO(out)))
    # the API document's CSV columns first, in order; then what tells the rows apart
    assert rows[0][: len(MEASUREMENT_FIELDS)] == list(MEASUREMENT_FIELDS)
    assert rows[0][len(MEASUREMENT_FIELDS) :] == [
        "status",
        "outcome",
        "nodeid",
        "run_id",
        "worker",
        "device_address",
    ]
    # no --status: passed, failed and not_set, as the API does; the skipped (Excluded) test is left out
    assert sorted(float(r[9]) for r in rows[1:]) == [
        100,
        101,
        102,
        103,
        130,
        131,
        132,
        133,
        999,
        999,
    ]
    assert {r[1] for r in rows[1:]} == {"Login"} and {r[8] for r in rows[1:]} == {"ms"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--status", "excluded"], [5, 5]),
        (["--status", "failed", "--status", "excluded"], [5, 5, 999, 999]),
        (["--session-id", "8a37be67-c718-11ec-896d-0acbaa89a1b0"], [100, 130]),
        (
            [
                "--session-id",
                "8a37be67-c718-11ec-896d-0acbaa89a1b0",
                "--session-id",
                "8a37be67-c718-11ec-896d-0acbaa89a1b3",
            ],
            [100, 103, 130, 133],
        ),
        (["--limit", "3", "--offset", "1"], [101, 102, 103]),
        (["--end-time", "2000-01-01 00:00:00"], []),
        (
            ["--start-time", "946684800", "--status", "passed"],
            [100, 101, 102, 103, 130, 131, 132, 133],
        ),
    ],
)
def test_measurement_filters_have_the_api_semantics(store: Path, args, expected) -> None:
    out = cli(store, "measurements", "--key", "Login Time", "--format", "json", *args).stdout
    values = [m["value"] for m in json.loads(out)["measurements"]]
    assert sorted(values) == expected if "--limit" not in args else values == expected


def test_repeated_keys_are_or_and_non_numeric_values_pass_through(store: Path) -> None:
    out = cli(
        store,
        "measurements",
        "--key",
        "Screen",
        "--key",
        "FPS",
        "--status",
        "passed",
        "--format",
        "json",
    )
    rows = json.loads(out.stdout)["measurements"]
    assert {r["key_name"] for r in rows} == {"Screen", "FPS"}
    assert [r["value"] for r in rows if r["key_name"] == "Screen"] == ["home"] * 8


def test_flows_and_runs(store: Path) -> None:
    flows = json.loads(cli(store, "flows", "--format", "json").stdout)["user_flows"]
    assert [(f["name"], f["tests"], f["measurements"]) for f in flows] == [("Login", 12, 28)]
    assert isinstance(flows[0]["created_time"], float)  # raw in JSON, a date in the table
    assert re.search(r" 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d ", cli(store, "flows").stdout)
    runs = json.loads(cli(store, "runs", "--format", "json").stdout)["runs"]
    assert len(runs) == 2 and runs[0]["started_at"] >= runs[1]["started_at"]
    assert [r["tests"] for r in runs] == [6, 6]
    # each run's end and outcome (SUITE has a failing test), raw in JSON, readable in the table
    assert all(r["finished_at"] >= r["started_at"] for r in runs)
    assert [r["outcome"] for r in runs] == ["failed", "failed"]
    remote = cli(store, "--source", "headspin", "runs", "--format", "json")
    assert json.loads(remote.stdout)["runs"] == runs
    assert f"HeadSpin has no runs: these are the local store's ({store})" in remote.stderr
    table = cli(store, "runs").stdout.splitlines()
    assert table[0].split()[:4] == ["run_id", "started_at", "finished_at", "outcome"]
    assert " failed " in table[1] and table[1].count(":") >= 4  # two times, HH:MM:SS


def test_stats_per_key_and_by_run(store: Path) -> None:
    rows = json.loads(
        cli(store, "stats", "--key", "Login Time", "--status", "passed", "--format", "json").stdout
    )["stats"]
    assert rows == [
        {
            "flow": "Login",
            "key": "Login Time",
            "type": "Custom Metrics",
            "count": 8,
            "min": 100.0,
            "mean": 116.5,
            "p50": 116.5,
            "p95": pytest.approx(132.65),
            "max": 133.0,
            "units": "ms",
        }
    ]
    by_run = json.loads(
        cli(
            store,
            "stats",
            "--key",
            "Login Time",
            "--status",
            "passed",
            "--by",
            "run",
            "--format",
            "json",
        ).stdout
    )["stats"]
    assert [r["p50"] for r in by_run] == [101.5, 131.5]  # in the order the runs were made
    by_test = json.loads(
        cli(store, "stats", "--key", "Login Time", "--by", "test", "--format", "json").stdout
    )["stats"]
    assert len({r["test"] for r in by_test}) == len(by_test) > 1
    assert all("::test_" in r["test"] for r in by_test)
    table = cli(store, "stats", "--key", "Screen").stdout.splitlines()
    assert table[0].split() == [
        "flow",
        "key",
        "type",
        "count",
        "min",
        "mean",
        "p50",
        "p95",
        "max",
        "units",
    ]
    assert table[1].split() == ["Login", "Screen", "-", "8", "-", "-", "-", "-", "-", "-"]


def test_compare_catches_the_slowdown_and_respects_direction(store: Path) -> None:
    result = cli(store, "compare", "--fail-over", "20", "--higher-is-better", "FPS", check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("comparing run ") and "against 1 run(s)" in lines[0]
    row = next(line.split() for line in lines if "Login Time" in line)
    # after "Login Login Time Custom Metrics": the medians, the change, the noise, the verdict
    assert row[5:10] == ["101.5", "131.5", "+29.6%", "3.9%", "worse"]
    fps = next(line.split() for line in lines if " FPS " in line)
    assert fps[3:8] == ["58.5", "58.5", "+0.0%", "6.7%", "same"]
    # text values are listed apart, not compared as "no data"
    assert not any(" Screen " in line for line in lines)
    assert lines[-1] == "not compared, their values are not numbers: Login/Screen"
    assert "worse by more than 20% and the noise: Login/Login Time +29.6%" in result.stderr
    assert cli(store, "compare", "--fail-over", "40").returncode == 0
    markdown = cli(store, "compare", "--format", "markdown").stdout.splitlines()
    assert markdown[0].startswith("comparing run ") and markdown[1] == ""
    assert markdown[2] == (
        "| flow | key | type | baseline | candidate | change | noise | verdict | units "
        "| baseline\\_n | candidate\\_n | direction |"
    )
    assert (
        "| Login | Login Time | Custom Metrics | 101.5 | 131.5 | +29.6% | 3.9% | worse | ms |"
        in ("\n".join(markdown))
    )
    assert markdown[-3:] == ["", "not compared, their values are not numbers: Login/Screen", ""]
    data = json.loads(cli(store, "compare", "--format", "json").stdout)["comparisons"]
    login = next(c for c in data if c["key"] == "Login Time")
    assert (
        login["baseline"] == 101.5 and login["candidate"] == 131.5 and login["verdict"] == "worse"
    )


def test_compare_takes_like_with_like_by_default(
    store: Path, pytester: pytest.Pytester, monkeypatch
) -> None:
    """A -k run is compared with the earlier runs' values of its own tests only; the next
    whole run is compared with whole runs, the -k run left out."""
    monkeypatch.setenv("LOGIN_TIME", "200")
    pytester.runpytest("-k", "test_login").assert_outcomes(passed=4)
    subset = cli(store, "compare", "--key", "Login Time", "--format", "json").stdout
    login = json.loads(subset)["comparisons"][0]
    # the baseline: both earlier runs, test_login's values only (not test_failed's 999)
    assert (login["baseline"], login["baseline_n"], login["candidate"]) == (116.5, 8, 201.5)
    monkeypatch.setenv("LOGIN_TIME", "130")
    pytester.runpytest().assert_outcomes(passed=4, failed=1, skipped=1)
    whole = cli(store, "compare", "--key", "Login Time").stdout.splitlines()
    assert "against 2 run(s)" in whole[0]
    assert "(1 newer run(s) left out: they did not run all of its tests)" in whole[0]
    # the spread of both runs together is wide: +12.9% is not beyond three standard errors
    assert whole[2].split()[5:11] == ["116.5", "131.5", "+12.9%", "44.0%", "within", "noise"]


def test_compare_says_same_for_a_change_inside_the_threshold_or_the_noise(
    pytester: pytest.Pytester, store_path: Path, monkeypatch
) -> None:
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.userflow("Noisy")
        @pytest.mark.parametrize("n", range(6))
        def test_load(record_measurement, n):
            base = float(os.environ["BASE"])
            record_measurement("Load", base * (1 + (-1) ** n * 0.1 * (n % 3)))
    """)
    for base in ("100", "100.6", "100", "112"):
        monkeypatch.setenv("BASE", base)
        pytester.runpytest().assert_outcomes(passed=6)
    runs = [
        r["run_id"] for r in json.loads(cli(store_path, "runs", "--format", "json").stdout)["runs"]
    ]
    small = json.loads(
        cli(
            store_path,
            "compare",
            "--candidate-run",
            runs[2][:8],
            "--baseline-run",
            runs[3][:8],
            "--format",
            "json",
        ).stdout
    )["comparisons"][0]
    assert small["change_pct"] == pytest.approx(0.6) and small["verdict"] == "same"
    # +12% is past --fail-over 10 but not past the noise of six values 20% apart
    noisy = cli(store_path, "compare", "--fail-over", "10", "--last", "1", "--format", "json")
    row = json.loads(noisy.stdout)["comparisons"][0]
    assert row["change_pct"] == pytest.approx(12.0) and row["verdict"] == "within noise"
    assert row["noise_pct"] > 12.0 and noisy.returncode == 0
    # --noise 0: the threshold alone decides
    bare = cli(
        store_path, "compare", "--fail-over", "10", "--last", "1", "--noise", "0", check=False
    )
    assert bare.returncode == 1 and "Noisy/Load +12.0%" in bare.stderr


def test_run_ids_are_unique_prefixes_everywhere(store: Path) -> None:
    runs = [r["run_id"] for r in json.loads(cli(store, "runs", "--format", "json").stdout)["runs"]]
    rows = json.loads(
        cli(
            store, "measurements", "--run", runs[1][:6], "--key", "Login Time", "--format", "json"
        ).stdout
    )["measurements"]
    assert {r["run_id"] for r in rows} == {runs[1]} and len(rows) == 5
    stats = json.loads(
        cli(
            store,
            "stats",
            "--run",
            runs[0][:6],
            "--key",
            "Login Time",
            "--status",
            "passed",
            "--format",
            "json",
        ).stdout
    )["stats"]
    assert stats[0]["p50"] == 131.5
    for command in ("measurements", "stats"):
        unknown = cli(store, command, "--run", "zzz", check=False)
        assert unknown.returncode == 2 and "run 'zzz' matches 0 of the 2 runs" in unknown.stderr
        ambiguous = cli(store, command, "--run", "", check=False)
        assert ambiguous.returncode == 2 and "run '' matches 2 of the 2 runs" in ambiguous.stderr
        assert runs[0] in ambiguous.stderr and "give more of its id" in ambiguous.stderr


def test_compare_higher_is_better_turns_a_drop_into_a_regression(
    tmp_path, pytester, store_path, monkeypatch
) -> None:
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.userflow("Video")
        def test_play(record_measurement):
            record_measurement("FPS", float(os.environ["FPS"]))
    """)
    for fps in ("60", "45"):
        monkeypatch.setenv("FPS", fps)
        pytester.runpytest()
    assert cli(store_path, "compare", "--fail-over", "10").returncode == 0  # lower is better: fine
    worse = cli(
        store_path, "compare", "--fail-over", "10", "--higher-is-better", "FPS", check=False
    )
    assert worse.returncode == 1 and "Video/FPS +25.0%" in worse.stderr


def test_plot_writes_a_png_or_names_the_extra(store: Path, tmp_path: Path) -> None:
    output = tmp_path / "login.png"
    if importlib.util.find_spec("matplotlib") is None:  # not imported here: numpy loads once
        pytest.skip("matplotlib is not installed (the [plot] extra)")
    result = run_cli(
        store, "plot", "--flow", "Login", "--key", "Login Time", "-o", str(output), own_process=True
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "over 2 run(s)" in result.stdout
    data = output.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_without_matplotlib_says_which_extra_to_install(store: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    # The blocker first, then the path this session imports pytest_userflow from.
    path = os.pathsep.join([str(blocker.parent), *sys.path])
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_userflow",
            "--store",
            str(store),
            "plot",
            "--key",
            "Login Time",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pytest-userflow plot: error: plot needs matplotlib: pip install 'pytest-userflow[plot]' "
        "(or pip install matplotlib)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["measurements", "--flow", "Nope"], "no user flow named or with id 'Nope'"),
        (["measurements", "--start-time", "yesterday"], "time must be ISO"),
        (["compare", "--candidate-run", "zzz"], "run 'zzz' matches 0 of the 2 runs"),
        (["--source", "headspin", "flows"], "HeadSpin needs an API token: set HEADSPIN_API_TOKEN"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(store: Path, monkeypatch, args, message) -> None:
    monkeypatch.delenv("HEADSPIN_API_TOKEN", raising=False)
    result = cli(store, *args, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_a_token_a_header_cannot_carry_is_one_line_unshown(store: Path, monkeypatch) -> None:
    command = ["--source", "headspin", "flows"]
    monkeypatch.setenv("HEADSPIN_API_TOKEN", "abc\u0142def-secret")
    result = cli(store, *command, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pytest-userflow {command[-1]}: error: the HeadSpin API token from HEADSPIN_API_TOKEN "
        "holds a character that is not ASCII, which an HTTP header cannot carry: copy the "
        "token again"
    ]
    assert "secret" not in result.stdout + result.stderr


def test_a_missing_store_is_named(tmp_path: Path) -> None:
    result = cli(tmp_path / "none.db", "flows", check=False)
    assert result.returncode == 2 and f"no store at {tmp_path / 'none.db'}" in result.stderr


def test_headspin_source_streams_the_measurements(store: Path, hs_env) -> None:
    sid = hs_env.state.add_session()
    flow = hs_env.state.create_flow(None, {"name": "Remote"})[1]["user_flow_id"]
    hs_env.state.attach_session(None, {"session_id": sid, "status": "Passed"}, flow)
    event = next(iter(hs_env.state.events.values()))
    hs_env.state._add_measurements(event, [{"key": f"k{i}", "value": i} for i in range(7)])
    out = cli(
        store, "--source", "headspin", "measurements", "--flow", flow, "--format", "json"
    ).stdout
    assert sorted(m["value"] for m in json.loads(out)["measurements"]) == list(range(7))
    stats = json.loads(
        cli(store, "--source", "headspin", "stats", "--flow", flow, "--format", "json").stdout
    )
    assert [(r["key"], r["count"], r["p50"]) for r in stats["stats"]] == [
        (f"k{i}", 1, float(i)) for i in range(7)
    ]
    # the flow by its name, as for the local store; an unknown one is an error, not nothing
    by_name = cli(
        store, "--source", "headspin", "measurements", "--flow", "Remote", "--format", "json"
    )
    assert sorted(m["value"] for m in json.loads(by_name.stdout)["measurements"]) == list(range(7))
    unknown = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_userflow",
            "--source",
            "headspin",
            "measurements",
            "--flow",
            "Nope",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 2
    assert "HeadSpin has no user flow named or with id 'Nope'" in unknown.stderr


def test_the_console_script_is_the_same_command() -> None:
    exe = shutil.which("pytest-userflow")
    if exe is None:
        pytest.skip("the package is not installed with its console script")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage: pytest-userflow")


def test_help_has_examples_and_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_userflow", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "examples:" in result.stdout and "exit codes:" in result.stdout
    commands = ("flows", "measurements", "stats", "runs", "compare", "changes", "plot", "report")
    for command in (*commands, "push"):
        assert command in result.stdout


def test_a_store_damaged_in_the_middle_is_one_line_and_exit_2(store, tmp_path) -> None:
    """Garbage over the middle of a sound store: the command says the store is damaged in
    one line, and leaves it as it is."""
    damaged = tmp_path / "damaged.db"
    data = bytearray(Path(store).read_bytes())
    page = 4096
    for at in range(page * 2, len(data) - page, page):
        data[at : at + 512] = b"\xa5" * 512
    damaged.write_bytes(bytes(data))
    before = damaged.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "pytest_userflow", "--store", str(damaged), "measurements"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"the store {damaged} is damaged or not readable" in result.stderr
    assert damaged.read_bytes() == before


def test_values_near_the_float_limit_never_overflow_a_statistic(
    pytester: pytest.Pytester, store_path: Path
) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Big")
        @pytest.mark.parametrize("v", [1e308, 1.5e308, -1.7e308, 1.7e308])
        def test_big(record_measurement, v):
            record_measurement("Huge", v)
    """)
    html = ["--userflow-html", "r.html"] if _has_html() else []
    result = pytester.runpytest(*html)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["  Huge  4  -1.7e+308  1.25e+308  1.7e+308  -"])
    [row] = json.loads(cli(store_path, "stats", "--flow", "Big", "--format", "json").stdout)[
        "stats"
    ]
    assert (row["min"], row["p50"], row["max"]) == (-1.7e308, 1.25e308, 1.7e308)
    assert row["mean"] == pytest.approx(6.25e307) and row["p95"] == pytest.approx(1.67e308)
    if html:
        assert cli(store_path, "report", "-o", str(pytester.path / "r2.html")).returncode == 0


def _has_html() -> bool:
    try:
        import vl_convert  # noqa: F401
    except ImportError:
        return False
    return True


def test_hostile_labels_and_values_from_headspin_are_shown_escaped(store: Path, hs_env) -> None:
    """Labels HeadSpin holds (the plugin refuses them, another program may not) and a text
    value with controls: the table shows them escaped, one row each, no raw escape sequence."""
    sid = hs_env.state.add_session()
    flow = hs_env.state.create_flow(None, {"name": "Remote"})[1]["user_flow_id"]
    hs_env.state.attach_session(None, {"session_id": sid, "status": "Passed"}, flow)
    event = next(iter(hs_env.state.events.values()))
    hostile = [
        {"key": "Clear\x1b[2J", "value": 1.0, "units": "m\x1b]0;owned\x07s"},
        {"key": "Split\nrow", "value": "home\u202e\x9bmenu", "type": "t\x85"},
    ]
    hs_env.state._add_measurements(event, hostile)
    out = cli(store, "--source", "headspin", "measurements", "--flow", "Remote").stdout
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", out)
    lines = out.splitlines()
    assert len(lines) == 3  # the header and a row per measurement
    for shown in ("Clear\\x1b[2J", "m\\x1b]0;owned\\x07s", "Split\\nrow", "home\\u202e\\x9bmenu"):
        assert shown in out
