"""pytest-userflow's cost, measured as ratios against bare pytest in the same run.

    python benchmarks/run.py            # the full benchmark (a few minutes)
    python benchmarks/run.py --smoke    # tiny sizes: shows the script works (CI runs this)

Bare pytest is ``-p no:userflow`` with a stub ``record_measurement`` that does nothing, so both
sides run the same test bodies. Plugin and bare runs alternate (A/B, B/A, ...) and medians
are reported with min and max, and the median of each round's own ratio (its two runs were
back to back: the steadier figure on a noisy machine), with a 95% interval for it and a
verdict against the target (met, missed, or within the noise). Cases:

1. local store, N tests x 10 measurements, tests doing no work: wall time ratio;
2. HeadSpin backend against the stand-in adding 50 ms to every request, tests doing 20 ms of
   work with 10 measurements and a session each: wall time ratio (network hidden?);
3. requests per test (v0 with a session, legacy) and flow PUTs per process;
4. ``pytest-userflow measurements --key K`` and ``stats`` on a store of 1,000,000 measurements;
5. peak memory (max RSS) of runs of N and 4N tests, with and without the plugin;
6. ``--only instructions`` (needs valgrind): case 1 counted in instructions by callgrind,
   at N/4 and N tests, split into a fixed cost and a cost per test. A count does not move
   with what else the machine is doing, where the wall time of case 1 moves by several
   percent from one run to the next; it leaves out the kernel's work (the journal's write)
   and the folder process, and says nothing of caches.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import random
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

STUB_CONFTEST = '''
import pytest

class _Bare:
    """Stands in for the plugin's fixtures when it is disabled (-p no:userflow)."""

    @pytest.fixture
    def record_measurement(self):
        return lambda *args, **kwargs: None

    @pytest.fixture
    def userflow(self):
        class Handle:
            def attach_session(self, session_id):
                return session_id
        return Handle()

def pytest_configure(config):
    if not config.pluginmanager.hasplugin("userflow"):
        config.pluginmanager.register(_Bare(), "bare-userflow-stub")
        # as a suite that had never used the plugin would: no unknown-marker warning
        config.addinivalue_line("markers", "userflow(name): the flow")
