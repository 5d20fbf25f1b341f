"""pytest-userflow's cost, measured as ratios against bare pytest in the same run.

    python benchmarks/run.py            # the full benchmark (some minutes)
    python benchmarks/run.py --smoke    # tiny sizes, one round, no warm-up: the script works
    python benchmarks/run.py --only local --rounds 30

Three sides run the same test bodies, each in a fresh process, alternating round by round:

- *bare*: ``-p no:userflow`` with a stub ``record_measurement`` that does nothing;
- *plugin*: the plugin on the local store (or HeadSpin, in that case);
- *junit*: ``-p no:userflow`` with a ``record_measurement`` that calls pytest's own
  ``record_property``, and ``--junitxml``: the built-in way to attach values to tests.

Each case gives, for wall time and for the CPU time of every process of the run (pytest and
its xdist workers), the median of each round's own ratio against bare (the two ran back to
back), its min and max, a 95% bootstrap interval, and a verdict against the goal: met,
missed, or within the noise (this many rounds cannot tell). Cases:

1. ``local``: 2,000 no-work tests x 10 measurements, in-process and under ``-n 2``;
2. ``work``: 600 tests of 5 ms each x 10 measurements;
3. ``headspin``: against the stand-in adding 50 ms to every request, 300 tests of 20 ms
   with 10 measurements and a session each; and the requests sent per test;
4. ``cli``: ``pytest-userflow measurements --key K`` and ``stats`` on 1,000,000 measurements;
5. ``memory``: peak RSS of runs of N and 4N tests (20,000 at the full size);
6. ``instructions`` (needs valgrind, not in the default set): case 1 counted by callgrind at
   N/4 and N tests, split into a fixed cost and a cost per test. A count does not move with
   what else the machine is doing; it leaves out the kernel's work (the store's writes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in HeadSpin server

STUB_CONFTEST = """
import os
import pytest

class _Bare:
    \"\"\"Stands in for the plugin's fixtures when it is disabled (-p no:userflow).\"\"\"

    @pytest.fixture
    def record_measurement(self):
        return lambda *args, **kwargs: None

    @pytest.fixture
    def userflow(self):
        class Handle:
            def attach_session(self, session_id):
                return session_id
        return Handle()

class _Junit(_Bare):
    \"\"\"pytest's own way to attach values to a test: record_property (and --junitxml).\"\"\"

    @pytest.fixture
    def record_measurement(self, record_property):
        return lambda key, value, **kwargs: record_property(key, value)

def pytest_configure(config):
    if not config.pluginmanager.hasplugin("userflow"):
        side = _Junit() if os.environ.get("BENCH_SIDE") == "junit" else _Bare()
        config.pluginmanager.register(side, "bare-userflow-stub")
        # as a suite that had never used the plugin would: no unknown-marker warning
        config.addinivalue_line("markers", "userflow(name): the flow")
"""

# Prints the process's peak RSS (KiB) after the run. Linux's VmHWM where there is one:
# ru_maxrss carries the parent's peak over fork and exec, and this script's parent is big.
RUNNER = """
import resource, sys, pytest
rc = pytest.main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    pass
print("MAXRSS", peak, file=sys.stderr)
sys.exit(rc)
"""


def make_suite(
    folder: Path, tests: int, measurements: int, work: float, sessions: list[str] | None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conftest.py").write_text(STUB_CONFTEST)
    attach = "userflow.attach_session(SESSIONS[n])" if sessions else "pass"
    (folder / "test_bench.py").write_text(
        textwrap.dedent(f"""
        import time
        import pytest
        SESSIONS = {sessions or []!r}
        pytestmark = pytest.mark.userflow("Bench")

        @pytest.mark.parametrize("n", range({tests}))
        def test_case(record_measurement, userflow, n):
            {f"time.sleep({work!r})" if work else "pass"}
            {attach}
            for k in range({measurements}):
                record_measurement("key%d" % k, n + k * 0.5, units="ms")
    """)
    )


# Every side as a plain pytest install runs: the development extras' pytest-randomly
# (it reorders) and pytest-rerunfailures (it wraps every test) are left out.
PLAIN = ["-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:rerunfailures"]
SIDES = {
    "bare": (["-p", "no:userflow"], {}),
    "plugin": (["--userflow-backend", "local"], {}),
    "junit": (["-p", "no:userflow", "--junitxml", "junit.xml"], {"BENCH_SIDE": "junit"}),
}


def _env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = dict(os.environ)
    # As users run: compiled (and assertion-rewritten) modules cached between runs, unless
    # the case asks for none (as Docker images often run).
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**full_env, **(env or {})}


def run_pytest(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in KiB, CPU seconds) of one pytest run in a fresh process.

    The CPU time is that of every process the run started and waited for (xdist's
    workers): this script's children's, before and after."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "-q", *PLAIN, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=_env(env),
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(
            f"pytest failed in {folder}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    said = dict(line.split(" ", 1) for line in proc.stderr.splitlines() if line[:6] == "MAXRSS")
    return wall, int(said["MAXRSS"]), cpu


def make_unused_suite(folder: Path, tests: int) -> None:
    """A suite that never heard of the plugin: no fixture, marker or option of ours."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_plain.py").write_text(
        textwrap.dedent(f"""
        import pytest

        @pytest.mark.parametrize("n", range({tests}))
        def test_plain(n):
            assert n >= 0
    """)
    )


