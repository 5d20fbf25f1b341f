"""The benchmark script works (tiny sizes). The figures themselves are not asserted here:
they are measured with ``python benchmarks/run.py`` and reported in the README."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def test_the_benchmark_script_runs_every_case(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    names = [r["case"] for r in data["results"]]
    prefixes = (
        "local store, 50 no-work tests x 10 measurements, in-process",
        "local store, 50 no-work tests x 10 measurements, under -n 2",
        "local store, 20 tests of 5 ms",
        "HeadSpin",
        "requests per test",
        "CLI on a store",
        "report of 5 of 5 runs",
        "peak memory",
    )
    assert [next(p for p in prefixes if n.startswith(p)) for n in names] == list(prefixes)
    local = data["results"][0]
    assert local["bare_wall_s"] > 0 and local["bare_cpu_s"] > 0
    for side in ("plugin", "junit"):
        for measure in ("wall", "cpu"):
            ratio = local[side][measure]
            assert ratio["min"] <= ratio["ratio"] <= ratio["max"]
            low, high = ratio["interval"]
            assert low <= ratio["ratio"] <= high
    assert local["plugin"]["wall"]["verdict"] in ("met", "missed", "within the noise")
    requests = next(r for r in data["results"] if r["case"] == "requests per test")
    assert (
        requests["v0_with_session"] == 2
        and requests["legacy"] == 1
        and requests["flow_puts_per_process"] == 1
    )
    assert "machine:" in result.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="the instructions case needs valgrind")
@pytest.mark.skipif(
    not os.environ.get("USERFLOW_SLOW_TESTS"),
    reason="callgrind takes minutes: set USERFLOW_SLOW_TESTS=1 to run it",
)
def test_the_instructions_case_counts_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--only", "instructions", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (case,) = json.loads(out.read_text())["results"]
    assert case["case"].startswith("local store in instructions")
    # pytest alone runs hundreds of millions of instructions; the plugin adds to them
    assert case["bare_instructions"] > 10**8
    assert case["plugin_instructions"] > case["bare_instructions"]
    assert case["ratio"] == case["plugin_instructions"] / case["bare_instructions"]
    assert case["plugin_per_test"] > 0 and case["bare_per_test"] > 0


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("userflow_benchmarks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_interval_of_a_median_narrows_with_agreeing_rounds() -> None:
    bench = _bench_module()
    spread = [1.00, 1.10, 1.02, 0.95, 1.20, 1.04, 1.08, 0.99, 1.15, 1.03]
    low, high = bench.median_interval(spread)
    assert min(spread) <= low < statistics.median(spread) < high <= max(spread)
    assert bench.median_interval(spread) == (low, high)  # seeded: the same every time
    # the same values four times over: a narrower interval around the same median
    low4, high4 = bench.median_interval(spread * 4)
    assert low <= low4 < high4 <= high and high4 - low4 < high - low
    assert bench.median_interval([1.03] * 7) == (1.03, 1.03)


def test_a_verdict_needs_the_whole_interval_on_one_side_of_the_target() -> None:
    bench = _bench_module()
    assert bench.verdict((1.01, 1.05), 1.05) == "met"
    assert bench.verdict((1.051, 1.09), 1.05) == "missed"
    assert bench.verdict((1.03, 1.07), 1.05) == "within the noise"
