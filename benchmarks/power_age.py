"""Delay of the breach decisions by the stream's age at the change, for two block spendings.

    python -m benchmarks.power_age [--repeats 10] [--late 3000000] [--workers 2]

A monitor that has run for a long time pays for it: the k-th block of a copy
spends a share of the error that falls with k, so a change that comes after
n predictions is caught by blocks whose k is about n / (block length). The
streams are ``benchmarks.power``'s breach streams, each long enough for
both changes (``late`` + 1,000,000 events); on each, the change comes at
event 200,000 or at ``late`` (the same events otherwise), and fairwatch
decides with the current block shares (``block_share``: log 2 (1/log(k+1) -
1/log(k+2))) and with the previous ones (6 / (pi^2 k^2), the baseline),
set through ``BreachMonitor.block_spending``. It prints the median delay
(events after the change to the first breach declared on A) per row.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks import power

ROWS = (("15%", 0.05), ("15%", 0.10), ("3%", 0.10))
SPENDINGS = ("log_telescoping", "inverse_square")
EARLY = 200_000


def run_one(job) -> float:
    seed, n, target_name, delta, shift_at, spending = job
    codes, prediction, label, _ = power.make_stream(seed, n, "breach", power.TARGETS[target_name], delta, shift_at)
    found = power.fairwatch(codes, prediction, label, shift_at, block_spending=spending)
    return power.first_delay(found, shift_at)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="streams per row")
    parser.add_argument("--late", type=int, default=3_000_000, help="the late change, in events")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    n = args.late + 1_000_000
    jobs = [(10_000 + r, n, target, delta, shift, spending)
            for target, delta in ROWS for shift in (EARLY, args.late) for spending in SPENDINGS
            for r in range(args.repeats)]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        delays = list(pool.map(run_one, jobs, chunksize=1))
    elapsed = time.perf_counter() - started
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{elapsed:.0f} s with {args.workers} processes; {args.repeats} streams per row of {n:,} events")
    print("median delay (events after the change; detected / streams), change at "
          f"{EARLY:,} and at {args.late:,}")
    print(f"{'group':<6}{'delta':>6} | {'block shares':<16}{'early':>14}{'late':>14}")
    by_job = dict(zip(jobs, delays))
    for target, delta in ROWS:
        for spending in SPENDINGS:
            cells = []
            for shift in (EARLY, args.late):
                values = [by_job[(10_000 + r, n, target, delta, shift, spending)] for r in range(args.repeats)]
                _, median, _ = power.rate_median_p95(values)
                cells.append(f"{median} ({int(np.isfinite(values).sum())}/{len(values)})")
            name = "log (current)" if spending == "log_telescoping" else "1/k^2 (before)"
            print(f"{target:<6}{delta:>6.2f} | {name:<16}{cells[0]:>14}{cells[1]:>14}")


if __name__ == "__main__":
    main()
