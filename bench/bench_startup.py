"""Start-up time of `liferaft --help` against `python -c pass` (target: < 0.25 s more).

Run: python bench/bench_startup.py [--runs N]
Prints a table; exits 1 if the difference of medians exceeds the target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 0.25


def _time(cmd: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    base = _time([sys.executable, "-c", "pass"], args.runs)
    help_ = _time([sys.executable, "-m", "liferaft", "--help"], args.runs)
    mb, mh = statistics.median(base), statistics.median(help_)
    print(f"{'command':<28}{'median s':>10}{'min s':>10}{'max s':>10}")
    print(f"{'python -c pass':<28}{mb:>10.3f}{min(base):>10.3f}{max(base):>10.3f}")
    print(f"{'liferaft --help':<28}{mh:>10.3f}{min(help_):>10.3f}{max(help_):>10.3f}")
    diff = mh - mb
    print(f"difference of medians: {diff:.3f} s (target < {TARGET_S} s): {'OK' if diff < TARGET_S else 'MISSED'}")
    return 0 if diff < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
