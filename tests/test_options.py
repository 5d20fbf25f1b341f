"""Options, ini keys and environment: precedence, usage errors, and where the plugin stays out."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import pick

ONE_TEST = """
    def test_it(record_measurement):
        record_measurement("t", 1)
"""


def test_help_lists_the_userflow_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "record performance measurements into user flows:",
            "*--userflow=NAME*",
            "*--userflow-backend=*",
            "*--headspin-token=TOKEN*",
            "*--userflow-flush-timeout=SECONDS*",
            "*userflow_devices (linelist)*",
        ]
    )


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--userflow-backend", "cloud"],
            "",
            "--userflow-backend: 'cloud' is not one of auto, local, headspin, off",
        ),
        (
            [],
            "userflow_backend = cloud",
            "ini key userflow_backend: 'cloud' is not one of auto, local, headspin, off",
        ),
        (["--userflow-api", "v2"], "", "--userflow-api: 'v2' is not one of v0, legacy"),
        (
            ["--userflow-flush-timeout", "-1"],
            "",
            "--userflow-flush-timeout: '-1' is not a number of seconds >= 0",
        ),
        (
            [],
            "userflow_flush_timeout = soon",
            "ini key userflow_flush_timeout: 'soon' is not a number of seconds >= 0",
        ),
        (
            ["--userflow-device", "R58M41"],
            "",
            "--userflow-device: device address must look like 'device_id@hostname'*",
        ),
        (
            [],
            "userflow_devices =\n    a@h\n    nohost@",
            "ini key userflow_devices: device address must look like*",
        ),
        (
            ["--headspin-url", "ftp://x"],
            "",
            "--headspin-url: ftp://x is not an http:// or https:// URL",
        ),
        (
            ["--userflow-backend", "headspin"],
            "",
            "--userflow-backend headspin needs an API token: set HEADSPIN_API_TOKEN*",
        ),
    ],
)
def test_bad_values_are_usage_errors(
    pytester: pytest.Pytester, monkeypatch, args, ini, message
) -> None:
    monkeypatch.delenv("HEADSPIN_API_TOKEN", raising=False)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_precedence_command_line_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    # Tests with neither session nor device: nothing goes on the wire, the header says where.
    monkeypatch.setenv("HEADSPIN_API_TOKEN", "abc")
    pytester.makeini("""
        [pytest]
        headspin_url = http://from-ini.invalid
        userflow_backend = headspin
        userflow_name = FromIni
    """)
    pytester.makepyfile(ONE_TEST)
    pytester.runpytest().stdout.fnmatch_lines(
        ["userflow: HeadSpin http://from-ini.invalid *", "flow 'FromIni': 1 test*"]
    )
    monkeypatch.setenv("HEADSPIN_API_URL", "http://from-env.invalid")
    pytester.runpytest().stdout.fnmatch_lines(
        ["userflow: HeadSpin http://from-env.invalid *", "flow 'FromIni': 1 test*"]
    )
    pytester.runpytest(
        "--headspin-url", "http://from-cli.invalid", "--userflow", "FromCli"
    ).stdout.fnmatch_lines(
        ["userflow: HeadSpin http://from-cli.invalid *", "flow 'FromCli': 1 test*"]
    )
    pytester.runpytest("--userflow-backend", "off").stdout.fnmatch_lines(
        ["userflow: userflow backend off: nothing recorded"]
    )


def test_auto_backend_is_headspin_with_a_token_and_local_without(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    pytester.makepyfile(ONE_TEST)
    monkeypatch.delenv("HEADSPIN_API_TOKEN", raising=False)
    local = pytester.runpytest()
    local.stdout.fnmatch_lines(["local store */.userflow/userflow.db (run *)"])
    assert "userflow: " not in local.stdout.str()  # nothing of ours set: no header line
    monkeypatch.setenv("HEADSPIN_API_TOKEN", "abc")
    pytester.runpytest("--userflow-dry-run").stdout.fnmatch_lines(
        ["userflow: dry run (nothing sent)*"]
    )
    result = pytester.runpytest(
        "--userflow-flush-timeout", "0", "--headspin-url", "http://127.0.0.1:9"
    )
    result.stdout.fnmatch_lines(
        ["userflow: HeadSpin http://127.0.0.1:9 (spool: */.userflow/userflow.db)"]
    )


def test_store_path_from_option_and_ini(pytester: pytest.Pytester, history) -> None:
    pytester.makeini("[pytest]\nuserflow_store = data/flows.db\n")
    pytester.makepyfile(ONE_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    assert len(history(pytester.path / "data" / "flows.db").tests()) == 1
    pytester.runpytest("--userflow-store", "other.db").assert_outcomes(passed=1)
    assert len(history(pytester.path / "other.db").tests()) == 1


def test_marker_nearest_wins_and_option_is_the_default(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.userflow("Module")

        def test_module(record_measurement):
            record_measurement("t", 1)

        @pytest.mark.userflow("Class")
        class TestCheckout:
            def test_class(self, record_measurement):
                record_measurement("t", 1)

            @pytest.mark.userflow("Function", description="the nearest")
            def test_function(self, record_measurement):
                record_measurement("t", 1)
    """)
    pytester.makepyfile(
        test_other="""
        def test_default(record_measurement):
            record_measurement("t", 1)

        def test_silent():
            pass
    """
    )
    pytester.runpytest("--userflow", "Default", "--strict-markers").assert_outcomes(passed=5)
    rows = {t["nodeid"]: t["flow"] for t in history(store_path).tests()}
    assert rows == {
        "test_marker_nearest_wins_and_option_is_the_default.py::test_module": "Module",
        "test_marker_nearest_wins_and_option_is_the_default.py::TestCheckout::test_class": "Class",
        "test_marker_nearest_wins_and_option_is_the_default.py::TestCheckout::test_function": "Function",
        "test_other.py::test_default": "Default",
        "test_other.py::test_silent": "Default",
    }
    flows = history(store_path).flows()
    assert [f["description"] for f in flows if f["name"] == "Function"] == ["the nearest"]


