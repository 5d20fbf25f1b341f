"""Budgets and the regression gate, through real pytest runs."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import EVERY_ROW, pick

HISTORY_SUITE = """
    import os, pytest

    @pytest.mark.userflow("Login")
    def test_login(record_measurement):
        record_measurement("Login Time", float(os.environ["LOGIN_TIME"]), units="ms")
        record_measurement("FPS", float(os.environ.get("FPS", "60")))
"""


def seed(pytester: pytest.Pytester, monkeypatch, values: list[float], fps: float = 60) -> None:
    pytester.makepyfile(HISTORY_SUITE)
    monkeypatch.setenv("FPS", str(fps))
    for value in values:
        monkeypatch.setenv("LOGIN_TIME", str(value))
        pytester.runpytest().assert_outcomes(passed=1)


def test_budget_argument_fails_the_test_after_its_call(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Login")
        @pytest.mark.parametrize("ms", [1500, 2500])
        def test_login(record_measurement, ms):
            record_measurement("Login Time", ms, units="ms", budget=2000)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    message = "Login/Login Time = 2500 ms is over its budget <= 2000 ms"
    result.stdout.fnmatch_lines([f"E   pytest_userflow.BudgetExceeded: {message}"])
    rows = {
        t["nodeid"]: f"{t['status']}: {t['status_message'] or ''}"
        for t in history(store_path).tests()
    }
    assert sorted(rows.values()) == ["Failed: " + message, "Passed: "]


def test_only_tests_with_a_budget_fail_on_their_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        def test_0_plain(record_measurement):
            record_measurement("Login Time", 9000)

        def test_1_budget(record_measurement):
            record_measurement("Login Time", 9000, budget=2000)

        @pytest.mark.userflow_budget("Login Time", max=2000)
        def test_2_marker(record_measurement):
            record_measurement("Login Time", 9000)
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E   pytest_userflow.BudgetExceeded: *::test_1_budget/Login Time = 9000 is over its "
            "budget <= 2000",
            "E   pytest_userflow.BudgetExceeded: *::test_2_marker/Login Time = 9000 is over its "
            "budget <= 2000",
        ]
    )


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_rerunfailures") is None,
    reason="pytest-rerunfailures is not installed",
)
def test_a_budget_breach_is_rerun_and_only_the_last_attempt_kept(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """The gate fails the report before pytest-rerunfailures reads it: a breach is retried
    like any failure, and the store keeps the attempt that counted."""
    pytester.makepyfile("""
        import pytest
        attempts = []

        @pytest.mark.userflow("Login")
        def test_login(record_measurement):
            attempts.append(1)
            record_measurement("Login Time", 2500 if len(attempts) == 1 else 1500, budget=2000)
    """)
    result = pytester.runpytest("--reruns", "1")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
    rows = pick(history(store_path).measurements(EVERY_ROW), "status", "value")
    assert rows == [("Passed", 1500)]


def test_budget_markers_min_and_max_nearest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        pytestmark = [pytest.mark.userflow("Video"), pytest.mark.userflow_budget("FPS", min=30)]

        def test_smooth(record_measurement):
            record_measurement("FPS", 58)

        def test_choppy(record_measurement):
            record_measurement("FPS", 24)

        @pytest.mark.userflow_budget("FPS", min=20)
        def test_choppy_but_allowed(record_measurement):
            record_measurement("FPS", 24)

        @pytest.mark.userflow_budget("Start", max=2.0, min=0.1)
        def test_both_bounds(record_measurement):
            record_measurement("Start", 0.05, units="s")
    """)
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E   pytest_userflow.BudgetExceeded: Video/FPS = 24 is under its budget >= 30",
            "E   pytest_userflow.BudgetExceeded: Video/Start = 0.05 s is under its budget >= 0.1 s",
        ]
    )


