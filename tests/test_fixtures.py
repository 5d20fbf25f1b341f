"""The fixtures: what they record, and the errors bad input gets at the call."""

from __future__ import annotations

import importlib
import re
import uuid
from pathlib import Path

import pytest
from conftest import EVERY_ROW, pick

import pytest_userflow


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('record_measurement("t", float("nan"))', "value for key 't' must be finite, got nan"),
        ('record_measurement("t", float("inf"))', "value for key 't' must be finite, got inf"),
        ('record_measurement("t", float("-inf"))', "value for key 't' must be finite, got -inf"),
        (
            'record_measurement("t", None)',
            "value for key 't' must be a finite int, float or str, got NoneType",
        ),
        (
            'record_measurement("t", True)',
            "value for key 't' must be a finite int, float or str, got bool",
        ),
        (
            'record_measurement("t", {"a": 1})',
            "value for key 't' must be a finite int, float or str, got dict",
        ),
        (
            'record_measurement("t", [1])',
            "value for key 't' must be a finite int, float or str, got list",
        ),
        (
            'record_measurement("t", 2**64)',
            "value for key 't' is an int beyond 64 bits (18446744073709551616), which the store "
            "cannot keep; pass it as a float (float(value))",
        ),
        ('record_measurement("", 1)', "key must be a non-empty str, got ''"),
        ('record_measurement("  ", 1)', "key must be a non-empty str, got '  '"),
        ("record_measurement(7, 1)", "key must be a str, got int 7"),
        ('record_measurement("t", 1, type=3)', "type must be a str or None, got int 3"),
        ('record_measurement("t", 1, units=b"ms")', "units must be a str or None, got bytes"),
        ('userflow.attach_session("abc")', "session_id must be a HeadSpin session UUID*got 'abc'"),
        (
            'userflow.set_status("Done")',
            "status must be one of Passed, Failed, Excluded, got 'Done'",
        ),
        ('userflow.set_status("Passed", message=5)', "message must be a str or None, got int"),
    ],
)
def test_bad_input_is_refused_at_the_call_naming_test_and_argument(
    pytester: pytest.Pytester, store_path, history, call: str, message: str
) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_it(record_measurement, userflow):
            record_measurement("before", 1.5)
            {call}
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E *MeasurementError: {message}* of test_*.py::test_it"])
    # what was recorded before the bad call is kept, with the test's status
    listed = history(store_path).measurements(EVERY_ROW)
    assert pick(listed, "key_name", "value", "status") == [("before", 1.5, "Failed")]


def test_the_error_a_traceback_names_is_the_one_the_readme_names(
    pytester: pytest.Pytester,
) -> None:
    """The README shows the line a bad value prints: the name in it can be imported."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (shown,) = re.findall(r"^E   (pytest_userflow[\w.]*\.MeasurementError): ", readme, re.M)
    module, _, name = shown.rpartition(".")
    assert getattr(importlib.import_module(module), name) is pytest_userflow.MeasurementError
    pytester.makepyfile("""
        def test_login(record_measurement):
            record_measurement("Login Time", float("nan"))
    """)
    result = pytester.runpytest("--tb=short")
    result.stdout.fnmatch_lines([f"E   {shown}: value for key 'Login Time' must be finite*"])


def test_values_units_types_and_numeric_kinds_are_kept(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import decimal, fractions, pytest

        @pytest.mark.userflow("Flow")
        def test_it(record_measurement):
            record_measurement("int", 3, units="frames", type="Video")
            record_measurement("float", 2.5)
            record_measurement("text", "home screen")
            record_measurement("fraction", fractions.Fraction(1, 4))
            record_measurement("again", 1)
            record_measurement("again", 2)  # the API overwrites a key/type: last wins
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    listed = history(store_path).measurements(EVERY_ROW)
    rows = pick(listed, "key_name", "value", "key_type", "key_units")
    assert rows == [
        ("int", 3, "Video", "frames"),
        ("float", 2.5, None, None),
        ("text", "home screen", None, None),
        ("fraction", 0.25, None, None),
        ("again", 2, None, None),
    ]


def test_str_subclasses_are_kept_as_their_text(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """A StrEnum member (or any str subclass) as flow, key, value or units is kept as the
    plain text it holds: the journal and the store take exact types."""
    pytester.makepyfile("""
        import enum, pytest

        class Flow(str, enum.Enum):
            LOGIN = "Login"

        class Key(str, enum.Enum):
            TIME = "Login Time"

        class Text(str):
            pass

        @pytest.mark.userflow(Flow.LOGIN, description=Text("sign in"))
        def test_it(record_measurement):
            record_measurement(Key.TIME, 1.5, units=Text("seconds"), type=Text("Custom"))
            record_measurement("Screen", Text("home"))
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*could not record*")
    columns = ("user_flow_name", "key_name", "key_type", "key_units", "value")
    assert pick(history(store_path).measurements(EVERY_ROW), *columns) == [
        ("Login", "Login Time", "Custom", "seconds", 1.5),
        ("Login", "Screen", None, None, "home"),
    ]
    assert pick(history(store_path).flows(), "name", "description") == [("Login", "sign in")]


