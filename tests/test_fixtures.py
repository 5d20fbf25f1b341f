"""The fixtures: what they record, and the errors bad input gets at the call."""

from __future__ import annotations

import pytest
from conftest import store_rows


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
    pytester: pytest.Pytester, store_path, call: str, message: str
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
    assert store_rows(store_path, "SELECT key_name, value, status FROM measurements") == [
        ("before", 1.5, "Failed")
    ]


def test_values_units_types_and_numeric_kinds_are_kept(
    pytester: pytest.Pytester, store_path
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
    rows = store_rows(
        store_path, "SELECT key_name, value, key_type, key_units FROM measurements ORDER BY id"
    )
    assert rows == [
        ("int", 3, "Video", "frames"),
        ("float", 2.5, None, None),
        ("text", "home screen", None, None),
        ("fraction", 0.25, None, None),
        ("again", 2, None, None),
    ]


def test_str_subclasses_are_kept_as_their_text(pytester: pytest.Pytester, store_path) -> None:
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
    assert store_rows(
        store_path,
        "SELECT user_flow_name, key_name, key_type, key_units, value FROM measurements ORDER BY id",
    ) == [
        ("Login", "Login Time", "Custom", "seconds", 1.5),
        ("Login", "Screen", None, None, "home"),
    ]
    assert store_rows(store_path, "SELECT name, description FROM flows") == [("Login", "sign in")]


def test_timer_records_elapsed_seconds_and_nothing_when_the_block_raises(
    pytester: pytest.Pytester, store_path
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
    rows = store_rows(
        store_path, "SELECT key_name, key_type, key_units, value FROM measurements ORDER BY id"
    )
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


def test_userflow_handle_and_session(pytester: pytest.Pytester, store_path) -> None:
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
    assert store_rows(store_path, "SELECT session_id FROM events") == [
        ("8a37be67-c718-11ec-896d-0acbaa89a1b3",)
    ]


def test_measurements_hook_can_add_and_change(pytester: pytest.Pytester, store_path) -> None:
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
    rows = store_rows(store_path, "SELECT key_name, value FROM measurements ORDER BY id")
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


@pytest.mark.parametrize(
    ("key", "value", "kind", "units"),
    [
        ("k", 1.5, None, "ms"),
        ("k", 3, "Custom", None),
        ("k", "v1.2", None, None),
        ("k", True, None, None),  # bool: refused
        ("k", float("nan"), None, None),
        ("k", float("inf"), None, None),
        ("k", float("-inf"), None, None),
        ("k", 2**70, None, None),
        (" ", 1, None, None),
        ("\t\n", 2.0, None, None),
        ("", 1, None, None),
        (5, 1, None, None),
        ("k", 1, 3, None),
        ("k", 1, None, b"ms"),
        ("k", None, None, None),
    ],
)
def test_record_measurement_keeps_exactly_what_the_full_check_accepts(
    key, value, kind, units
) -> None:
    """record_measurement's own quick check (exact str, int and float) accepts only what
    Measurement.create accepts, and keeps it as create would (the value's type too)."""
    from decimal import Decimal

    from pytest_userflow.fixtures import RecordMeasurement
    from pytest_userflow.measurement import Measurement, MeasurementError
    from pytest_userflow.recorder import TestRecord

    for candidate in (value, Decimal("2.5") if value == 1 else value):
        try:
            full = Measurement.create(key, candidate, type=kind, units=units)
        except MeasurementError:
            full = None
        record = TestRecord("t.py::test", None)
        try:
            RecordMeasurement(record, lambda: None)(key, candidate, type=kind, units=units)
        except MeasurementError:
            assert full is None
            continue
        assert full is not None and record.measurements == [tuple(full)]
        assert type(record.measurements[0]) is tuple  # plain: the journal writes it as it is
        assert type(record.measurements[0][1]) is type(full.value)


def test_measurements_are_user_properties_when_a_report_reads_them(
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
    # No report reads them: pytest keeps every report to the end, so nothing is added.
    result = pytester.runpytest("-s")
    result.stdout.fnmatch_lines(["*PROPS *::test_login []"])