def test_without_any_flow_only_tests_that_record_are_kept(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_records(record_measurement, n):
            record_measurement("t", n)

        def test_silent():
            pass
    """)
    pytester.runpytest().assert_outcomes(passed=3)
    flows = {t["flow"] for t in history(store_path).tests()}
    assert flows == {"test_without_any_flow_only_tests_that_record_are_kept.py::test_records"}


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "@pytest.mark.userflow(name=None)",
            "@pytest.mark.userflow needs a flow name*got None on *::test_it",
        ),
        (
            "@pytest.mark.userflow('')",
            "@pytest.mark.userflow needs a flow name*got '' on *::test_it",
        ),
        (
            "@pytest.mark.userflow('A', 'B')",
            "@pytest.mark.userflow takes (name, *, description=None)*",
        ),
        (
            "@pytest.mark.userflow('A', description=1)",
            "@pytest.mark.userflow(description=...) must be a str*",
        ),
    ],
)
def test_bad_markers_are_errors_naming_the_test(pytester: pytest.Pytester, marker, message) -> None:
    pytester.makepyfile(f"""
        import pytest

        {marker}
        def test_it():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"E *MeasurementError: {message}"])


def test_a_bare_userflow_marker_is_another_plugins_tag(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """Public code tags tests with a bare ``@pytest.mark.userflow``: not an error, and not a
    word unless such a test records something, then one warning names them."""
    pytester.makepyfile(
        test_tags="""
        import pytest

        @pytest.mark.userflow
        def test_tagged():
            pass

        @pytest.mark.userflow()
        @pytest.mark.parametrize("n", [1, 2])
        def test_tagged_and_recording(record_measurement, n):
            record_measurement("Wait", n)

        @pytest.mark.userflow
        class TestNamedOutside:
            pytestmark = pytest.mark.userflow("Outer")

            def test_it(self, record_measurement):
                record_measurement("Wait", 3)
    """
    )
    result = pytester.runpytest("-W", "error", "-p", "no:randomly", "--userflow-report", "r.json")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "WARNING: 3 test(s) carry @pytest.mark.userflow with no flow name (another plugin's "
            "tag?)*test_tags.py::TestNamedOutside::test_it, "
            "test_tags.py::test_tagged_and_recording?1?, test_tags.py::test_tagged_and_recording?2?"
        ]
    )
    flows = dict(pick(history(store_path).tests(), "nodeid", "flow"))
    assert flows == {
        "test_tags.py::test_tagged_and_recording[1]": "test_tags.py::test_tagged_and_recording",
        "test_tags.py::test_tagged_and_recording[2]": "test_tags.py::test_tagged_and_recording",
        "test_tags.py::TestNamedOutside::test_it": "Outer",
    }
    report = json.loads((pytester.path / "r.json").read_text())
    assert len(report["warnings"]["unnamed_flow_marker"]) == 3

    pytester.makepyfile(
        test_tags="""
        import pytest

        @pytest.mark.userflow
        def test_tagged():
            pass
    """
    )
    quiet = pytester.runpytest("-W", "error")
    quiet.assert_outcomes(passed=1)
    assert "@pytest.mark.userflow" not in quiet.stdout.str()


