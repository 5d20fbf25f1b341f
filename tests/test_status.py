"""Outcome to status, as DESIGN.md lists it, through real pytest runs."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest
from conftest import pick

CASES = {
    "passed": ("assert True", "Passed", None),
    "failed": ("assert 1 == 2", "Failed", "assert 1 == 2"),
    "raised": ("raise ValueError('boom')", "Failed", "ValueError: boom"),
    "skipped": ("pytest.skip('no device today')", "Excluded", "skipped: no device today"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_call_outcome_maps_to_status(
    pytester: pytest.Pytester, store_path, history, case: str
) -> None:
    body, status, message = CASES[case]
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_it(record_measurement):
            record_measurement("t", 1)
            {body}
    """)
    pytester.runpytest()
    rows = pick(history(store_path).tests(), "status", "status_message")
    assert rows == [(status, message)]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "yield; raise RuntimeError('teardown broke')",
            "error in teardown: RuntimeError: teardown broke",
        ),
        ("raise RuntimeError('setup broke'); yield", "error in setup: RuntimeError: setup broke"),
    ],
    ids=["teardown-error", "setup-error"],
)
def test_errors_outside_call_are_failed(
    pytester: pytest.Pytester, store_path, history, fixture: str, expected: str
) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.fixture
        def app():
            {fixture}

        @pytest.mark.userflow("Flow")
        def test_it(app, record_measurement):
            record_measurement("t", 1)
    """)
    pytester.runpytest()
    assert pick(history(store_path).tests(), "status", "status_message") == [("Failed", expected)]


def test_xfail_xpass_and_skipif(pytester: pytest.Pytester, store_path, history) -> None:
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.userflow("Flow")

        @pytest.mark.xfail(reason="known slow path")
        def test_xfail():
            assert 0

        @pytest.mark.xfail(reason="was flaky")
        def test_xpass():
            pass

        @pytest.mark.xfail(reason="must fail", strict=True)
        def test_xpass_strict():
            pass

        @pytest.mark.skipif(True, reason="not on this OS")
        def test_skipif():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(xfailed=1, xpassed=1, failed=1, skipped=1)
    rows = {
        t["nodeid"].split("::")[1]: (t["status"], t["status_message"])
        for t in history(store_path).tests()
    }
    assert rows["test_xfail"] == ("Excluded", "xfail: known slow path")
    assert rows["test_xpass"] == ("Passed", None)
    assert rows["test_xpass_strict"][0] == "Failed"
    assert "XPASS(strict)" in rows["test_xpass_strict"][1]
    assert rows["test_skipif"] == ("Excluded", "skipped: not on this OS")


def test_long_failure_message_is_one_line_of_at_most_255(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_it():
            raise AssertionError("x" * 400 + "\\nsecond line")
    """)
    pytester.runpytest()
    [(message,)] = pick(history(store_path).tests(), "status_message")
    assert len(message) == 255 and message.endswith("...") and "\n" not in message


