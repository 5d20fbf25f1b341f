"""pytest-userflow among its neighbours: installed and unused, other projects' suites must
behave exactly as without it (issue 36).

    python benchmarks/neighbours.py --work /tmp/neighbours            # every suite
    python benchmarks/neighbours.py --work /tmp/neighbours --suites xdist --rounds 5
    python benchmarks/neighbours.py --plugin ../other-checkout --work /tmp/neighbours

For each suite (pytest 9.2.0's ``testing/``, pytest-xdist 3.8.0's ``testing/``, the newest
pytest-benchmark 5.3's ``tests/``, pytest-rerunfailures 16.7's ``tests/``) it:

1. downloads the sdist once into ``WORK/sdists`` and unpacks it into ``WORK/src``;
2. makes two venvs, ``WORK/venvs/SUITE-with`` and ``SUITE-without``, with the suite's package
   (from its sdist) and test dependencies; the plugin's wheel, built from ``--plugin`` at every
   run, goes into the first only (non-editable, so its ``pytest11`` entry point loads in every
   pytest process there, pytester's inner runs too); the two are checked to differ by it alone;
3. runs the suite in both venvs (at once, one core each, unless ``--one-side-at-a-time``),
   with ``-p no:cacheprovider``, a TMPDIR of each venv's own (``WORK/tmp``: pytest's
   temporary folders kept apart from the other side's and from other jobs of the machine)
   and a junitxml file per side, and compares the outcome of each test id; a test whose
   outcome differs runs again alone, ``--reruns`` times in each venv, which tells a
   reproducible difference from a flaky test;
4. for pytest-xdist's suite, times it with ``PYTHONDONTWRITEBYTECODE=1`` in ``--rounds``
   interleaved pairs (without/with, then with/without): wall time, and the CPU time of every
   process of the run (``RUSAGE_CHILDREN``), as the median and the min-max of the pairs' ratios.

Standard library only. The results are printed and written to ``WORK/results.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIST = "pytest-userflow"
SIDES = ("without", "with")
PYTEST = "pytest==9.2.0"


@dataclass(frozen=True)
class Suite:
    """A neighbour's test suite: its sdist, what it needs installed, how it is run."""

    name: str
    requirement: str  # what pip downloads (the sdist)
    archive: str  # the sdist's file name pattern (a glob)
    extras: str  # the extras of the package installed from the unpacked sdist
    deps: tuple[str, ...]  # further test dependencies
    tests: tuple[str, ...]  # what pytest is given, from the unpacked sdist's folder
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    #: -n 2: the suite supports xdist, and it is faster so
    workers: bool = False
    #: run with PYTHONDONTWRITEBYTECODE=1 in interleaved pairs for the wall ratio
    timed: bool = False


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        # pytest's own tox runs `pytest` in the source tree with its dev extra, -n auto on CI.
        Suite("pytest", PYTEST, "pytest-9.2.0.tar.gz", "[dev]", (), ("testing",), workers=True),
        # pytest-xdist's tox: the testing extra. Its suite gives the same outcomes under -n 2
        # as without, in 57 s instead of 78 s here.
        Suite(
            "xdist",
            "pytest-xdist==3.8.0",
            "pytest_xdist-3.8.0.tar.gz",
            "[testing]",
            (PYTEST,),
            ("testing",),
            workers=True,
            timed=True,
        ),
        # pytest-benchmark's tox (pytest92-nodist-nocov): its extras, its dev group, pinned
        # pygal, `pytest -vv --ignore=src` with PYTHONPATH=tests. Under -n its inner runs see
        # xdist active and disable benchmarks, so it runs without.
        Suite(
            "benchmark",
            "pytest-benchmark>=5.3,<5.4",
            "pytest_benchmark-5.3.*.tar.gz",
            "[aspect,elasticsearch,histogram]",
            (
                PYTEST,
                "freezegun>=1.5.5",
                "nbmake>=1.5.5",
                "pygal==3.1.3",
                "pygaljs==1.0.2",
                "setuptools>=80",
            ),
            ("--ignore=src",),
            env={"PYTHONPATH": "tests", "COLUMNS": "80", "PYTHONUNBUFFERED": "yes"},
        ),
        # pytest-rerunfailures' tox: `pytest tests/`; its xdist tests skip without xdist,
        # so its xdist env's pytest-xdist is installed too.
        Suite(
            "rerunfailures",
            "pytest-rerunfailures==16.7",
            "pytest_rerunfailures-16.7.tar.gz",
            "",
            (PYTEST, "pytest-xdist"),
            ("tests",),
        ),
    )
}