def test_timer_records_elapsed_seconds_and_nothing_when_the_block_raises(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import time, pytest

        @pytest.mark.userflow("Flow")
        def test_it(record_measurement):
            with record_measurement.timer("Wait", type="Custom") as t:
                time.sleep(0.01)
            assert t.elapsed >= 0.01
            with record_measurement.timer("Wait ms", units="ms"):
                pass
            with pytest.raises(KeyError):
                with record_measurement.timer("Broken"):
                    raise KeyError("x")
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    listed = history(store_path).measurements(EVERY_ROW)
    rows = pick(listed, "key_name", "key_type", "key_units", "value")
    assert [r[:3] for r in rows] == [("Wait", "Custom", "seconds"), ("Wait ms", None, "ms")]
    assert 0.01 <= rows[0][3] < 1.0


def test_timer_checks_its_arguments_before_timing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_it(record_measurement):
            with record_measurement.timer(""):
                pass
    """)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        ["E * key must be a non-empty str, got '' in record_measurement.timer() of *::test_it"]
    )


def test_userflow_handle_and_session(pytester: pytest.Pytester, store_path, history) -> None:
    pytester.makepyfile("""
        import uuid, pytest

        @pytest.mark.userflow("Login")
        def test_it(userflow, userflow_device):
            assert userflow.name == "Login"
            assert userflow.device is None and userflow_device is None
            sid = userflow.attach_session(uuid.UUID("8A37BE67-C718-11EC-896D-0ACBAA89A1B3"))
            assert sid == userflow.session_id == "8a37be67-c718-11ec-896d-0acbaa89a1b3"
            assert "Login" in repr(userflow)
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    assert pick(history(store_path).tests(), "session_id") == [
        ("8a37be67-c718-11ec-896d-0acbaa89a1b3",)
    ]


def test_measurements_hook_can_add_and_change(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makeconftest("""
        from pytest_userflow import Measurement

        def pytest_userflow_measurements(item, measurements):
            measurements.append(Measurement.create("Battery", 81, units="%"))
            measurements.append({"key": "From dict", "value": 2})
            measurements.append({"key": "Bad", "value": float("nan")})
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_it(record_measurement):
            record_measurement("Login Time", 1.0)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["ERROR: value for key 'Bad' must be finite, got nan in pytest_userflow_measurements *"]
    )
    rows = pick(history(store_path).measurements(EVERY_ROW), "key_name", "value")
    assert rows == [("Login Time", 1.0), ("Battery", 81), ("From dict", 2)]


def test_flushed_hook_sees_where_the_data_went(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        seen = []

        def pytest_userflow_flushed(item, result):
            seen.append((item.name, result.flow, result.status, result.destination, len(result.measurements)))

        def pytest_sessionfinish(session):
            print("FLUSHED", sorted(seen))
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_a(record_measurement):
            record_measurement("k", 1)

        def test_untracked():
            pass
    """)
    result = pytester.runpytest("-s")
    assert "FLUSHED [('test_a', 'Flow', 'Passed', 'local', 1)]" in result.stdout.str()


def test_fixtures_in_test_classes_raise_no_warnings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="class")
        def driver(userflow_device):
            return userflow_device

        @pytest.mark.userflow("Checkout")
        class TestCheckout:
            def test_pay(self, driver, record_measurement, userflow, userflow_device):
                assert driver == userflow_device == "dev@host"
                record_measurement("Pay Time", 1.0)
                assert userflow.name == "Checkout"
    """)
    pytester.runpytest(
        "-W", "error", "--userflow-device", "dev@host", "-p", "no:xdist"
    ).assert_outcomes(passed=1)


BAD_VALUES = {
    "nan": ("'k'", "float('nan')", "must be finite, got nan"),
    "bool": ("'k'", "True", "must be a finite int, float or str, got bool"),
    "surrogate": ("'k'", "'bad \\ud800'", "cannot be encoded as UTF-8"),
    "long key": ("'k' * 256", "1.0", "256 characters long, more than the 255 allowed"),
    "nul key": ("'a\\x00b'", "1.0", "holds a NUL character"),
    "escape key": (
        "'a\\x1b]0;owned\\x07'",
        "1.0",
        "holds the control character '\\x1b' at position 1",
    ),
    "bidi key": ("'ab\\u202e'", "1.0", "holds the control character '\\u202e' at position 2"),
    "long text": ("'k'", "'x' * 70_000", "more than the 65536 allowed"),
}
ENTRY_POINTS = {
    "call": "record_measurement({key}, {value})",
    "hook": "record_measurement('ok', 1.0)",
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_one_check_for_every_way_in(
    pytester: pytest.Pytester, history, entry: str, bad: str
) -> None:
    """record_measurement and the measurements hook refuse the same values with the same
    message; the bad value is one error, and the other tests' records are all stored."""
    key, value, message = BAD_VALUES[bad]
    if entry == "hook":
        pytester.makeconftest(
            f"""
            from pytest_userflow import Measurement

            def pytest_userflow_measurements(item, measurements):
                if item.name == "test_bad":
                    measurements.append(Measurement({key}, {value}))
            """
        )
    pytester.makepyfile(
        f"""
        def test_good(record_measurement):
            record_measurement("fine", 2.0)

        def test_bad(record_measurement):
            {ENTRY_POINTS[entry].format(key=key, value=value)}

        def test_after(record_measurement):
            record_measurement("fine", 3.0)
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.stdout.fnmatch_lines([f"*{message}*test_bad*"])
    if entry == "call":
        result.assert_outcomes(passed=2, failed=1)
    else:
        result.assert_outcomes(passed=3)
    path = pytester.path / ".userflow" / "userflow.db"
    rows = pick(history(path).measurements(EVERY_ROW), "nodeid", "key_name", "value")
    expected_bad = (
        [] if entry == "call" else [("test_one_check_for_every_way_in.py::test_bad", "ok", 1.0)]
    )
    assert rows == [
        ("test_one_check_for_every_way_in.py::test_good", "fine", 2.0),
        *expected_bad,
        ("test_one_check_for_every_way_in.py::test_after", "fine", 3.0),
    ]


def test_a_fixture_kept_past_its_test_refuses_with_the_tests_name(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import threading
        kept = []

        def test_first(record_measurement, userflow):
            kept.append(record_measurement)
            kept.append(userflow)
            record_measurement("a", 1.0)

        def test_second(record_measurement):
            record_measurement("b", 2.0)
            kept[0]("late", 3.0)

        def test_third():
            kept[1].set_status("Failed")
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*record_measurement() of test_a_fixture_kept_past_its_test_refuses_with_the_tests_name.py::test_first was called after*test_first ended*",
            "*userflow.set_status() of *::test_first was called after*",
        ]
    )


def test_a_test_that_runs_pytest_inside_itself_keeps_its_own_values(
    pytester: pytest.Pytester, store_path: Path, history
) -> None:
    # The fixtures find the running test's record without ``request``: an inner in-process
    # run (pytester's) must hand the outer test's back, for a fixture asked for after it.
    pytester.makepyfile(
        """
        pytest_plugins = ["pytester"]

        def test_outer(pytester, request, record_measurement):
            record_measurement("before", 1.0)
            pytester.makepyfile(
                "def test_inner(record_measurement):\\n"
                "    record_measurement('inner', 2.0)\\n"
            )
            pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=1)
            request.getfixturevalue("userflow").set_status("Excluded", "kept apart")
            record_measurement("after", 3.0)
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)
    tests = history(store_path).tests()
    assert pick(tests, "nodeid", "status") == [
        ("test_a_test_that_runs_pytest_inside_itself_keeps_its_own_values.py::test_outer",
         "Excluded")
    ]  # fmt: skip
    assert [m["key"] for m in tests[0]["measurements"]] == ["before", "after"]