#: The installed-but-unused sides: the plugin loaded through its entry point and not used,
#: against the same pytest with it blocked (-p no:userflow: its modules are never imported).
UNUSED_SIDES = {"bare": (["-p", "no:userflow"], {}), "installed": ([], {})}


def no_bytecode(work_dir: Path) -> dict[str, str]:
    """No bytecode cache read or written, ours and pytest's rewritten modules' alike (an
    empty cache folder): a ceiling on a Docker image's start, which ships the standard
    library's compiled but not pytest's rewrite of a plugin."""
    return {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(work_dir / "no-pycache")}


def median_interval(
    values: list[float], level: float = 0.95, resamples: int = 4000
) -> tuple[float, float]:
    """A bootstrap interval for the median of *values*: the middle *level* of the medians of
    *resamples* samples drawn with replacement (seeded: the same values give the same
    interval). On a machine whose runs vary by several percent, it says whether a ratio is
    above or below a goal, or whether this many rounds cannot tell."""
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    cut = round((1 - level) / 2 * resamples)
    return medians[cut], medians[resamples - 1 - cut]


def verdict(interval: tuple[float, float], target: float) -> str:
    """The verdict on a ratio's *interval*: met when it is all at or below *target*, missed
    when it is all above, else within the noise (this many rounds cannot tell)."""
    if interval[1] <= target:
        return "met"
    return "missed" if interval[0] > target else "within the noise"


def _ratios(side: list[float], bare: list[float], goal: float | None) -> dict[str, Any]:
    paired = [s / b for s, b in zip(side, bare, strict=True)]
    interval = median_interval(paired)
    out = {
        "ratio": statistics.median(paired),
        "min": min(paired),
        "max": max(paired),
        "interval": interval,
    }
    if goal is not None:
        out["goal"] = goal
        out["verdict"] = verdict(interval, goal)
    return out


def compare(
    folder: Path,
    rounds: int,
    sides: dict[str, tuple[list[str], dict[str, str]]],
    goals: dict[str, float | None],
    extra: list[str] = (),  # type: ignore[assignment]
    reset: Path | None = None,
    warm_up: bool = True,
) -> dict[str, Any]:
    """Run every side once a round, in an order that turns each round; each side's wall
    and CPU against bare's of the same round."""
    names = list(sides)
    for name in names if warm_up else ():  # fill the bytecode caches
        run_pytest(folder, *sides[name][0], *extra, env=sides[name][1])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if reset is not None and reset.exists():
                shutil.rmtree(reset)
            w, _, c = run_pytest(folder, *sides[name][0], *extra, env=sides[name][1])
            wall[name].append(w)
            cpu[name].append(c)
    out: dict[str, Any] = {"rounds": rounds, "bare_wall_s": statistics.median(wall["bare"])}
    out["bare_cpu_s"] = statistics.median(cpu["bare"])
    for name in names:
        if name == "bare":
            continue
        out[name] = {
            "wall_s": statistics.median(wall[name]),
            "cpu_s": statistics.median(cpu[name]),
            "wall": _ratios(wall[name], wall["bare"], goals.get(f"{name} wall")),
            "cpu": _ratios(cpu[name], cpu["bare"], goals.get(f"{name} cpu")),
            "wall_added_ms": _added(wall[name], wall["bare"], goals.get(f"{name} wall ms")),
            "cpu_added_ms": _added(cpu[name], cpu["bare"], goals.get(f"{name} cpu ms")),
        }
    return out