def test_a_marker_shared_by_many_tests_names_each_test_it_fails(pytester: pytest.Pytester) -> None:
    # A marker is read once for all the tests that share it; one that is wrong is still
    # reported at every test it marks, under that test's own id.
    pytester.makepyfile(
        test_bad="""
        import pytest

        pytestmark = pytest.mark.userflow("A", colour="red")

        @pytest.mark.parametrize("n", [1, 2])
        def test_case(n):
            pass
    """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=2)
    for n in (1, 2):  # ? for the brackets, which fnmatch reads as a set
        result.stdout.fnmatch_lines(
            [
                f"E *MeasurementError: @pytest.mark.userflow takes*colour* on test_bad.py::test_case?{n}?"
            ]
        )


def test_disabled_plugin_and_backend_off_record_nothing(
    pytester: pytest.Pytester, store_path
) -> None:
    pytester.makepyfile("""
        def test_it():
            pass
    """)
    result = pytester.runpytest("-p", "no:userflow", "--userflow", "X")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the options are gone with the plugin
    pytester.runpytest("-p", "no:userflow").assert_outcomes(passed=1)
    assert not store_path.parent.exists()
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest("--userflow-backend", "off")
    result.assert_outcomes(passed=1)
    assert not store_path.parent.exists()
    assert "userflow" not in result.stdout.str().split("passed")[0].split("collected")[1]


@pytest.mark.parametrize("flag", ["--collect-only", "--setup-plan"])
def test_no_store_and_no_network_when_tests_do_not_run(
    pytester: pytest.Pytester, store_path, monkeypatch, flag: str
) -> None:
    monkeypatch.setenv("HEADSPIN_API_TOKEN", "abc")
    monkeypatch.setenv("HEADSPIN_API_URL", "http://127.0.0.1:9")
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest(flag, "--userflow", "X")
    assert result.ret == 0
    assert not store_path.parent.exists()
    assert "== userflow ==" not in result.stdout.str()


