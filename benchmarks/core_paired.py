"""The core's cost beyond parsing, for comparing versions of fairwatch on the same lines.

    python -m benchmarks.core_paired --write-lines /tmp/lines.jsonl --events 1000000
    python -m benchmarks.core_paired --lines /tmp/lines.jsonl --label current

Times, best of ``--repeats``, the pipeline over the lines in batches of 4,096
(parse included), parsing them in batches alone, and parsing them one at a
time, and prints the differences in µs per event. The machine's speed drifts
by more than the changes worth measuring, so run the versions in turn, more
than once, in one quiet session. An older version runs this same file with
its own code: from a worktree of it with its own virtualenv, or, for code
from before the single ``fairwatch`` package (before 5c815c7), with
``PYTHONPATH=<worktree> FAIRWATCH_OLD_LAYOUT=1`` and any venv that has its
dependencies. ``--mode`` runs one part once for an instruction count, which
does not depend on the machine's speed or load; the parse-only count is
subtracted from the full one (imports and the first model are done before
either), e.g.::

    valgrind --tool=cachegrind --cache-sim=no python benchmarks/core_paired.py --lines L --mode full
    valgrind --tool=cachegrind --cache-sim=no python benchmarks/core_paired.py --lines L --mode parse
"""

from __future__ import annotations

import argparse
import os
import time

BATCH = 4096

if os.environ.get("FAIRWATCH_OLD_LAYOUT"):  # the layout before the single package
    from monitor.cli import tune_gc
    from monitor.config import MonitorConfig
    from monitor.pipeline import Pipeline
else:
    from fairwatch.command_support import tune_gc
    from fairwatch.monitor.config import MonitorConfig
    from fairwatch.monitor.pipeline import Pipeline


def config() -> MonitorConfig:
    """What ``benchmarks.core`` runs: 3 attributes, a count and a time window besides since-start."""
    return MonitorConfig(attributes=["sex", "race", "age"], count_windows=[10_000], time_windows_seconds=[3600.0])


def parse_batches(lines: list[bytes]) -> None:
    parse = Pipeline(config()).parser.parse
    for i in range(0, len(lines), BATCH):
        [parse(line) for line in lines[i : i + BATCH]]


def parse_one_at_a_time(lines: list[bytes]) -> None:
    parse = Pipeline(config()).parser.parse
    for line in lines:
        parse(line)


def full(lines: list[bytes]) -> None:
    pipeline = Pipeline(config())
    parse = pipeline.parser.parse
    for i in range(0, len(lines), BATCH):
        pipeline.process_events([parse(line) for line in lines[i : i + BATCH]])


def best_seconds(fn, lines: list[bytes], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(lines)
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", help="a JSONL file of events (from --write-lines)")
    parser.add_argument("--write-lines", metavar="PATH", help="write benchmarks.core's synthetic lines to PATH and exit")
    parser.add_argument("--events", type=int, default=1_000_000, help="lines to write or to read (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each (default 3)")
    parser.add_argument("--label", default="this version", help="the name printed beside the figures")
    parser.add_argument("--mode", choices=("full", "parse"), help="run one part once (for an instruction count)")
    args = parser.parse_args(argv)
    if args.write_lines:
        from benchmarks.core import make_lines

        with open(args.write_lines, "wb") as handle:
            handle.write(b"\n".join(make_lines(args.events, seed=11)) + b"\n")
        return
    if not args.lines:
        parser.error("--lines FILE (or --write-lines PATH) is required")
    with open(args.lines, "rb") as handle:
        lines = handle.read().split(b"\n")[: args.events]
    lines = [line for line in lines if line]
    tune_gc()
    Pipeline(config()).process_lines(lines[:2000])  # imports and first-use costs, outside every figure
    if args.mode:
        (full if args.mode == "full" else parse_batches)(lines)
        return
    n = len(lines)
    batches = best_seconds(parse_batches, lines, args.repeats)
    whole = best_seconds(full, lines, args.repeats)
    single = best_seconds(parse_one_at_a_time, lines, args.repeats)
    print(f"{args.label}: {n:,} lines; pipeline {whole / n * 1e6:.2f}, parse in batches {batches / n * 1e6:.2f}, "
          f"one at a time {single / n * 1e6:.2f}; beyond parsing {(whole - batches) / n * 1e6:.2f} "
          f"(one-at-a-time parse: {(whole - single) / n * 1e6:.2f}) us/event")


if __name__ == "__main__":
    main()