def _added(side: list[float], bare: list[float], goal: float | None) -> dict[str, Any]:
    """Each round's time over bare's, in milliseconds: a fixed cost (a process's start-up)
    reads better so than as a ratio."""
    paired = [(s - b) * 1000 for s, b in zip(side, bare, strict=True)]
    interval = median_interval(paired)
    out = {"ms": statistics.median(paired), "min": min(paired), "max": max(paired)}
    out["interval"] = interval
    if goal is not None:
        out["goal"] = goal
        out["verdict"] = verdict(interval, goal)
    return out


def case_local(
    work_dir: Path, tests: int, rounds: int, workers: int, warm_up: bool = True
) -> dict[str, Any]:
    folder = work_dir / f"local-{workers}"
    make_suite(folder, tests, 10, 0.0, None)
    extra = ["-n", str(workers)] if workers else []
    result = compare(
        folder,
        rounds,
        SIDES,
        {"plugin wall": 1.10, "plugin cpu": 1.10},
        extra=extra,
        reset=folder / ".userflow",
        warm_up=warm_up,
    )
    where = f"under -n {workers}" if workers else "in-process"
    return {"case": f"local store, {tests} no-work tests x 10 measurements, {where}", **result}


def case_unused(
    work_dir: Path, tests: int, rounds: int, bytecode: bool, warm_up: bool = True
) -> dict[str, Any]:
    """The plugin installed and unused: a suite that records nothing, with the plugin loaded
    through its entry point against the same pytest with it blocked; with the bytecode
    cache (pytest rewrites an entry-point plugin's modules at each start without it)."""
    folder = work_dir / f"unused-{bytecode}"
    make_unused_suite(folder, tests)
    env = {} if bytecode else no_bytecode(work_dir)
    sides = {name: (args, env) for name, (args, _) in UNUSED_SIDES.items()}
    goal = 3.0 if bytecode else 15.0
    result = compare(
        folder,
        rounds,
        sides,
        {"installed wall ms": goal, "installed cpu ms": goal},
        warm_up=warm_up,
    )
    cache = "bytecode cached" if bytecode else "no bytecode cache"
    assert not (folder / ".userflow").exists(), "a run that records nothing made a store"
    return {"case": f"installed, unused: {tests} plain tests, {cache}", **result}


def case_work(work_dir: Path, tests: int, rounds: int, warm_up: bool = True) -> dict[str, Any]:
    folder = work_dir / "work"
    make_suite(folder, tests, 10, 0.005, None)
    result = compare(
        folder,
        rounds,
        SIDES,
        {"plugin wall": 1.03, "plugin cpu": 1.10},
        reset=folder / ".userflow",
        warm_up=warm_up,
    )
    return {"case": f"local store, {tests} tests of 5 ms x 10 measurements", **result}