def test_a_fixture_asked_for_by_name_or_through_another_fixture_records(
    pytester: pytest.Pytester, store_path: Path, history
) -> None:
    # Neither test names a fixture of ours or carries a marker: the run begins at the first.
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def timed(record_measurement):
            return record_measurement

        def test_plain():
            pass

        def test_by_name(request):
            request.getfixturevalue("record_measurement")("by name", 1.0)

        def test_through_a_fixture(timed):
            timed("through", 2.0)
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=3)
    tests = history(store_path).tests()
    assert [(t["nodeid"].split("::")[1], [m["key"] for m in t["measurements"]]) for t in tests] == [
        ("test_by_name", ["by name"]),
        ("test_through_a_fixture", ["through"]),
    ]


def test_a_record_made_by_name_in_the_test_body_lasts_from_the_setup(
    pytester: pytest.Pytester, read_report
) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.fixture
        def slow():
            time.sleep(0.2)

        def test_late(slow, request):
            time.sleep(0.1)
            request.getfixturevalue("record_measurement")("k", 1.0)
        """
    )
    pytester.runpytest("-p", "no:randomly", "--userflow-report", "report.json")
    (test,) = read_report()["tests"]
    assert test["duration"] >= 0.3


def test_every_kept_test_has_its_own_version_4_uuid(
    pytester: pytest.Pytester, store_path: Path, history
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(20))
        def test_it(record_measurement, n):
            record_measurement("t", n)
        """
    )
    pytester.runpytest().assert_outcomes(passed=20)
    ids = [test["local_event_id"] for test in history(store_path).tests()]
    assert len(set(ids)) == 20
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_setup_only_sets_the_fixtures_up_and_records_nothing(
    pytester: pytest.Pytester, store_path: Path
) -> None:
    pytester.makepyfile(
        """
        def test_it(record_measurement, userflow):
            record_measurement("t", 1.0)
        """
    )
    result = pytester.runpytest("--setup-only")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*SETUP    F record_measurement*", "*SETUP    F userflow*"])
    assert not store_path.exists()


