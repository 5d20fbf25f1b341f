"""pytest-xdist: one worker per device, one summary and one report for the run."""

from __future__ import annotations

import pytest
from conftest import EVERY_ROW, pick

pytest.importorskip("xdist")

DEVICE_SUITE = """
    import pytest
    pytestmark = pytest.mark.userflow("Feed")

    @pytest.mark.parametrize("n", range(6))
    def test_scroll(record_measurement, userflow, userflow_device, n):
        assert userflow.device == userflow_device is not None
        record_measurement("Frame Time", 10 + n, units="ms")
"""
DEVICES = ["R58M41@host-a", "00008030-ABC@host-b"]


def _device_args(devices=DEVICES) -> list[str]:
    return [arg for d in devices for arg in ("--userflow-device", d)]


# With a pytest_userflow_flushed hook every test goes through an EventRecord; without one,
# the quick way (Recorder.keep): both must give the same store and summary.
@pytest.mark.parametrize("flushed_hook", [True, False], ids=["event", "quick"])
def test_each_worker_drives_its_device_and_the_controller_merges(
    pytester: pytest.Pytester, store_path, history, read_report, flushed_hook: bool
) -> None:
    pytester.makepyfile(DEVICE_SUITE)
    if flushed_hook:
        pytester.makeconftest("def pytest_userflow_flushed(item, result):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-n", "2", *_device_args(), "--userflow-report", "report.json"
    )
    result.assert_outcomes(passed=6)
    tests = history(store_path).tests()
    assert sorted(set(pick(tests, "worker", "device"))) == [
        ("gw0", DEVICES[0]),
        ("gw1", DEVICES[1]),
    ]
    assert len(tests) == 6
    assert result.stdout.str().count("== userflow ==") == 1
    result.stdout.fnmatch_lines(
        [
            "flow 'Feed': 6 tests (6 Passed); 6 measurements: 6 stored locally",
            "  key         device               n  min  median  max  units",
            "  Frame Time  00008030-ABC@host-b  *ms",
            "  Frame Time  R58M41@host-a        *ms",
        ]
    )
    report = read_report()
    assert len(report["tests"]) == 6
    assert {(t["worker"], t["device"]) for t in report["tests"]} == {
        ("gw0", DEVICES[0]),
        ("gw1", DEVICES[1]),
    }
    assert len({t["nodeid"] for t in report["tests"]}) == 6
    assert len({t["run_id"] for t in history(store_path).tests()}) == 1


def test_several_devices_without_n_start_one_worker_each(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_SUITE)
    result = pytester.runpytest_subprocess(*_device_args())
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["created: 2/2 workers"])