def test_budget_on_the_call_wins_over_the_marker_and_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Login")
        @pytest.mark.userflow_budget("Login Time", max=1500, min=100)
        def test_login(record_measurement):
            record_measurement("Login Time", 1800, budget=2000)  # under 2000: passes

        @pytest.mark.userflow("Login")
        @pytest.mark.userflow_budget("Login Time", max=1500, min=100)
        def test_too_fast(record_measurement):
            record_measurement("Login Time", 50, budget=2000)  # the marker's min still holds
    """)
    result = pytester.runpytest("-W", "always")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Login/Login Time = 50 is under its budget >= 100*",
            "*warnings summary*",
            "*UserflowWarning: record_measurement() of *::test_login: budget=2000 for 'Login Time' "
            "wins over the userflow_budget marker's max=1500 (the call's budget is the nearer one)",
        ]
    )


def test_ini_budgets_and_teardown_values(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        userflow_budgets =
            Login :: Login Time <= 2000
            * :: Memory <= 200
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.fixture
        def app(record_measurement):
            yield
            record_measurement("Memory", 250, units="MB")  # measured when the app closes

        @pytest.mark.userflow("Login")
        def test_slow_login(record_measurement):
            record_measurement("Login Time", 2100, units="ms")

        @pytest.mark.userflow("Search")
        def test_leaky(app):
            pass

        @pytest.mark.userflow("Search")
        def test_login_time_elsewhere_is_free(record_measurement):
            record_measurement("Login Time", 9999)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   pytest_userflow.BudgetExceeded: Search/Memory = 250 MB is over its budget <= 200 MB",
            "E   pytest_userflow.BudgetExceeded: Login/Login Time = 2100 ms is over its budget <= 2000 ms",
        ]
    )
    result.stdout.fnmatch_lines(
        ["budgets and regressions: 2 checked, 2 not ok"]
    )  # Search has no Login Time budget


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "Login Time <= 2000",
            "'Login Time <= 2000' is not 'flow :: key <= value' or 'flow :: key >= value'",
        ),
        ("Login :: Login Time < 2000", "is not 'flow :: key <= value'"),
        ("Login :: Login Time <= fast", "is not 'flow :: key <= value'"),
    ],
)
def test_bad_ini_budgets_are_usage_errors(pytester: pytest.Pytester, line, message) -> None:
    pytester.makeini(f"[pytest]\nuserflow_budgets =\n    {line}\n")
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ini key userflow_budgets: *{message}*"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('record_measurement("k", 1, budget=float("nan"))', "max must be a finite number, got nan"),
        (
            'record_measurement("k", "fast", budget=3)',
            "budget= needs a numeric value, 'k' is 'fast'",
        ),
    ],
)
def test_bad_budget_arguments_fail_at_the_call(pytester: pytest.Pytester, call, message) -> None:
    pytester.makepyfile(f"""
        def test_it(record_measurement):
            {call}
    """)
    pytester.runpytest().stdout.fnmatch_lines([f"E *MeasurementError: {message}*of *::test_it"])


def test_the_gate_catches_a_30_percent_slowdown(
    pytester: pytest.Pytester, monkeypatch, store_path, history
) -> None:
    seed(pytester, monkeypatch, [100, 102, 98, 101, 99])
    monkeypatch.setenv("LOGIN_TIME", "130")
    result = pytester.runpytest("--userflow-baseline", "local", "--userflow-regression", "20")
    result.assert_outcomes(failed=1)
    message = (
        "Login/Login Time = 130 ms regressed +30.0%, 20.2x its noise of 1.5% against its "
        "baseline 100 (median of 5)"
    )
    result.stdout.fnmatch_lines(
        [
            f"E   pytest_userflow.BudgetExceeded: {message}",
            "budgets and regressions: 2 checked, 1 not ok",
            "  test * key * value * budget / baseline * noise * change * verdict",
            "  *::test_login * Login/Login Time * 130 ms * baseline 100 (median of 5) * 1.5% * +30.0% * regressed",
            "  *::test_login * Login/FPS * 60 * baseline 60 (median of 5) * 1.7% * +0.0% * ok",
        ]
    )
    assert history(store_path).tests()[-1]["status_message"] == message  # the newest test


@pytest.mark.parametrize(
    ("value", "args", "outcome", "verdict"),
    [
        ("95", [], "passed", "ok"),  # improved
        ("115", [], "passed", "ok"),  # +15%: under the default 20%
        ("115", ["--userflow-regression", "10"], "failed", "regressed"),
        ("130", ["--userflow-regression-mode", "warn"], "passed", "regressed (warning)"),
    ],
    ids=["improved", "under-threshold", "over-threshold", "warn-mode"],
)
def test_gate_verdicts(
    pytester: pytest.Pytester, monkeypatch, value, args, outcome, verdict
) -> None:
    seed(pytester, monkeypatch, [98, 102, 100, 99, 101])
    monkeypatch.setenv("LOGIN_TIME", value)
    result = pytester.runpytest("--userflow-baseline", "local", *args)
    result.assert_outcomes(**{outcome: 1})
    line = next(  # the summary's row of the key (the failure's own lines come before it)
        line
        for line in result.stdout.lines
        if line.startswith("  test_") and "Login/Login Time" in line
    )
    assert line.rstrip().endswith(verdict)


def test_the_baseline_is_the_last_n_passed_values(pytester: pytest.Pytester, monkeypatch) -> None:
    seed(pytester, monkeypatch, [500] * 5 + [101, 99, 100, 100, 100])
    monkeypatch.setenv("LOGIN_TIME", "130")
    # the last 5 are about 100: +30%; over the last 10 the median is 300: 130 is much better
    last5 = pytester.runpytest("--userflow-baseline", "local", "--userflow-baseline-runs", "5")
    last5.assert_outcomes(failed=1)
    last10 = pytester.runpytest(
        "--userflow-baseline",
        "local",
        "--userflow-baseline-runs",
        "10",
        "-o",
        "userflow_regression=20",
    )
    last10.assert_outcomes(passed=1)


def test_too_little_history_gives_no_verdict_said_once(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    seed(pytester, monkeypatch, [100, 100])
    monkeypatch.setenv("LOGIN_TIME", "500")
    result = pytester.runpytest("--userflow-baseline", "local")
    result.assert_outcomes(passed=1)
    lines = [line for line in result.stdout.lines if "too little history" in line]
    assert lines == [
        "no regression verdict yet, too little history (fewer than 5 passed values of the "
        "same test and device): Login/FPS (2), Login/Login Time (2)"
    ]


def test_higher_is_better_keys_regress_when_they_drop(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    seed(pytester, monkeypatch, [100] * 5, fps=60)
    pytester.makeini("[pytest]\nuserflow_budgets =\n    Login :: FPS >= 10\n")
    monkeypatch.setenv("LOGIN_TIME", "100")
    monkeypatch.setenv("FPS", "40")  # a third fewer frames: worse, though still within budget
    result = pytester.runpytest("--userflow-baseline", "local")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   pytest_userflow.BudgetExceeded: Login/FPS = 40 regressed -33.3%, 20.0x its noise of 1.7% against its baseline 60*"
        ]
    )


def test_the_verdict_hook_decides_instead(pytester: pytest.Pytester, monkeypatch) -> None:
    seed(pytester, monkeypatch, [100] * 5)
    pytester.makeconftest("""
        def pytest_userflow_verdict(item, measurement, baseline):
            if measurement.key == "Login Time":
                assert baseline.values == (100.0,) * 5 and baseline.median == 100
                return measurement.value > max(baseline.values) * 1.01  # a stricter rule
    """)
    monkeypatch.setenv("LOGIN_TIME", "105")
    result = pytester.runpytest("--userflow-baseline", "local")
    result.assert_outcomes(failed=1)


def test_regression_gate_against_headspin_history(pytester: pytest.Pytester, hs_env) -> None:
    flow = hs_env.state.create_flow(None, {"name": "Login"})[1]["user_flow_id"]
    history = [("Passed", v) for v in (100, 101, 99, 102, 98)] + [("Failed", 500)]
    for status, value in history:
        sid = hs_env.state.add_session()
        hs_env.state.attach_session(None, {"session_id": sid, "status": status}, flow)
        event = next(e for e in hs_env.state.events.values() if e["session_id"] == sid)
        hs_env.state._add_measurements(
            event, [{"key": "Login Time", "value": value, "units": "ms"}]
        )
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Login")
        def test_login(record_measurement):
            record_measurement("Login Time", 130, units="ms")
    """)
    result = pytester.runpytest(
        "--userflow-baseline", "headspin", "--userflow-device", "R58M41@host-a"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   pytest_userflow.BudgetExceeded: Login/Login Time = 130 ms regressed +30.0%, *x its noise of 1.5% against its baseline 100 (median of 5)"
        ]
    )
    gets = [r for r in hs_env.state.requests if r[0] == "GET" and r[1].endswith("/measurements")]
    assert (
        len(gets) == 1
        and ("status", "passed") in gets[0][2]
        and ("key", "Login Time") in gets[0][2]
    )
    # the run's own result went to HeadSpin as Failed, with the gate's message
    mine = [e for e in hs_env.state.events.values() if e["device_id"] == "R58M41"]
    assert [e["status"] for e in mine] == ["Failed"] and "regressed +30.0%" in mine[0][
        "status_message"
    ]


