"""How well the gate and ``pytest-userflow changes`` tell a real step from noise (seeded).

Histories of 100 runs with 1%, 5% and 10% lognormal noise; half with no change, half with a
step of +10%, +25% or +50% at a random run. Reports the gate's false alarms (old rule: PCT
only; new rule: PCT and 3x the noise), its catch rate on the run after a step, and for
``changes`` the share of steps found within 2 runs of where they began and the false change
points per 100 runs of no change. Then the kept step in fail mode and ``accept``
(``benchmarks/accept.py``, through the history and the gate). Run:
``python benchmarks/detection.py``.
"""

from __future__ import annotations

import random
import time

from accept import main as kept_step_and_accept

from pytest_userflow.analysis import MAD_SCALE, ChangeDetector, median

RUNS, HISTORIES, PCT, K, BASELINE = 100, 100, 10.0, 3.0, 10


def gate_fires(history: list[float], value: float, noise_k: float) -> bool:
    base = median(history)
    spread = MAD_SCALE * median([abs(v - base) for v in history]) / base * 100
    worse = (value - base) / base * 100
    return worse > PCT and worse > noise_k * spread


def main() -> None:
    rng = random.Random(2020)
    detector = ChangeDetector()
    started = time.perf_counter()
    print("noise  step   gate false old/new  gate catch  changes found  false/100 runs")
    for noise in (0.01, 0.05, 0.10):
        flat = [[rng.lognormvariate(0, noise) for _ in range(RUNS)] for _ in range(HISTORIES)]
        old = new = checks = 0
        for h in flat:
            for i in range(BASELINE, RUNS):
                checks += 1
                old += gate_fires(h[i - BASELINE : i], h[i], 0.0)
                new += gate_fires(h[i - BASELINE : i], h[i], K)
        false = sum(len(detector.find(h, 5.0)) for h in flat) / (HISTORIES * RUNS / 100)
        for step in (1.10, 1.25, 1.50):
            caught = found = 0
            for _ in range(HISTORIES):
                at = rng.randrange(BASELINE, RUNS - 10)
                h = [rng.lognormvariate(0, noise) * (step if i >= at else 1) for i in range(RUNS)]
                caught += gate_fires(h[at - BASELINE : at], h[at], K)
                found += any(abs(c.index - at) <= 2 for c in detector.find(h, 5.0))
            print(
                f"{noise:>4.0%}  +{step - 1:>3.0%}  {old / checks:>8.1%} / {new / checks:>5.1%}"
                f"  {caught / HISTORIES:>10.0%}  {found / HISTORIES:>13.0%}  {false:>14.2f}"
            )
    print(f"({time.perf_counter() - started:.1f} s)")
    print()
    kept_step_and_accept()


if __name__ == "__main__":
    main()