# -- the sources and the venvs ----------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def run_quiet(cmd: list[str], log: Path, **kwargs: Any) -> None:
    """Run *cmd*, its output to *log*; a failure shows the log's end."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)
    if done.returncode:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def source(work: Path, suite: Suite) -> Path:
    """The suite's unpacked sdist, downloaded and unpacked once."""
    sdists = work / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    found = sorted(sdists.glob(suite.archive))
    if not found:
        say(f"{suite.name}: downloading {suite.requirement}")
        run_quiet(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "-d", str(sdists), suite.requirement],
            work / "logs" / "setup.log",
        )  # fmt: skip
        found = sorted(sdists.glob(suite.archive))
    archive = found[-1]
    name = archive.name.removesuffix(".tar.gz")
    unpacked = work / "src" / name
    if not unpacked.is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(work / "src", filter="data")
    return unpacked


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def pip(venv: Path, *args: str, log: Path) -> None:
    run_quiet([str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check", *args], log)


def freeze(venv: Path) -> set[str]:
    done = subprocess.run(
        [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def dist_name(line: str) -> str:
    return re.split(r"[=@ ]", line, maxsplit=1)[0].lower().replace("_", "-")


def build_plugin(plugin: Path, work: Path) -> Path:
    """The plugin's wheel, built afresh from the checkout at *plugin*."""
    wheels = work / "plugin-wheel"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    say(f"building the plugin's wheel from {plugin}")
    run_quiet(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(plugin)],
        work / "logs" / "setup.log",
    )
    (wheel,) = wheels.glob("pytest_userflow-*.whl")
    return wheel


def venvs(work: Path, suite: Suite, src: Path, wheel: Path) -> dict[str, Path]:
    """The suite's two venvs, made once with its dependencies; the plugin's *wheel*
    (re)installed into one of them, and whatever it brought installed into the other, so that
    the two differ by the plugin alone."""
    log = work / "logs" / f"setup-{suite.name}.log"
    wanted = "\n".join([str(src) + suite.extras, *suite.deps])
    made = {}
    for side in SIDES:
        venv = work / "venvs" / f"{suite.name}-{side}"
        stamp = venv / "neighbours-deps.txt"
        if not stamp.is_file() or stamp.read_text() != wanted:
            say(f"{suite.name}: making the venv {venv}")
            shutil.rmtree(venv, ignore_errors=True)
            run_quiet([sys.executable, "-m", "venv", str(venv)], log)
            pip(venv, "install", "-q", str(src) + suite.extras, *suite.deps, log=log)
            stamp.write_text(wanted)
        made[side] = venv
    pip(made["with"], "install", "-q", "--force-reinstall", "--no-deps", str(wheel), log=log)
    pip(made["with"], "install", "-q", str(wheel), log=log)  # its dependencies, if missing
    pip(made["without"], "uninstall", "-q", "-y", PLUGIN_DIST, log=log)  # never installed
    with_, without = freeze(made["with"]), freeze(made["without"])
    missing = sorted(line for line in with_ - without if dist_name(line) != PLUGIN_DIST)
    if missing:
        pip(made["without"], "install", "-q", "--no-deps", *missing, log=log)
        without = freeze(made["without"])
    differ = sorted(with_ ^ without)
    if [dist_name(line) for line in differ] != [PLUGIN_DIST]:
        raise SystemExit(f"{suite.name}: the venvs differ by more than the plugin: {differ}")
    return made


@functools.cache
def has_dist(venv: Path, name: str) -> bool:
    return any(dist_name(line) == name for line in freeze(venv))


# -- one run of a suite ---------------------------------------------------------------------


@dataclass
class Run:
    """One pytest run: its exit code, wall and CPU seconds, and each test's outcome."""

    returncode: int
    wall: float
    cpu: float
    outcomes: dict[str, str]
    #: CPU seconds the machine's other processes used meanwhile (None: not known)
    others: float | None = None


def command(venv: Path, suite: Suite, targets: list[str], junit: Path, workers: bool) -> list[str]:
    cmd = [str(venv / "bin" / "pytest"), *targets, "-p", "no:cacheprovider"]
    if has_dist(venv, "pytest-randomly"):
        cmd += ["-p", "no:randomly"]
    # xunit1 writes each test's file, from which its node id is made again
    cmd += [f"--junitxml={junit}", "-o", "junit_family=xunit1", *suite.args]
    return cmd + (["-n", "2"] if workers else [])


def environment(venv: Path, suite: Suite, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # the suites' own scripts
    env["VIRTUAL_ENV"] = str(venv)
    # Each venv's runs, and their inner runs, keep their temporary folders (pytest's basetemp)
    # apart: from the other venv's run beside them, and from other pytest jobs of the machine.
    tmp = venv.parent.parent / "tmp" / venv.name
    tmp.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    return {**env, **suite.env, **extra}


def start(
    venv: Path,
    suite: Suite,
    src: Path,
    targets: list[str],
    junit: Path,
    log: Path,
    workers: bool,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    junit.unlink(missing_ok=True)
    out = log.open("w")
    cmd = command(venv, suite, targets, junit, workers)
    out.write(f"$ {' '.join(cmd)}\n")
    out.flush()
    return subprocess.Popen(
        cmd,
        cwd=src,
        env=environment(venv, suite, extra_env or {}),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def run_one(
    venv: Path,
    suite: Suite,
    src: Path,
    targets: list[str],
    junit: Path,
    log: Path,
    workers: bool,
    extra_env: dict[str, str] | None = None,
) -> Run:
    """One run alone: its wall time, the CPU time of all its processes, and the CPU time
    the machine's other processes took meanwhile (a run that shared the cores is slower)."""
    busy = machine_busy()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    process = start(venv, suite, src, targets, junit, log, workers, extra_env)
    returncode = process.wait()
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_after = machine_busy()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = None if busy is None or busy_after is None else max(0.0, busy_after - busy - cpu)
    return Run(returncode, wall, cpu, outcomes(junit), others)


def machine_busy() -> float | None:
    """The CPU seconds all the machine's processes have used since boot (Linux's /proc/stat:
    user, nice, system, irq, softirq, steal), or None where it cannot be read."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        ticks = sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8))
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def test_times(junit: Path) -> dict[str, float]:
    """Each test id's duration in a junitxml file."""
    try:
        tree = ET.parse(junit)
    except (OSError, ET.ParseError):
        return {}
    return {node_id(case): float(case.get("time") or 0) for case in tree.iter("testcase")}


def node_id(case: ET.Element) -> str:
    """The test's node id from its junitxml (xunit1) entry: its file, then the classname's
    parts past the module (classes), then its name."""
    file = case.get("file") or ""
    classname = case.get("classname") or ""
    name = case.get("name") or ""
    module = file.removesuffix(".py").replace("/", ".").replace("\\", ".")
    if file and (classname == module or classname.startswith(module + ".")):
        classes = [part for part in classname[len(module) :].split(".") if part]
        return "::".join([file, *classes, name])
    if file and (classname + ".py").endswith(file.replace("/", ".")):
        return f"{file}::{name}"
    return f"{file or classname}::{name}" if name else classname


def outcome_of(case: ET.Element) -> str:
    tags = [child.tag for child in case]
    if "failure" in tags:
        return "failed"
    if "error" in tags:
        return "error"
    for child in case:
        if child.tag == "skipped":
            return "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
    return "passed"


def outcomes(junit: Path) -> dict[str, str]:
    """Each test id's outcome in a junitxml file (an id seen twice gets #2, #3...)."""
    if not junit.is_file():
        return {}
    try:
        tree = ET.parse(junit)
    except ET.ParseError:
        return {}
    found: dict[str, str] = {}
    for case in tree.iter("testcase"):
        nodeid = node_id(case)
        key, n = nodeid, 1
        while key in found:
            n += 1
            key = f"{nodeid}#{n}"
        found[key] = outcome_of(case)
    return found


# -- the comparison ------------------------------------------------------------------------


def compare(
    suite: Suite, work: Path, src: Path, made: dict[str, Path], args: Any
) -> dict[str, Any]:
    """Both sides' outcomes, the tests that differ, and each of those run again alone."""
    out = work / "runs" / suite.name
    out.mkdir(parents=True, exist_ok=True)
    targets = list(suite.tests)
    runs: dict[str, Run] = {}
    say(f"{suite.name}: running the suite in both venvs ({'-n 2' if suite.workers else 'serial'})")
    if args.one_side_at_a_time:
        for side in SIDES:
            runs[side] = run_one(
                made[side], suite, src, targets, out / f"{side}.xml", out / f"{side}.log",
                suite.workers,
            )  # fmt: skip
    else:
        began = time.perf_counter()
        processes = {
            side: start(
                made[side],
                suite,
                src,
                targets,
                out / f"{side}.xml",
                out / f"{side}.log",
                suite.workers,
            )
            for side in SIDES
        }
        codes = {side: process.wait() for side, process in processes.items()}
        wall = time.perf_counter() - began
        runs = {side: Run(codes[side], wall, 0.0, outcomes(out / f"{side}.xml")) for side in SIDES}
    ids = sorted(set(runs["with"].outcomes) | set(runs["without"].outcomes))
    differ = [
        nodeid
        for nodeid in ids
        if runs["with"].outcomes.get(nodeid) != runs["without"].outcomes.get(nodeid)
    ]
    result: dict[str, Any] = {
        "suite": suite.name,
        "source": src.name,
        "tests": len(ids),
        "wall": round(max(run.wall for run in runs.values()), 1),
        "exit codes": {side: runs[side].returncode for side in SIDES},
        "outcomes": {side: tally(runs[side].outcomes) for side in SIDES},
        "differences": [],
    }
    for nodeid in differ[: args.max_reruns_tests]:
        first = {side: runs[side].outcomes.get(nodeid, "absent") for side in SIDES}
        again = rerun(suite, work, src, made, nodeid, args.reruns)
        result["differences"].append(
            {
                "test": nodeid,
                "in the suite": first,
                "alone": again,
                "verdict": verdict(first, again),
            }
        )
    if len(differ) > args.max_reruns_tests:
        result["not rerun"] = differ[args.max_reruns_tests :]
    return result


def tally(found: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in found.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(sorted(counts.items()))


def rerun(
    suite: Suite, work: Path, src: Path, made: dict[str, Path], nodeid: str, times: int
) -> dict[str, list[str]]:
    """*nodeid* run alone *times* times in each venv, the sides taking turns."""
    out = work / "runs" / suite.name / "alone"
    out.mkdir(parents=True, exist_ok=True)
    target = nodeid.split("#", 1)[0]
    seen: dict[str, list[str]] = {side: [] for side in SIDES}
    for _ in range(times):
        for side in SIDES:
            junit, log = out / f"{side}.xml", out / f"{side}.log"
            found = run_one(made[side], suite, src, [target], junit, log, False).outcomes
            seen[side].append(found.get(nodeid, "absent" if len(found) != 1 else "renamed"))
            if seen[side][-1] != "passed":
                shutil.copy(log, out / f"{safe(nodeid)}-{side}.log")
    return seen


def safe(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-120:]


def verdict(first: dict[str, str], again: dict[str, list[str]]) -> str:
    """Reproducible: alone, each side gives its own suite outcome every time; else flaky."""
    same = all(set(again[side]) == {first[side]} for side in SIDES)
    if same:
        return "reproducible"
    if all(len(set(again[side])) == 1 for side in SIDES) and again["with"] != again["without"]:
        return "reproducible alone, other outcomes than in the suite"
    return "flaky (not reproduced alone)"


# -- the xdist suite's time ------------------------------------------------------------------


def timing(
    suite: Suite, work: Path, src: Path, made: dict[str, Path], rounds: int
) -> dict[str, Any]:
    """Interleaved pairs with PYTHONDONTWRITEBYTECODE=1: each pair's ratio with/without.

    No bytecode cache of pytest's assertion rewriting is read either: the earlier runs'
    (in the venvs and the suite's folder) are removed first, as a Docker image that runs with
    PYTHONDONTWRITEBYTECODE=1 has none; the modules' plain bytecode that pip compiled stays."""
    out = work / "runs" / suite.name / "timed"
    out.mkdir(parents=True, exist_ok=True)
    for folder in (*made.values(), src):
        for cached in folder.rglob("*-pytest-*.pyc"):
            cached.unlink()
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    pairs: list[dict[str, Run]] = []
    for n in range(rounds):
        order = SIDES if n % 2 == 0 else SIDES[::-1]
        pair = {}
        for side in order:
            pair[side] = run_one(
                made[side], suite, src, list(suite.tests), out / f"{side}-{n}.xml",
                out / f"{side}-{n}.log", suite.workers, env,
            )  # fmt: skip
        said = [
            f"{side} {pair[side].wall:.1f} s wall {pair[side].cpu:.1f} s CPU"
            + (f" ({pair[side].others:.1f} s CPU of others)" if pair[side].others else "")
            for side in SIDES
        ]
        say(f"  round {n + 1}: {', '.join(said)}")
        pairs.append(pair)
    slower = slower_tests(out, rounds)

    def figures(what: str) -> dict[str, Any]:
        ratios = [getattr(p["with"], what) / getattr(p["without"], what) for p in pairs]
        return {
            "ratio median": round(statistics.median(ratios), 4),
            "ratio min": round(min(ratios), 4),
            "ratio max": round(max(ratios), 4),
            **{
                f"{side} median s": round(
                    statistics.median(getattr(p[side], what) for p in pairs), 2
                )
                for side in SIDES
            },
        }

    return {
        "rounds": rounds,
        "env": env,
        "workers": "-n 2" if suite.workers else "serial",
        "wall": figures("wall"),
        "cpu": figures("cpu"),
        "exit codes": [{side: p[side].returncode for side in SIDES} for p in pairs],
        "others' CPU s": [{side: p[side].others for side in SIDES} for p in pairs],
        "slowest extra": slower,
        "goal": "wall ratio median <= 1.03",
    }


def slower_tests(out: Path, rounds: int, top: int = 8) -> list[tuple[str, float, float]]:
    """The tests whose median duration grew most with the plugin: (id, without, with)."""
    times = {side: [test_times(out / f"{side}-{n}.xml") for n in range(rounds)] for side in SIDES}
    medians: dict[str, dict[str, float]] = {}
    for side in SIDES:
        ids = set().union(*times[side])
        medians[side] = {
            nodeid: statistics.median(t.get(nodeid, 0.0) for t in times[side]) for nodeid in ids
        }
    common = set(medians["with"]) & set(medians["without"])
    grown = sorted(common, key=lambda i: medians["without"][i] - medians["with"][i])[:top]
    return [(i, round(medians["without"][i], 2), round(medians["with"][i], 2)) for i in grown]


# -- the report ----------------------------------------------------------------------------


def show(result: dict[str, Any]) -> None:
    if "outcomes" not in result:  # timed only
        say(f"\n== {result['suite']} ({result['source']})")
        show_timing(result["timing"])
        return
    say(f"\n== {result['suite']} ({result['source']}): {result['tests']} tests, {result['wall']} s")
    for side in SIDES:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in result["outcomes"][side].items())
        say(f"  {side + ' the plugin:':<20} {counts} (exit {result['exit codes'][side]})")
    differences = result["differences"]
    say(f"  outcomes that differ: {len(differences) + len(result.get('not rerun', []))}")
    for d in differences:
        first, again = d["in the suite"], d["alone"]
        say(f"    {d['test']}")
        say(f"      in the suite: without {first['without']}, with {first['with']}")
        say(f"      alone: without {again['without']}, with {again['with']}: {d['verdict']}")
    for nodeid in result.get("not rerun", []):
        say(f"    {nodeid} (not run again: past --max-reruns-tests)")
    if "timing" in result:
        show_timing(result["timing"])


def show_timing(timed: dict[str, Any]) -> None:
    if timed:
        pairs = f"{timed['rounds']} interleaved pairs ({timed['workers']})"
        say(f"  PYTHONDONTWRITEBYTECODE=1, {pairs}:")
        for what in ("wall", "cpu"):
            f = timed[what]
            say(
                f"    {what}: with/without median {f['ratio median']:.3f} "
                f"(min {f['ratio min']:.3f}, max {f['ratio max']:.3f}); "
                f"median {f['without median s']} s without, {f['with median s']} s with"
            )
        others = [o for pair in timed["others' CPU s"] for o in pair.values() if o is not None]
        if others:
            say(f"    other processes' CPU during a run: up to {max(others):.1f} s")
        say("    the tests that grew most (median seconds, without -> with):")
        for nodeid, without, with_ in timed["slowest extra"]:
            say(f"      {without:6.2f} -> {with_:6.2f}  {nodeid}")


def plugin_commit(plugin: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(plugin), "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "(not a git checkout)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugin", type=Path, default=ROOT, help="the checkout to install")
    parser.add_argument("--work", type=Path, required=True, help="sdists, venvs, runs, logs")
    parser.add_argument(
        "--suites", default=",".join(SUITES), help=f"some of {','.join(SUITES)} (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed pairs of the xdist suite")
    parser.add_argument("--reruns", type=int, default=3, help="alone runs of a test that differs")
    parser.add_argument(
        "--max-reruns-tests", type=int, default=20, help="at most this many differing tests again"
    )
    parser.add_argument("--no-timing", action="store_true", help="outcomes only")
    parser.add_argument("--timing-only", action="store_true", help="the xdist suite's time only")
    parser.add_argument(
        "--one-side-at-a-time",
        action="store_true",
        help="run the two venvs' suites one after the other (default: at once, a core each)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.suites.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}: choose from {', '.join(SUITES)}")
    work, plugin = args.work.resolve(), args.plugin.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    commit = plugin_commit(plugin)
    say(f"plugin: {plugin} at {commit}")
    wheel = build_plugin(plugin, work)
    results = []
    for name in names:
        suite = SUITES[name]
        if args.timing_only and not suite.timed:
            continue
        src = source(work, suite)
        made = venvs(work, suite, src, wheel)
        started = time.perf_counter()
        result: dict[str, Any] = {"suite": name, "source": src.name, "differences": []}
        if not args.timing_only:
            result = compare(suite, work, src, made, args)
        if suite.timed and not args.no_timing:
            say(f"{name}: timing {args.rounds} interleaved pairs")
            result["timing"] = timing(suite, work, src, made, args.rounds)
        result["seconds"] = round(time.perf_counter() - started, 1)
        show(result)
        results.append(result)
    total = time.perf_counter() - began
    say(f"\nplugin {commit}; {total / 60:.1f} minutes in all")
    report = {"plugin": str(plugin), "commit": commit, "minutes": round(total / 60, 1)}
    (work / "results.json").write_text(json.dumps({**report, "suites": results}, indent=2) + "\n")
    # a flaky test is said, and fails nothing; a difference that reproduces does
    real = [d for r in results for d in r["differences"] if not d["verdict"].startswith("flaky")]
    return 1 if real or any(r.get("not rerun") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
