"""The benchmark script works (tiny sizes). The figures themselves are not asserted here:
they are measured with ``python benchmarks/run.py`` and reported in the README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