def test_measurements_are_user_properties_of_every_teardown_report(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        def pytest_runtest_logreport(report):
            if report.when == "teardown":
                print("PROPS", report.nodeid, report.user_properties)
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Login")
        def test_login(record_measurement):
            record_measurement("Login Time", 1.25, units="seconds")
        """
    )
    result = pytester.runpytest("-s", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1)
    xml = (pytester.path / "junit.xml").read_text()
    assert '<property name="userflow" value="Login"' in xml
    assert '<property name="userflow_status" value="Passed"' in xml
    assert '<property name="userflow:Login Time" value="1.25"' in xml
    # the units beside the number, so that a CI page shows "1.25" and "seconds" together
    assert '<property name="userflow_units:Login Time" value="seconds"' in xml
    # Always there, as record_property's are: a conftest, Allure or ReportPortal sees them.
    result = pytester.runpytest("-s")
    assert (
        "::test_login [('userflow', 'Login'), ('userflow_status', 'Passed'), "
        "('userflow:Login Time', 1.25), ('userflow_units:Login Time', 'seconds')]"
    ) in result.stdout.str()


def test_userflow_session_records_the_runs_own_values_with_its_status(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """Values of the whole run (an install, an app's size) are one record, written at the
    end with the run's status; budget= is refused there, naming the fixture."""
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def app(userflow_session):
            userflow_session.name = "App Install"
            with userflow_session.timer("Install Time"):
                pass
            userflow_session("App Size", 48.5, units="MB")
            return "app"
    """)
    pytester.makepyfile("""
        import pytest
        from pytest_userflow import MeasurementError

        def test_opens(app):
            pass

        def test_breaks(app):
            assert 0

        def test_no_budgets_here(userflow_session):
            with pytest.raises(MeasurementError, match="budget= belongs to a test's record_measurement"):
                userflow_session("App Size", 1, budget=2)
    """)
    pytester.runpytest().assert_outcomes(passed=2, failed=1)
    rows = [
        (t["nodeid"], t["flow"], t["status"], t["status_message"], m["key"], m["value"], m["units"])
        for t in history(store_path).tests()
        for m in t["measurements"]
    ]
    assert [r[:4] for r in rows] == [
        ("userflow_session", "App Install", "Failed", "1 test(s) failed")
    ] * 2
    assert [r[4] for r in rows] == ["Install Time", "App Size"] and rows[1][5:] == (48.5, "MB")
    pytester.runpytest("-k", "opens").assert_outcomes(passed=1)
    newest = history(store_path).tests()[-1]
    assert (newest["status"], newest["status_message"]) == ("Passed", None)


def test_userflow_session_is_one_record_per_xdist_worker_with_its_device(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="session")
        def installed(userflow_session):
            userflow_session("Install Time", 3.5, units="s")

        @pytest.mark.parametrize("n", range(4))
        def test_it(installed, n):
            pass
    """)
    devices = ["dev1@host", "dev2@host"]
    args = [a for d in devices for a in ("--userflow-device", d)]
    pytester.runpytest("-n", "2", "--userflow", "Setup", *args).assert_outcomes(passed=4)
    rows = sorted(
        (m["user_flow_name"], m["device_address"], m["status"], m["value"])
        for m in history(store_path).measurements(EVERY_ROW)
        if m["nodeid"] == "userflow_session"
    )
    assert rows == [("Setup", "dev1@host", "Passed", 3.5), ("Setup", "dev2@host", "Passed", 3.5)]


@pytest.mark.parametrize(
    ("marker", "call", "message"),
    [
        ("", "record_measurement('Frame', 1.0, type='p\\n50')", "type holds the control"),
        ("", "record_measurement('Frame', 1.0, units='ms\\x9b2J')", "units holds the control"),
        ("@pytest.mark.userflow('Log\\u2066in')", "pass", "the flow name holds the control"),
    ],
    ids=["type with a newline", "units with a C1 control", "flow name with a bidi isolate"],
)
def test_labels_with_control_characters_are_refused(
    pytester: pytest.Pytester, marker: str, call: str, message: str
) -> None:
    """Keys, types, units and flow names reach terminals and charts as they are: one with a
    control character is one clear error at the call; a string value keeps them."""
    pytester.makepyfile(
        f"""
        import pytest

        {marker}
        def test_bad(record_measurement):
            {call}

        def test_text_value(record_measurement):
            record_measurement("Screen", "home\\x1b[2J\\nmenu")
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.stdout.fnmatch_lines([f"*{message} character*at position*"])
    assert result.parseoutcomes()["passed"] == 1
