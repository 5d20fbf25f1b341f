"""The benchmark script works (tiny sizes). The figures themselves are not asserted here:
they are measured with ``python benchmarks/run.py`` and reported in the README."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
    prefixes = ("local store", "HeadSpin", "requests per test", "CLI on a store", "peak memory")
    assert [next(p for p in prefixes if n.startswith(p)) for n in names] == list(prefixes)
    local = next(r for r in data["results"] if r["case"].startswith("local store"))
    assert local["ratio"] > 0 and local["plugin_median"] > 0 and local["bare_median"] > 0
    assert local["ratio_paired_min"] <= local["ratio_paired"] <= local["ratio_paired_max"]
    requests = next(r for r in data["results"] if r["case"] == "requests per test")
    assert (
        requests["v0_with_session"] == 2
        and requests["legacy"] == 1
        and requests["flow_puts_per_process"] == 1
    )
    assert "machine:" in result.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="the instructions case needs valgrind")
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