def test_set_status_wins_over_failure_and_hook(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makeconftest("""
        def pytest_userflow_status(item, reports):
            return ("Failed", "hook says so")
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_override(userflow):
            userflow.set_status("excluded", "warm-up run")
            assert 0

        @pytest.mark.userflow("Flow")
        def test_hook_only():
            pass
    """)
    pytester.runpytest()
    rows = {
        t["nodeid"].split("::")[1]: (t["status"], t["status_message"])
        for t in history(store_path).tests()
    }
    assert rows == {
        "test_override": ("Excluded", "warm-up run"),
        "test_hook_only": ("Failed", "hook says so"),
    }


def test_status_hook_receives_all_reports_and_none_falls_through(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makeconftest("""
        def pytest_userflow_status(item, reports):
            assert [r.when for r in reports] == ["setup", "call", "teardown"]
            if "slow" in item.name:
                return ("Excluded", None)
            return None
    """)
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.userflow("Flow")

        def test_slow():
            pass

        def test_fast():
            pass
    """)
    pytester.runpytest().assert_outcomes(passed=2)
    rows = {t["nodeid"].split("::")[1]: t["status"] for t in history(store_path).tests()}
    assert rows == {"test_slow": "Excluded", "test_fast": "Passed"}


def test_status_hook_with_a_bad_answer_names_the_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        def pytest_userflow_status(item, reports):
            return ("Great", None)
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Flow")
        def test_it():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "ERROR: *Great* in pytest_userflow_status for *::test_it; "
            "the built-in status Passed was used"
        ]
    )


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_rerunfailures") is None,
    reason="pytest-rerunfailures is not installed",
)
def test_only_the_final_rerun_attempt_is_recorded(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile(
        textwrap.dedent("""
        import pytest
        attempts = []

        @pytest.mark.userflow("Flow")
        def test_flaky(record_measurement):
            attempts.append(1)
            record_measurement("attempt", len(attempts))
            assert len(attempts) == 3
    """)
    )
    pytester.makeconftest("""
        def pytest_runtest_logreport(report):
            if report.when == "teardown" and report.user_properties:
                print("PROPS", report.user_properties)
    """)
    result = pytester.runpytest("--reruns", "3", "-s", "--userflow-report", "r.json")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 2}
    rows = [
        (t["status"], m["value"], t["attempts"])
        for t in history(store_path).tests()
        for m in t["measurements"]
    ]
    assert rows == [("Passed", 3, 3)]  # the record keeps how many attempts it took
    result.stdout.fnmatch_lines(
        [
            "*PROPS [[]('userflow', 'Flow'), ('userflow_status', 'Passed'), ('userflow_attempts', 3), *",
            "1 test(s) took more than one attempt (pytest-rerunfailures); their values are the "
            "last attempt's: test_only_the_final_rerun_attempt_is_recorded.py::test_flaky (3 attempts)",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text())
    assert [t["attempts"] for t in report["tests"]] == [3]


@pytest.mark.parametrize(
    "plugins", [(), ("-p", "no:rerunfailures")], ids=["with-rerunfailures", "without"]
)
def test_every_outcome_is_recorded_once_with_or_without_rerunfailures(
    pytester: pytest.Pytester, store_path, history, plugins: tuple[str, ...]
) -> None:
    """A test is flushed when its teardown report is logged, which pytest-rerunfailures
    delays to the end of the attempt. Both record the same, and tell the flushed hook once."""
    pytester.makeconftest(
        """
        flushed = []

        def pytest_userflow_flushed(item, result):
            flushed.append((item.name, result.status, result.destination))

        def pytest_sessionfinish(session):
            print("FLUSHED", sorted(flushed))
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown broke")

        @pytest.mark.userflow("Flow")
        @pytest.mark.parametrize("case", ["pass", "fail", "skip", "xfail", "teardown"])
        def test_it(record_measurement, request, case):
            record_measurement("t", 1)
            if case == "fail":
                assert False
            if case == "skip":
                pytest.skip("not today")
            if case == "xfail":
                pytest.xfail("known")
            if case == "teardown":
                request.getfixturevalue("broken_teardown")
        """
    )
    result = pytester.runpytest("-s", *plugins)
    result.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1, errors=1)
    rows = sorted(pick(history(store_path).tests(), "nodeid", "status"))
    assert [(nodeid.split("[")[1][:-1], status) for nodeid, status in rows] == [
        ("fail", "Failed"),
        ("pass", "Passed"),
        ("skip", "Excluded"),
        ("teardown", "Failed"),
        ("xfail", "Excluded"),
    ]
    flushed = [
        ("test_it[fail]", "Failed", "local"),
        ("test_it[pass]", "Passed", "local"),
        ("test_it[skip]", "Excluded", "local"),
        ("test_it[teardown]", "Failed", "local"),
        ("test_it[xfail]", "Excluded", "local"),
    ]
    assert f"FLUSHED {flushed}" in result.stdout.str()  # each once


def test_a_hook_registered_during_the_run_is_called_from_then_on(
    pytester: pytest.Pytester,
) -> None:
    """Hooks nobody implements are skipped, and that is known per registration: a plugin
    registered by a test is heard for the tests after it."""
    pytester.makepyfile(
        """
        import pytest

        seen = []

        class Late:
            def pytest_userflow_flushed(self, item, result):
                seen.append(item.name)

        @pytest.mark.userflow("Flow")
        def test_0():
            pass  # flushed while nothing implements the hook

        @pytest.mark.userflow("Flow")
        def test_a(request):
            request.config.pluginmanager.register(Late(), "late")

        @pytest.mark.userflow("Flow")
        def test_b():
            pass

        def test_c():
            assert seen == ["test_a", "test_b"]  # test_a is flushed after it registered
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=4)