def case_headspin(
    work_dir: Path, tests: int, rounds: int, latency: float, warm_up: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    from headspin_server import StandInServer

    folder = work_dir / "headspin"
    sessions = [str(uuid.uuid4()) for _ in range(tests)]
    make_suite(folder, tests, 10, 0.02, sessions)
    with StandInServer(token="bench-token") as server:
        for sid in sessions:
            server.state.add_session(sid)
        server.faults.latency = latency
        env = {"HEADSPIN_API_TOKEN": "bench-token", "HEADSPIN_API_URL": server.url}
        sides = {"bare": SIDES["bare"], "plugin": ([], env)}
        result = compare(
            folder,
            rounds,
            sides,
            {"plugin wall": 1.10},
            reset=folder / ".userflow",
            warm_up=warm_up,
        )
        plugin_runs = rounds + (1 if warm_up else 0)  # one per round, and the warm-up
        requests_v0 = len(server.state.requests)
        puts = sum(1 for m, p, _, _ in server.state.requests if m == "PUT")
        # one more run with the legacy API, counted alone
        server.state.requests.clear()
        shutil.rmtree(folder / ".userflow", ignore_errors=True)
        run_pytest(folder, "--userflow-api", "legacy", env=env)
        requests_legacy = len(server.state.requests)
        delivered = len(server.state.measurements_of("Bench"))
    counts = {
        "case": "requests per test",
        "v0_with_session": (requests_v0 - puts) / (tests * plugin_runs),
        "flow_puts_per_process": puts / plugin_runs,
        "legacy": requests_legacy / tests,
        "goal": "v0 2, legacy 1, PUT once per flow per process",
        "measurements_on_server": delivered,
    }
    case = {
        "case": f"HeadSpin, +{latency * 1000:.0f} ms per request, {tests} tests x 20 ms work x 10 "
        "measurements, sessions",
        **result,
    }
    return case, counts


#: The runs a store holds for the instructions case's run with history (the units' check looks
#: back on five).
HISTORY_RUNS = 5


def count_instructions(folder: Path, *args: str, env: dict[str, str] | None = None) -> int:
    """Instructions the tests' process ran (valgrind's callgrind)."""
    out = folder / f"callgrind-{uuid.uuid4().hex}.out"
    try:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "pytest",
                "-q",
                *PLAIN,
                *args,
            ],
            cwd=folder,
            capture_output=True,
            # one hash seed: string hashing otherwise moves a count by 0.1-0.2% between runs
            env=_env({"PYTHONHASHSEED": "0", **(env or {})}),
            check=True,
        )
        totals = [line for line in out.read_text().splitlines() if line.startswith("summary:")]
        return int(totals[0].split()[1])
    finally:
        out.unlink(missing_ok=True)


