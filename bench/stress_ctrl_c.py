"""Ctrl-C stress of the DAG runner: SIGINT a real `liferaft`-engine process at random moments of a busy run.

Each round runs tests.unit.test_engine_dag's `busy_then_long` plan (a first step, 10 layers of 4 short steps, one
long step) in a child and sends SIGINT a random delay after its first step started -- while the scheduler
launches threads, journals, or waits -- then checks what `ctrl_c_at` checks: exit 130 within 10 s, no step left
'running', the run stopped, and a resume completes it. Every fourth round the child starts with SIGINT ignored
(as under a script's `&`), which the test harness undoes, as the CI test does.

Run: python -m bench.stress_ctrl_c [--rounds 50] [--max-delay 0.6] [--seed N]
Prints one line per failed round and a summary; exits 1 if any round failed. ~1.5 s a round on 2 cores.
Not in CI (tests/unit/test_engine_dag.py runs four fixed delays of the same check).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from tests.unit.test_engine_dag import ctrl_c_at


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--max-delay", type=float, default=0.6, help="SIGINT up to this many seconds in")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    failed = 0
    t0 = time.monotonic()
    for n in range(args.rounds):
        delay = rng.uniform(0.0, args.max_delay)
        ignored = n % 4 == 3
        with tempfile.TemporaryDirectory(prefix="liferaft-ctrl-c-") as d:
            problems = ctrl_c_at(Path(d), delay, ignore_sigint=ignored)
        if problems:
            failed += 1
            print(f"round {n} (delay {delay:.3f} s{', SIGINT ignored by the parent' if ignored else ''}): "
                  + "; ".join(problems), flush=True)
    print(f"{args.rounds - failed}/{args.rounds} rounds passed in {time.monotonic() - t0:.0f} s (seed {seed}, "
          f"delays 0-{args.max_delay} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
