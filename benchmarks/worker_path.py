"""What each step of the Kafka worker's per-event path costs, without a broker, in one run.

    python -m benchmarks.worker_path [--events 400000]

On the Kafka benchmark's events (``benchmarks.kafka.make_values``, ~160 bytes), in µs per event:
decoding one value with ``json.loads`` (the bare loops' parse), with msgspec into a dict, and a batch
of 5,000 values joined into one JSON array with msgspec (measured, not used: joined values can pair up
into valid elements); the worker's own parse (``EventParser.parse``: msgspec into an ``Event`` and its
checks); and ``Pipeline.process_events`` (the benchmark worker's config) in batches of 1,000 to 50,000
records, the former ``max_poll_records`` (5,000) the baseline. Best of ``--repeats`` runs each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import msgspec

from benchmarks.kafka import FORMER_MAX_POLL_RECORDS, make_values

BATCHES = (1_000, FORMER_MAX_POLL_RECORDS, 20_000, 50_000)
JOINED = 5_000


def per_event(fn, n: int, repeats: int) -> float:
    """Best µs per event of ``fn()`` over ``repeats`` runs (``fn`` handles ``n`` events)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def process_in_batches(values: list[bytes], batch: int, warm: int) -> float:
    """µs per event of parsing and applying ``values[warm:]`` in batches of ``batch``, after ``warm`` events."""
    from fairwatch.monitor.config import MonitorConfig
    from fairwatch.monitor.pipeline import Pipeline

    pipeline = Pipeline(MonitorConfig(attributes=["race", "sex"]))  # the Kafka benchmark worker's
    events = [pipeline.parser.parse(v) for v in values]
    for start in range(0, warm, batch):
        pipeline.process_events(events[start : min(warm, start + batch)])
    started = time.perf_counter()
    for start in range(warm, len(events), batch):
        pipeline.process_events(events[start : start + batch])
    return (time.perf_counter() - started) / (len(events) - warm) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from fairwatch.command_support import tune_gc
    from fairwatch.monitor.events import EventParser

    tune_gc()  # as `fairwatch run` does at start
    values = make_values(args.events)
    n = len(values)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n:,} events of ~{sum(map(len, values[:1000])) / 1000:.0f} B; µs per event, best of {args.repeats}")
    to_dict = msgspec.json.Decoder().decode
    parse = EventParser().parse
    decoding = {
        "json.loads, one value at a time (baseline)": lambda: [json.loads(v) for v in values],
        "msgspec into a dict, one value at a time": lambda: [to_dict(v) for v in values],
        f"msgspec, {JOINED:,} values joined as one array (not used)":
            lambda: [to_dict(b"[" + b",".join(values[i : i + JOINED]) + b"]") for i in range(0, n, JOINED)],
        "EventParser.parse (msgspec into an Event, checks)": lambda: [parse(v) for v in values],
    }
    for name, fn in decoding.items():
        print(f"  {name:<58} {per_event(fn, n, args.repeats):6.2f}")
    warm = n // 4
    costs = {batch: min(process_in_batches(values, batch, warm) for _ in range(args.repeats)) for batch in BATCHES}
    for batch, cost in costs.items():
        name = f"Pipeline.process_events, batches of {batch:,}" + (" (baseline)" if batch == FORMER_MAX_POLL_RECORDS
                                                                 else "")
        print(f"  {name:<58} {cost:6.2f}   ({costs[FORMER_MAX_POLL_RECORDS] / cost:.2f}x the baseline's rate)")


if __name__ == "__main__":
    main()