@pytest.mark.parametrize("failing", [False, True], ids=["answering", "503"])
def test_the_headspin_baseline_is_fetched_once_per_flow_and_key(
    pytester: pytest.Pytester, hs_env, failing: bool
) -> None:
    """HeadSpin's rows name no test or device: one listing per flow and key serves every test
    of the run, and one that fails is not asked again for each test."""
    hs_env.state.create_flow(None, {"name": "Login"})
    if failing:
        hs_env.faults.match, hs_env.faults.error_rate = r"GET .*/measurements", 1.0
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Login")
        @pytest.mark.parametrize("n", range(6))
        def test_login(record_measurement, n):
            record_measurement("Login Time", 130, units="ms")
            record_measurement("FPS", 60)
    """)
    result = pytester.runpytest(
        "--userflow-baseline", "headspin", "--userflow-device", "R58M41@host-a"
    )
    result.assert_outcomes(passed=6)
    gets = [r for r in hs_env.state.requests if r[0] == "GET" and r[1].endswith("/measurements")]
    if failing:
        assert gets == [] and 2 <= hs_env.faults.injected <= 2 * 3  # each key's tries, once
        result.stdout.fnmatch_lines(["*no baseline for Login/FPS: HeadSpin answered 503*"])
        assert result.stdout.str().count("no baseline for Login/FPS") == 1
    else:
        assert sorted(dict(r[2])["key"] for r in gets) == ["FPS", "Login Time"]


def test_a_budget_failing_on_one_xdist_worker(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.userflow("Feed")

        @pytest.mark.parametrize("n", range(4))
        def test_scroll(record_measurement, userflow_device, n):
            slow = userflow_device.startswith("slow")
            record_measurement("Frame Time", 40 if slow else 10, units="ms", budget=16)
    """)
    result = pytester.runpytest_subprocess(
        "--userflow-device", "fast@h", "--userflow-device", "slow@h"
    )
    outcomes = result.parseoutcomes()
    rows = pick(history(store_path).tests(), "device", "status")
    assert {d for d, s in rows if s == "Failed"} == {"slow@h"}
    assert {d for d, s in rows if s == "Passed"} == {"fast@h"}
    assert outcomes.get("failed", 0) == sum(1 for d, _ in rows if d == "slow@h")
    result.stdout.fnmatch_lines(["budgets and regressions: 4 checked, * not ok"])