def test_junit_xml_carries_the_measurements(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Login")
        def test_it(record_measurement):
            record_measurement("Login Time", 1.25, units="seconds")
    """)
    pytester.runpytest("--junitxml", "junit.xml").assert_outcomes(passed=1)
    xml = (pytester.path / "junit.xml").read_text()
    assert '<property name="userflow" value="Login" />' in xml
    assert '<property name="userflow_status" value="Passed" />' in xml
    assert '<property name="userflow:Login Time" value="1.25" />' in xml


def test_the_settings_never_show_the_token() -> None:
    from pathlib import Path

    from pytest_userflow.settings import Settings

    settings = Settings(
        flow=None,
        backend="headspin",
        url="https://api-dev.headspin.io",
        store=Path(".userflow/userflow.db"),
        devices=(),
        api="v0",
        report=None,
        dry_run=False,
        flush_timeout=60.0,
        token="s3cr3t-t0ken",
    )
    assert settings.token == "s3cr3t-t0ken"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
    assert "backend='headspin'" in repr(settings)


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        (
            {"HEADSPIN_API_TOKEN": "abc\ndef-secret"},
            [],
            "the HeadSpin API token from HEADSPIN_API_TOKEN holds spaces, a newline or other "
            "control characters*",
        ),
        (
            {},
            ["--headspin-token", "abc\tdef-secret"],
            "the HeadSpin API token from --headspin-token holds spaces*",
        ),
        (
            {"HEADSPIN_API_TOKEN": "abc"},
            ["--headspin-url", "https://ada:def-secret@api.example.invalid"],
            "--headspin-url holds a user name or password (user:pass@...); they are not shown*"
            "https://api.example.invalid",
        ),
        (
            {"HEADSPIN_API_TOKEN": "abc€def-secret"},
            [],
            "the HeadSpin API token from HEADSPIN_API_TOKEN holds a character that is not ASCII*",
        ),
    ],
    ids=["newline in token", "tab in token", "credentials in url", "not ascii"],
)
def test_a_secret_that_cannot_be_sent_safely_stops_the_run_unshown(
    pytester: pytest.Pytester, monkeypatch, env, args, message
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "def-secret" not in result.stdout.str() + result.stderr.str()


def test_the_store_is_readable_by_its_owner_only(pytester: pytest.Pytester, store_path) -> None:
    pytester.makepyfile(ONE_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    for path in store_path.parent.glob("userflow.db*"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_run_that_records_nothing_makes_no_store(pytester: pytest.Pytester, store_path) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert not store_path.parent.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--userflow-report", "nope/r.json"],
            "--userflow-report: the folder */nope does not exist*",
        ),
        (["--userflow-report", "."], "--userflow-report: * is a folder; give a file name"),
        (
            ["--userflow-regression", "15"],
            "--userflow-regression has no effect without --userflow-baseline*",
        ),
        (["--userflow-noise", "2"], "--userflow-noise has no effect without --userflow-baseline*"),
        (
            ["--userflow-device", "R58M@host", "--userflow-device", "R58M@host"],
            "--userflow-device: the device R58M@host is given twice; each xdist worker *",
        ),
        (
            ["--userflow-html", "nope/r.html"],
            "--userflow-html: the folder */nope does not exist*",
        ),
    ],
    ids=[
        "report folder missing",
        "report is a folder",
        "regression alone",
        "noise alone",
        "device twice",
        "html folder missing",
    ],
)
def test_mistakes_in_the_options_are_one_line_before_any_test(
    pytester: pytest.Pytester, args, message
) -> None:
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert not (pytester.path / "nope").exists()


def test_a_report_that_cannot_be_written_at_the_end_leaves_the_exit_code_alone(
    pytester: pytest.Pytester,
) -> None:
    """The folder was there at the start and is gone at the end: one line each, exit 0."""
    (pytester.path / "out").mkdir()
    pytester.makepyfile("""
        import pytest, shutil

        @pytest.mark.userflow("Login")
        def test_it(record_measurement):
            record_measurement("Login Time", 1.0)
            shutil.rmtree("out")
    """)
    args = ["--userflow-report", "out/r.json"]
    if importlib.util.find_spec("vl_convert") is not None:
        args += ["--userflow-html", "out/r.html"]
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["ERROR: could not write the report */out/r.json: *"])
    if "--userflow-html" in args:
        result.stdout.fnmatch_lines(["ERROR: could not write the HTML report */out/r.html: *"])


def test_the_store_setting_takes_a_sqlite_url_and_refuses_other_urls_without_their_password(
    pytester: pytest.Pytester, history, monkeypatch
) -> None:
    pytester.makepyfile(ONE_TEST)
    target = pytester.path / "elsewhere" / "flows.db"
    pytester.runpytest("--userflow-store", f"sqlite:///{target}").assert_outcomes(passed=1)
    assert len(history(target).tests()) == 1
    monkeypatch.setenv("USERFLOW_STORE", "from-env.db")  # the environment, below the command line
    pytester.runpytest().assert_outcomes(passed=1)
    assert len(history(pytester.path / "from-env.db").tests()) == 1
    result = pytester.runpytest("--userflow-store", "mysql://ada:s3cret@127.0.0.1:9/perf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: mysql://ada@127.0.0.1:9/perf: the userflow store is a SQLite file *"]
    )
    assert "s3cret" not in result.stdout.str() + result.stderr.str()
    assert not (pytester.path / "mysql:").exists()


def test_a_run_that_records_nothing_says_nothing(pytester: pytest.Pytester, monkeypatch) -> None:
    """Another project's suite in an environment where the plugin is installed."""
    monkeypatch.delenv("HEADSPIN_API_TOKEN", raising=False)
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    lines = result.outlines + result.errlines
    assert [line for line in lines if "userflow" in line and not line.startswith("plugins:")] == []


def test_a_run_that_records_nothing_runs_no_git(pytester: pytest.Pytester, git_calls) -> None:
    """git is asked for the run's commit and branch when a test first records, not before:
    another project's suite (pytest-rerunfailures' mocks time.sleep, which subprocess calls)
    sees no process of ours."""
    calls = git_calls
    pytester.makepyfile(
        test_plain="""
        import pytest

        def test_plain():
            assert True

        @pytest.mark.userflow  # another project's tag of that name
        def test_tagged():
            assert True
        """
    )
    pytester.runpytest_subprocess("test_plain.py").assert_outcomes(passed=2)
    assert not calls.exists()
    assert not (pytester.path / ".userflow").exists()
    pytester.makepyfile(test_records=ONE_TEST)
    pytester.runpytest_subprocess("test_records.py").assert_outcomes(passed=1)
    assert calls.read_text().startswith("rev-parse")


def test_a_variable_set_after_the_start_does_not_move_the_store(
    pytester: pytest.Pytester, store_path
) -> None:
    # Nothing of ours was set at the start: the settings are read at the first record as
    # the start saw them, whatever a conftest imported later sets meanwhile.
    pytester.mkpydir("sub")
    pytester.path.joinpath("sub", "conftest.py").write_text(
        "import os\nos.environ['USERFLOW_STORE'] = 'elsewhere.db'\n"
    )
    pytester.path.joinpath("sub", "test_records.py").write_text(
        "def test_it(record_measurement):\n    record_measurement('k', 1.0)\n"
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)
    assert store_path.exists()
    assert not list(pytester.path.rglob("elsewhere.db"))


def test_an_inner_run_that_records_nothing_calls_no_mocked_sleep(
    pytester: pytest.Pytester,
) -> None:
    # pytest-rerunfailures' own tests mock time.sleep around in-process inner runs: a run
    # that records nothing must not reach it (subprocess does, through git).
    pytester.makepyfile(
        test_outer="""
        import time
        pytest_plugins = ["pytester"]

        def test_outer(pytester, monkeypatch):
            slept = []
            monkeypatch.setattr(time, "sleep", slept.append)
            pytester.makepyfile(test_inner="def test_inner():\\n    assert True\\n")
            pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=1)
            assert slept == []
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly", "test_outer.py").assert_outcomes(passed=1)


#: What a run that keeps nothing never needs: the stores, the network, the reports ...
STORE_MODULES = ("sqlite3", "psycopg", "requests", "pytest_userflow.report", "pytest_userflow.html")
#: ... and what a run that records nothing never needs either: the gate and its statistics.
GATE_MODULES = ("pytest_userflow.gate", "pytest_userflow.analysis", "statistics")
#: The plugin's own modules a run that records nothing loads: the hooks and the settings' table.
AT_START = {"pytest_userflow", "pytest_userflow.plugin", "pytest_userflow.options",
            "pytest_userflow.hookspecs"}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "suite", "heavy"),
    [
        (["--help"], ONE_TEST, STORE_MODULES + GATE_MODULES),
        (["--userflow-backend", "off"], ONE_TEST, STORE_MODULES),  # its values are still gated
        ([], "def test_plain():\n    assert True\n", STORE_MODULES + GATE_MODULES),
    ],
    ids=["help", "backend off", "records nothing"],
)
def test_start_up_imports_no_database_network_or_report_module(
    pytester: pytest.Pytester, args, suite, heavy
) -> None:
    """Every pytest run of the environment loads the plugin: most of them record nothing."""
    pytester.makepyfile(suite)
    pytester.makeconftest(f"""
        import sys

        def pytest_unconfigure(config):
            print("loaded:", sorted(set({heavy!r}) & set(sys.modules)) or "none")
            ours = {{name for name in sys.modules if name.startswith("pytest_userflow")}}
            print("ours:", sorted(ours - {AT_START!r}) or "none")
    """)
    result = pytester.runpytest_subprocess(*args, "-p", "no:randomly")
    result.stdout.fnmatch_lines(["loaded: none"])
    if "pytest_userflow.gate" in heavy:  # nothing of the run's own is loaded either
        result.stdout.fnmatch_lines(["ours: none"])