def case_instructions(work_dir: Path, tests: int) -> dict[str, Any]:
    """Case 1 in instructions: the plugin's and bare pytest's at N/4 and N tests (run side by
    side, one a core), so the plugin's cost splits into a fixed part and a part per test."""
    case = f"local store in instructions, {tests} tests x 10 measurements, no work"
    if shutil.which("valgrind") is None:
        return {"case": case, "skipped": "valgrind is not installed"}
    sizes = (tests // 4, tests)
    runs = []
    for n in sizes:
        # plugin and bare in folders of their own: the two may run at the same time
        for side in ("plugin", "bare"):
            args = SIDES[side][0]
            folder = work_dir / f"instructions-{side}-{n}"
            make_suite(folder, n, 10, 0.0, None)
            run_pytest(folder, *args)  # warm-up: fill the bytecode caches
            shutil.rmtree(folder / ".userflow", ignore_errors=True)
            runs.append((side, n, folder, args))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(
            zip(
                [(side, n) for side, n, _, _ in runs],
                pool.map(lambda run: count_instructions(run[2], *run[3]), runs),
                strict=True,
            )
        )
    small, big = sizes
    per_test = (
        (counts["plugin", big] - counts["plugin", small])
        - (counts["bare", big] - counts["bare", small])
    ) / (big - small)
    fixed = counts["plugin", small] - counts["bare", small] - per_test * small
    # A store that already holds the runs a run's end looks back on (the units' check): the
    # same run again, after HISTORY_RUNS others in its store.
    folder = work_dir / f"instructions-plugin-{big}"
    for _ in range(HISTORY_RUNS):
        run_pytest(folder, *SIDES["plugin"][0])
    with_history = count_instructions(folder, *SIDES["plugin"][0])
    return {
        "case": case,
        "goal": "none: reported, per test and per run",
        "ratio": counts["plugin", big] / counts["bare", big],
        "plugin_instructions": counts["plugin", big],
        "bare_instructions": counts["bare", big],
        "bare_per_test": (counts["bare", big] - counts["bare", small]) / (big - small),
        "plugin_fixed": fixed,
        "plugin_per_test": per_test,
        f"plugin_per_test_after_{HISTORY_RUNS}_runs": per_test
        + (with_history - counts["plugin", big]) / big,
    }


def case_unused_instructions(work_dir: Path, tests: int) -> dict[str, Any]:
    """The installed-but-unused case in instructions: the plugin loaded and unused against
    it blocked, with the bytecode cache and without it."""
    case = f"installed, unused, in instructions: {tests} plain tests"
    if shutil.which("valgrind") is None:
        return {"case": case, "skipped": "valgrind is not installed"}
    folder = work_dir / "unused-instructions"
    make_unused_suite(folder, tests)
    runs = []
    for env in ({}, no_bytecode(work_dir)):
        for side, (args, _) in UNUSED_SIDES.items():
            run_pytest(folder, *args)  # fill the bytecode caches (left alone without them)
            runs.append((side, bool(env), args, env))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(pool.map(lambda run: count_instructions(folder, *run[2], env=run[3]), runs))
    by = {(side, nocache): n for (side, nocache, _, _), n in zip(runs, counts, strict=True)}
    return {
        "case": case,
        "goal": "none: reported",
        "bare_instructions": by["bare", False],
        "installed_added": by["installed", False] - by["bare", False],
        "bare_instructions_no_bytecode": by["bare", True],
        "installed_added_no_bytecode": by["installed", True] - by["bare", True],
    }


def case_cli(work_dir: Path, rows: int, smoke: bool) -> dict[str, Any]:
    from pytest_userflow.model import Measurement, RunInfo, TestRecord
    from pytest_userflow.storage import open_store

    path = work_dir / "cli" / "store.db"
    store = open_store(path)
    rng = random.Random(1)
    keys = [f"Key {i}" for i in range(100)]
    flows = [f"Flow {i}" for i in range(10)]
    per_event = 20
    start_ts = time.time() - 90 * 86400
    for e in range(rows // per_event):  # each test its own transaction, as the plugin writes
        run = RunInfo(run_id=f"run{e // 100}", started_at=start_ts + e * 7.0, host="bench")
        record = TestRecord(f"t::{e}", flows[e % len(flows)])
        record.measurements = [
            Measurement(k, rng.random() * 1000, None, "ms") for k in rng.sample(keys, per_event)
        ]
        record.end("Passed", None)
        record.event_ts = start_ts + e * 7.0
        store.add_test(record, run)
    store.close()
    key = "Key 7"
    expected = None
    timings = {}
    for command in (["measurements", "--key", key, "--format", "csv"], ["stats", "--key", key]):
        best = []
        for _ in range(1 if smoke else 5):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest_userflow", "--store", str(path), *command],
                capture_output=True,
                text=True,
                check=False,
            )
            best.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"pytest-userflow {' '.join(command)} failed: {proc.stderr}")
            if command[0] == "measurements":
                expected = len(proc.stdout.splitlines()) - 1
        timings[command[0]] = statistics.median(best)
    return {
        "case": f"CLI on a store of {rows} measurements ({expected} rows for one key)",
        "goal": "<= 0.5 s each",
        "measurements_s": timings["measurements"],
        "stats_s": timings["stats"],
    }


def case_report(
    work_dir: Path, runs: int, keys: int, tests: int, smoke: bool
) -> list[dict[str, Any]]:
    """``pytest-userflow report`` on a store of RUNS runs of TESTS tests, each recording KEYS
    keys, with the gate's regression check on every value of the last 10 runs: the time of the
    whole command (its process, the bundle of the charts included) and the file's size."""
    from pytest_userflow.gate import Check
    from pytest_userflow.model import Measurement, RunInfo, TestRecord
    from pytest_userflow.storage import open_store

    path = work_dir / "report" / "store.db"
    store = open_store(path)
    rng = random.Random(2)
    start_ts = time.time() - runs * 3600
    for r in range(runs):
        run = RunInfo(run_id=f"{r:04d}" + "0" * 12, started_at=start_ts + r * 3600, host="bench")
        for t in range(tests):
            record = TestRecord(f"test_app.py::test_case[{t}]", "App")
            values = [100 * (1 + k % 7) * rng.lognormvariate(0, 0.05) for k in range(keys)]
            record.measurements = [
                Measurement(f"Key {k}", v, "Custom Metrics", "ms") for k, v in enumerate(values)
            ]
            if r >= runs - 10:
                record.checks = [
                    Check(record.nodeid, "App", f"Key {k}", v, "ms", "regression",
                          "baseline", "ok", 1.0, 5.0, v * 0.85, v * 1.15, v)
                    for k, v in enumerate(values)
                ]  # fmt: skip
            record.end("Passed", None)
            record.event_ts = start_ts + r * 3600 + t
            store.add_test(record, run)
        store.finish_run(run.run_id, "passed")
    store.close()
    out = []
    for last in sorted({min(30, runs), runs}):
        html = work_dir / "report" / f"last{last}.html"
        times = []
        for _ in range(1 if smoke else 5):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest_userflow", "--store", str(path), "report",
                 "--last", str(last), "-o", str(html)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"pytest-userflow report failed: {proc.stderr}")
        out.append(
            {
                "case": f"report of {last} of {runs} runs x {keys} keys x {tests} tests",
                "goal": "<= 3 s, <= 5 MB" if last == runs else "reported",
                "wall_s": statistics.median(times),
                "size_mb": html.stat().st_size / 1e6,
            }
        )
    return out