def test_the_failure_is_the_exception_the_package_exports() -> None:
    import pytest_userflow
    from pytest_userflow.gate import BudgetExceeded

    assert pytest_userflow.BudgetExceeded is BudgetExceeded  # the name shown in failures
    assert issubclass(BudgetExceeded, AssertionError)


def test_a_change_within_the_metrics_noise_is_not_a_regression(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    """+21% over a noisy history (spread 7.4%): over the 10% threshold, but within 3 times
    the noise; with --userflow-noise 0 the threshold alone decides."""
    seed(pytester, monkeypatch, [90, 110, 100, 95, 105])
    monkeypatch.setenv("LOGIN_TIME", "121")
    args = ("--userflow-baseline", "local", "--userflow-regression", "10")
    # a failed test is no history: this run leaves the baseline as it was
    strict = pytester.runpytest(*args, "--userflow-noise", "0")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(
        ["E   *Login Time = 121 ms regressed +21.0%, 2.8x its noise of 7.4%*"]
    )
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "budgets and regressions: 2 checked, 0 not ok",
            "  *::test_login * Login/Login Time * 121 ms * baseline 100 (median of 5) * 7.4% * "
            "+21.0% * within the noise",
        ]
    )


def test_the_baseline_is_the_same_test_on_the_same_device(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    """Parametrized cases of very different sizes, and two devices: each value is compared
    with its own case's history only, so nothing regresses with nothing changed, and a
    slowdown of the fast case alone is caught."""
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.userflow("Search")
        @pytest.mark.parametrize("words", [1, 4])
        def test_search(record_measurement, words):
            slow = float(os.environ.get("SLOW", "1")) if words == 1 else 1.0
            record_measurement("Search Time", 100.0 * words * slow, units="ms")
    """)
    for _ in range(5):
        for device in ("fast@host", "slow@host"):
            pytester.runpytest("--userflow-device", device).assert_outcomes(passed=2)
    calm = pytester.runpytest("--userflow-baseline", "local", "--userflow-device", "fast@host")
    calm.assert_outcomes(passed=2)
    monkeypatch.setenv("SLOW", "1.3")
    slower = pytester.runpytest("--userflow-baseline", "local", "--userflow-device", "fast@host")
    slower.assert_outcomes(passed=1, failed=1)
    slower.stdout.fnmatch_lines(["FAILED *::test_search[[]1[]]*"])


@pytest.mark.parametrize(
    ("ini", "marker", "outcome"),
    [
        ("Search :: Results higher", "", "failed"),  # fewer results: worse
        ("* :: Results ignore", "", "passed"),  # a count: never a regression
        ("", '@pytest.mark.userflow_budget("Results", direction="higher")', "failed"),
        ("", "", "passed"),  # lower is better by default: fewer results look better
    ],
    ids=["ini higher", "ini ignore any flow", "marker higher", "default lower"],
)
def test_which_way_a_key_is_better(
    pytester: pytest.Pytester, monkeypatch, ini: str, marker: str, outcome: str
) -> None:
    if ini:
        pytester.makeini(f"[pytest]\nuserflow_directions =\n    {ini}\n")
    pytester.makepyfile(f"""
        import os, pytest

        @pytest.mark.userflow("Search")
        {marker}
        def test_search(record_measurement):
            record_measurement("Results", int(os.environ["RESULTS"]))
    """)
    for _ in range(5):
        monkeypatch.setenv("RESULTS", "100")
        pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("RESULTS", "50")
    pytester.runpytest("--userflow-baseline", "local").assert_outcomes(**{outcome: 1})


def test_a_min_budget_says_under(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Scroll")
        @pytest.mark.userflow_budget("FPS", min=55)
        def test_scroll(record_measurement):
            record_measurement("FPS", 41, units="fps")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E   pytest_userflow.BudgetExceeded: Scroll/FPS = 41 fps is under its budget >= 55 fps"]
    )


def test_a_budget_whose_key_nobody_records_is_one_warning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nuserflow_budgets =\n    Login :: Login Tme <= 2\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Login")
        @pytest.mark.userflow_budget("Frist Frame", max=1)
        def test_login(record_measurement):
            record_measurement("Login Time", 1.5)
            record_measurement("First Frame", 0.5)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    lines = [line for line in result.stdout.lines if "no test of their flow recorded" in line]
    assert lines == [
        "WARNING: budgets whose key no test of their flow recorded (a typo?): "
        "Login :: Frist Frame (a userflow_budget marker of "
        "test_a_budget_whose_key_nobody_records_is_one_warning.py::test_login); "
        "Login :: Login Tme (ini key userflow_budgets)"
    ]


@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_a_budget_whose_key_some_test_recorded_is_no_warning(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    """A module's budget marker over tests of two flows, and an ini budget whose key one test
    of its flow recorded: each checked a value, so neither is a typo, whichever worker ran
    which test."""
    pytester.makeini("[pytest]\nuserflow_budgets =\n    Login :: Login Time <= 2\n")
    pytester.makepyfile("""
        import pytest

        pytestmark = [pytest.mark.userflow("Feed"), pytest.mark.userflow_budget("FPS", min=30)]

        def test_scroll(record_measurement):
            record_measurement("FPS", 60.0)

        @pytest.mark.userflow("Login")
        def test_login(record_measurement):
            record_measurement("Login Time", 1.5)

        @pytest.mark.userflow("Login")
        def test_logout(record_measurement):
            record_measurement("Logout Time", 0.5)
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", *args)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["budgets and regressions: 2 checked, 0 not ok"])
    assert "a typo?" not in result.stdout.str()


@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_userflow_session_values_are_gated(
    pytester: pytest.Pytester, store_path, history, monkeypatch, args: list[str]
) -> None:
    """The run's own values meet the ini's budgets too: a breach is a line of the summary, the
    session record's status and message, and the run's exit status (it has no test to fail)."""
    pytester.makeini("[pytest]\nuserflow_budgets =\n    App Install :: App Size <= 50\n")
    pytester.makeconftest("""
        import os, pytest

        @pytest.fixture(scope="session")
        def app(userflow_session):
            userflow_session.name = "App Install"
            userflow_session("App Size", float(os.environ["APP_SIZE"]), units="MB")
    """)
    pytester.makepyfile("def test_opens(app):\n    pass\n")
    run = pytester.runpytest_subprocess if args else pytester.runpytest
    monkeypatch.setenv("APP_SIZE", "48.5")
    within = run("-p", "no:randomly", *args)
    monkeypatch.setenv("APP_SIZE", "60")
    over = run("-p", "no:randomly", *args)
    within.assert_outcomes(passed=1)
    assert within.ret == pytest.ExitCode.OK
    within.stdout.fnmatch_lines(["budgets and regressions: 1 checked, 0 not ok"])
    over.assert_outcomes(passed=1)
    assert over.ret == pytest.ExitCode.TESTS_FAILED
    over.stdout.fnmatch_lines(
        [
            "budgets and regressions: 1 checked, 1 not ok",
            "*userflow_session*App Install/App Size*60 MB*<= 50*over budget",
        ]
    )
    newest = history(store_path).tests()[-1]
    assert (newest["nodeid"], newest["status"], newest["status_message"]) == (
        "userflow_session",
        "Failed",
        "App Install/App Size = 60 MB is over its budget <= 50 MB",
    )