def test_devices_from_ini(pytester: pytest.Pytester, store_path, history) -> None:
    pytester.makeini("[pytest]\nuserflow_devices =\n    R58M41@host-a\n    00008030-ABC@host-b\n")
    pytester.makepyfile(DEVICE_SUITE)
    pytester.runpytest_subprocess().assert_outcomes(passed=6)
    assert len({t["device"] for t in history(store_path).tests()}) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "3", *_device_args()], "-n asks for 3 xdist worker(s) but 2 device(s) were given*"),
        (
            ["-n", "2", *_device_args(DEVICES[:1])],
            "-n asks for 2 xdist worker(s) but 1 device(s) were given*",
        ),
        (["-n", "0", *_device_args()], "2 devices were given but xdist runs no workers (-n 0)*"),
        (
            ["-p", "no:xdist", *_device_args()],
            "2 devices were given*pytest-xdist is not available*pip install pytest-xdist*",
        ),
    ],
    ids=["more-workers", "fewer-devices", "n0", "no-xdist"],
)
def test_worker_and_device_counts_must_match(pytester: pytest.Pytester, args, message) -> None:
    pytester.makepyfile(DEVICE_SUITE)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_one_device_runs_in_process_without_xdist(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile(DEVICE_SUITE)
    pytester.runpytest_subprocess("-p", "no:xdist", *_device_args(DEVICES[:1])).assert_outcomes(
        passed=6
    )
    assert set(pick(history(store_path).tests(), "worker", "device")) == {(None, DEVICES[0])}


def test_workers_upload_their_own_tests_into_one_flow(pytester: pytest.Pytester, hs_env) -> None:
    pytester.makepyfile(DEVICE_SUITE)
    result = pytester.runpytest_subprocess("-n", "2", *_device_args())
    result.assert_outcomes(passed=6)
    assert len(hs_env.state.flows) == 1
    puts = [r for r in hs_env.state.requests if r[0] == "PUT"]
    assert 1 <= len(puts) <= 2  # at most once per worker process
    events = list(hs_env.state.events.values())
    assert len(events) == 6 and {e["status"] for e in events} == {"Passed"}
    assert {e["device_id"] for e in events} == {"R58M41", "00008030-ABC"}
    assert len(hs_env.state.measurements_of("Feed")) == 6
    result.stdout.fnmatch_lines(["flow 'Feed': 6 tests (6 Passed); 6 measurements: 6 uploaded"])


def test_a_worker_that_dies_loses_none_of_its_finished_tests(
    pytester: pytest.Pytester, store_path, history, read_report
) -> None:
    pytester.makepyfile("""
        import os, pytest
        pytestmark = pytest.mark.userflow("Crash")

        @pytest.mark.parametrize("n", range(4))
        def test_ok(record_measurement, n):
            record_measurement("n", n)

        def test_dies(record_measurement, worker_id):
            record_measurement("lost", 1)
            os._exit(3)
    """)
    result = pytester.runpytest_subprocess(
        "-n", "2", "--max-worker-restart", "0", "--userflow-report", "report.json"
    )
    finished = [t["nodeid"] for t in history(store_path).tests() if "test_ok" in t["nodeid"]]
    # the JSON report agrees with the store, the dead worker's finished tests included
    report = read_report()
    assert sorted(t["nodeid"] for t in report["tests"]) == sorted(finished)
    assert all(t["status"] == "Passed" for t in report["tests"])
    assert report["warnings"]["crashed_workers"]
    passed = result.stdout.str().count("PASSED") or result.parseoutcomes().get("passed", 0)
    assert len(finished) == passed
    keys = {m["key_name"] for m in history(store_path).measurements(EVERY_ROW)}
    assert "lost" not in keys
    result.stdout.fnmatch_lines(["worker gw* died: its finished tests are in its local store*"])
    # the summary counts the dead worker's finished tests too (read back from the store)
    result.stdout.fnmatch_lines([f"flow 'Crash': {len(finished)} tests ({len(finished)} Passed)*"])


def test_the_worker_started_in_place_of_a_dead_one_drives_its_device(
    pytester: pytest.Pytester, store_path, history
) -> None:
    """xdist names the replacement gw2, which matches no device by its number: it takes the
    device the dead worker left, so its tests are not kept as having none."""
    pytester.makepyfile("""
        import os, time, pytest
        pytestmark = pytest.mark.userflow("Crash")

        def test_dies(worker_id):
            os._exit(3)

        @pytest.mark.parametrize("n", range(60))
        def test_ok(record_measurement, userflow_device, worker_id, n):
            time.sleep(0.05)
            record_measurement("n", n)
    """)
    result = pytester.runpytest_subprocess(
        "-n", "2", *_device_args(), "--max-worker-restart", "1", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=60, failed=1)
    tests = history(store_path).tests()
    assert len(tests) == 60
    devices = dict(pick(tests, "worker", "device"))
    assert "gw2" in devices, devices
    assert devices["gw2"] in DEVICES and sorted(set(devices.values())) == sorted(DEVICES)


def test_four_workers_write_thousands_of_measurements_into_one_store(
    pytester: pytest.Pytester, store_path, history
) -> None:
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.userflow("Load")

        @pytest.mark.parametrize("n", range(240))
        def test_many(record_measurement, n):
            for k in range(20):
                record_measurement(f"k{k}", n * 100 + k)
    """)
    devices = [f"device{i}@host" for i in range(4)]
    result = pytester.runpytest_subprocess("-n", "4", *_device_args(devices))
    result.assert_outcomes(passed=240)
    assert "locked" not in result.stdout.str() + result.stderr.str()
    values = pick(history(store_path).measurements(EVERY_ROW), "value")
    assert (len(values), len(set(values))) == (4800, 4800)
    workers = sorted(set(pick(history(store_path).tests(), "worker", "device")))
    assert workers == [(f"gw{i}", f"device{i}@host") for i in range(4)]
    result.stdout.fnmatch_lines(
        ["flow 'Load': 240 tests (240 Passed); 4800 measurements: 4800 stored locally"]
    )


def test_n_auto_must_match_the_devices_too(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    pytester.makepyfile(DEVICE_SUITE)
    result = pytester.runpytest_subprocess("-n", "auto", *_device_args())
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: -n asks for 3 xdist worker(s) but 2 device(s) were given*"]
    )


def test_the_summary_median_is_of_every_workers_values(pytester: pytest.Pytester) -> None:
    """Each worker hands its values to the controller, which takes the median of all of
    them, not a mean of the workers' medians: the same figure as the whole run's."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.userflow("Pool")
        @pytest.mark.parametrize("value", [1, 2, 3, 4, 100, 1000])
        def test_value(record_measurement, value):
            record_measurement("Wait", value, units="ms")
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=6)
    result.stdout.re_match_lines([r"  Wait\s+6\s+1\s+3\.5\s+1000\s+ms"])


def test_xdist_starting_workers_for_a_config_never_configured_is_left_alone(
    pytester: pytest.Pytester,
) -> None:
    # pytest-xdist's own tests start workers from a config that was parsed and never
    # configured (test_proxy_gateway_setup_nodes): our xdist hooks must not need our state.
    pytester.makepyfile(
        """
        from xdist.workermanage import NodeManager

        pytest_plugins = ["pytester"]

        def test_setup_nodes_on_a_parsed_config(pytester):
            config = pytester.parseconfig("--tx", "popen")
            manager = NodeManager(config)
            try:
                assert len(manager.setup_nodes(putevent=None)) == 1
            finally:
                manager.teardown_nodes()
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def test_dist_given_without_workers_records_in_process(
    pytester: pytest.Pytester, store_path, history
) -> None:
    # An ini's "--dist loadgroup" with no -n runs the tests in this process: it is no
    # xdist controller, and its tests are recorded here.
    pytester.makeini("[pytest]\naddopts = --dist loadgroup\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.userflow("Local")
        def test_it(record_measurement):
            record_measurement("k", 1.0)
    """)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)
    assert [t["flow"] for t in history(store_path).tests()] == ["Local"]


def test_a_worker_that_dies_in_a_suite_that_records_nothing_starts_nothing(
    pytester: pytest.Pytester, git_calls
) -> None:
    # pytest-xdist's own suite crashes workers on purpose: with nothing recorded and nothing
    # of ours set, the controller makes no run (no git, no store) and says nothing.
    calls = git_calls
    pytester.makepyfile("""
        import os

        def test_ok():
            pass

        def test_dies():
            os._exit(3)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--max-worker-restart", "0")
    assert not calls.exists()
    assert not (pytester.path / ".userflow").exists()
    said = [line for line in result.outlines if "userflow" in line]
    assert [line for line in said if not line.startswith("plugins:")] == []