def case_memory(work_dir: Path, small: int) -> dict[str, Any]:
    """Peak RSS of N and 4N tests, the plugin's and bare's: what each test costs the run's
    memory (its report's user properties, which pytest keeps to the end of the run)."""
    out: dict[str, Any] = {
        "case": f"peak memory, {small} vs {small * 4} tests x 10 measurements",
        "goal": "reported: the plugin's growth with the tests, beyond bare pytest's",
    }
    for tests in (small, small * 4):
        folder = work_dir / f"mem{tests}"
        make_suite(folder, tests, 10, 0.0, None)
        out[f"rss_plugin_{tests}_mib"] = run_pytest(folder, *SIDES["plugin"][0])[1] / 1024
        out[f"rss_bare_{tests}_mib"] = run_pytest(folder, *SIDES["bare"][0])[1] / 1024
    growth_plugin = out[f"rss_plugin_{small * 4}_mib"] - out[f"rss_plugin_{small}_mib"]
    growth_bare = out[f"rss_bare_{small * 4}_mib"] - out[f"rss_bare_{small}_mib"]
    out["growth_plugin_minus_bare_mib"] = growth_plugin - growth_bare
    out["per_test_kib"] = (growth_plugin - growth_bare) * 1024 / (small * 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round, no warm-up: the script works"
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds per case (default 10)")
    cases = ["unused", "local", "work", "headspin", "cli", "report", "memory", "instructions"]
    parser.add_argument(
        "--only",
        nargs="*",
        default=cases[:-1],
        choices=cases,
        help="the cases to run (default: all but instructions, which needs valgrind)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    smoke = args.smoke
    rounds = 1 if smoke else args.rounds
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="userflow-bench-") as tmp:
        work_dir = Path(tmp)
        if "unused" in args.only:
            for bytecode in (True, False):
                results.append(
                    case_unused(work_dir, 20 if smoke else 200, rounds, bytecode, not smoke)
                )
        if "local" in args.only:
            for workers in (0, 2):
                results.append(
                    case_local(work_dir, 20 if smoke else 2000, rounds, workers, not smoke)
                )
        if "work" in args.only:
            results.append(case_work(work_dir, 10 if smoke else 600, rounds, not smoke))
        if "headspin" in args.only:
            results += case_headspin(work_dir, 5 if smoke else 300, rounds, 0.05, not smoke)
        if "cli" in args.only:
            results.append(case_cli(work_dir, 2_000 if smoke else 1_000_000, smoke))
        if "report" in args.only:
            results += case_report(work_dir, *((5, 5, 4) if smoke else (100, 50, 20)), smoke)
        if "memory" in args.only:
            results.append(case_memory(work_dir, 25 if smoke else 5000))
        if "instructions" in args.only:
            results.append(case_unused_instructions(work_dir, 20 if smoke else 200))
            results.append(case_instructions(work_dir, 40 if smoke else 2000))
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()}"
    )
    print(f"machine: {machine}")
    for result in results:
        print(json.dumps(result, default=lambda x: round(x, 4) if isinstance(x, float) else str(x)))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