'''

# Prints the process's own peak RSS (KiB) after the run, and the CPU seconds it and its
# children (the folder) used. Linux's VmHWM where there is one:
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
cpu = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print("CPU", sum(r.ru_utime + r.ru_stime for r in cpu), file=sys.stderr)
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


# Both sides as a plain pytest install runs: the development extras' pytest-randomly
# (it reorders) and pytest-rerunfailures (it wraps every test) are left out.
PLAIN = ["-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:rerunfailures"]
BARE = ["-p", "no:userflow"]
LOCAL = ["--userflow-backend", "local"]


def _env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = {**os.environ, **(env or {})}
    # As users run: compiled (and assertion-rewritten) modules cached between runs.
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    return full_env


def run_pytest(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in KiB, CPU seconds) of one pytest run in a fresh process."""
    full_env = _env(env)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "-q", *PLAIN, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"pytest failed in {folder}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    said = dict(
        line.split(" ", 1) for line in proc.stderr.splitlines() if line[:4] in ("MAXR", "CPU ")
    )
    return wall, int(said["MAXRSS"]), float(said["CPU"])


def median_interval(
    values: list[float], level: float = 0.95, resamples: int = 4000
) -> tuple[float, float]:
    """A bootstrap interval for the median of *values*: the middle *level* of the medians of
    *resamples* samples drawn with replacement (seeded: the same values give the same
    interval). On a machine whose runs vary by several percent, it says whether a ratio is
    above or below a target, or whether this many rounds cannot tell."""
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


def ab(
    folder: Path,
    rounds: int,
    plugin_args: list[str],
    env: dict[str, str] | None = None,
    reset: Path | None = None,
) -> dict[str, Any]:
    """Alternate plugin and bare runs; medians, min and max of each, and the ratio of medians."""
    times: dict[str, list[float]] = {"plugin": [], "bare": []}
    cpu: dict[str, list[float]] = {"plugin": [], "bare": []}
    for args in (plugin_args, BARE):  # warm-up: fill the bytecode caches
        run_pytest(folder, *args, env=env)
    for i in range(rounds):
        order = ("plugin", "bare") if i % 2 == 0 else ("bare", "plugin")
        for side in order:
            if reset is not None and reset.exists():
                shutil.rmtree(reset)
            args = plugin_args if side == "plugin" else BARE
            wall, _, seconds = run_pytest(folder, *args, env=env)
            times[side].append(wall)
            cpu[side].append(seconds)
    med = {side: statistics.median(values) for side, values in times.items()}
    # Each round's plugin run over its own bare run: the two ran back to back, so a machine
    # that slows down for a while slows both, where medians of the sides can catch it apart.
    paired = [p / b for p, b in zip(times["plugin"], times["bare"], strict=True)]
    return {
        "plugin_median": med["plugin"],
        "bare_median": med["bare"],
        "ratio": med["plugin"] / med["bare"],
        "ratio_paired": statistics.median(paired),
        "ratio_paired_min": min(paired),
        "ratio_paired_max": max(paired),
        # 95% of the rounds' medians resampled: where the paired ratio lies, as far as this
        # many rounds can tell
        "ratio_paired_interval": median_interval(paired),
        # CPU seconds of pytest and its children (the folder process): the work, which a
        # busy machine disturbs less than the wall time
        "cpu_plugin_median": statistics.median(cpu["plugin"]),
        "cpu_bare_median": statistics.median(cpu["bare"]),
        "cpu_ratio": statistics.median(cpu["plugin"]) / statistics.median(cpu["bare"]),
        "plugin_min": min(times["plugin"]),
        "plugin_max": max(times["plugin"]),
        "bare_min": min(times["bare"]),
        "bare_max": max(times["bare"]),
        "rounds": rounds,
    }


def case_local(work_dir: Path, tests: int, rounds: int) -> dict[str, Any]:
    folder = work_dir / "local"
    make_suite(folder, tests, 10, 0.0, None)
    result = ab(folder, rounds, LOCAL, reset=folder / ".userflow")
    return {
        "case": f"local store, {tests} tests x 10 measurements, no work",
        "target": "<= 1.05x",
        "verdict": verdict(result["ratio_paired_interval"], 1.05),
        **result,
    }


def case_headspin(
    work_dir: Path, tests: int, rounds: int, latency: float
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
        result = ab(folder, rounds, [], env=env, reset=folder / ".userflow")
        plugin_runs = rounds + 1  # one plugin run per round, and the warm-up
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
        "target": "v0 2, legacy 1, PUT once per flow per process",
        "measurements_on_server": delivered,
    }
    case = {
        "case": f"HeadSpin, +{latency * 1000:.0f} ms per request, {tests} tests x 20 ms work x 10 "
        "measurements, sessions",
        "target": "<= 1.20x",
        "verdict": verdict(result["ratio_paired_interval"], 1.20),
        **result,
    }
    return case, counts


def count_instructions(folder: Path, *args: str) -> int:
    """Instructions the tests' process ran (valgrind's callgrind; the folder, a child
    process, is not followed)."""
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
            env=_env({"PYTHONHASHSEED": "0"}),
            check=True,
        )
        totals = [line for line in out.read_text().splitlines() if line.startswith("summary:")]
        return int(totals[0].split()[1])
    finally:
        out.unlink(missing_ok=True)


def case_instructions(work_dir: Path, tests: int) -> dict[str, Any]:
    """Case 1 in instructions: the plugin's and bare pytest's at N/4 and N tests (run side by
    side, one a core), so the plugin's cost splits into a fixed part and a part per test.

    The split holds when N/4 is past the 200 tests at which the folder starts; below that
    (``--smoke``) the journal is folded in the tests' process and counts as per test."""
    case = f"local store in instructions, {tests} tests x 10 measurements, no work"
    if shutil.which("valgrind") is None:
        return {"case": case, "skipped": "valgrind is not installed"}
    sizes = (tests // 4, tests)
    runs = []
    for n in sizes:
        # plugin and bare in folders of their own: the two may run at the same time
        for side, args in (("plugin", LOCAL), ("bare", BARE)):
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
    return {
        "case": case,
        "target": "none: a floor under case 1's wall time",
        "ratio": counts["plugin", big] / counts["bare", big],
        "plugin_instructions": counts["plugin", big],
        "bare_instructions": counts["bare", big],
        "bare_per_test": (counts["bare", big] - counts["bare", small]) / (big - small),
        "plugin_fixed": fixed,
        "plugin_per_test": per_test,
    }


def case_cli(work_dir: Path, rows: int, smoke: bool) -> dict[str, Any]:
    from pytest_userflow.store import EventRecord, RunInfo, Store

    path = work_dir / "cli" / "store.db"
    store = Store(path)
    rng = random.Random(1)
    keys = [f"Key {i}" for i in range(100)]
    flows = [f"Flow {i}" for i in range(10)]
    per_event = 20
    run = RunInfo(run_id="bench", started_at=time.time(), host="bench")
    store.start_run(run)
    from pytest_userflow.measurement import Measurement

    start_ts = time.time() - 90 * 86400
    events = rows // per_event
    ops = []
    for e in range(events):
        flow = flows[e % len(flows)]
        chosen = rng.sample(keys, per_event)
        event = EventRecord(
            run_id=f"run{e // 100}",
            flow=flow,
            nodeid=f"t::{e}",
            status="Passed",
            event_ts=start_ts + e * 7.0,
            measurements=[Measurement(k, rng.random() * 1000, None, "ms") for k in chosen],
        )
        ops.append({"op": "event", "event": event, "upload": None})
    store.apply(ops)  # as the plugin folds its journal, in one transaction
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
        "target": "<= 0.5 s each",
        "measurements_s": timings["measurements"],
        "stats_s": timings["stats"],
    }


def case_memory(work_dir: Path, small: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "case": f"peak memory, {small} vs {small * 4} tests x 10 measurements",
        "target": "flat (no growth with tests beyond the store)",
    }
    for tests in (small, small * 4):
        folder = work_dir / f"mem{tests}"
        make_suite(folder, tests, 10, 0.0, None)
        rss_plugin = run_pytest(folder, *LOCAL)[1]
        rss_bare = run_pytest(folder, *BARE)[1]
        out[f"rss_plugin_{tests}_mib"] = rss_plugin / 1024
        out[f"rss_bare_{tests}_mib"] = rss_bare / 1024
    growth_plugin = out[f"rss_plugin_{small * 4}_mib"] - out[f"rss_plugin_{small}_mib"]
    growth_bare = out[f"rss_bare_{small * 4}_mib"] - out[f"rss_bare_{small}_mib"]
    out["growth_plugin_minus_bare_mib"] = growth_plugin - growth_bare
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round: the script works"
    )
    parser.add_argument("--rounds", type=int, default=6, help="A/B rounds per case (default 6)")
    parser.add_argument(
        "--only",
        nargs="*",
        default=["local", "headspin", "cli", "memory"],
        choices=["local", "headspin", "cli", "memory", "instructions"],
        help="the cases to run (default: all but instructions, which needs valgrind)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    smoke = args.smoke
    rounds = 1 if smoke else args.rounds
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="userflow-bench-") as tmp:
        work_dir = Path(tmp)
        if "local" in args.only:
            results.append(case_local(work_dir, 50 if smoke else 2000, rounds))
        if "headspin" in args.only:
            results += case_headspin(work_dir, 10 if smoke else 300, rounds, 0.05)
        if "cli" in args.only:
            results.append(case_cli(work_dir, 20_000 if smoke else 1_000_000, smoke))
        if "memory" in args.only:
            results.append(case_memory(work_dir, 100 if smoke else 5000))
        if "instructions" in args.only:
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
