"""Core pipeline throughput against a bare ``json.loads`` loop, and Fairlearn's recompute cost.

    python -m benchmarks.core [--events 1000000] [--fairlearn-windows 20]

Prints, in one run over the same in-memory lines: the bare parse rate, our
parse+validate rate (one line at a time, and in batches of 4,096 as the
pipeline parses: the core's cost is the pipeline's time less the latter),
the full pipeline rate (3 configured attributes, so the breach decisions
and the worst-subgroup search over their pairs run too; a count window and
a time window besides since-start), the end-to-end
``replay`` rate from a JSONL file, and what recomputing the same metrics
with Fairlearn's MetricFrame costs per window. The process uses the garbage
collector settings of the ``fairwatch`` command (``fairwatch.command_support.tune_gc``).
Figures, not assertions: machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from fairwatch.command_support import tune_gc
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report
from fairwatch.monitor.synthetic import SyntheticStream

BATCH = 4096


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_of(repeats: int, fn) -> float:
    return min(timed(fn) for _ in range(repeats))


def make_lines(n_lines: int, seed: int) -> list[bytes]:
    # 4 predictions to 1 outcome: 0.8 n predictions, a quarter of them labeled later.
    stream = SyntheticStream(n_events=int(n_lines * 0.8), label_fraction=0.25, label_delay_events=5000, seed=seed)
    return [line for batch in stream.batches(BATCH) for line in batch][:n_lines]


def run_pipeline(lines: list[bytes], config: MonitorConfig) -> Pipeline:
    pipeline = Pipeline(config)
    for i in range(0, len(lines), BATCH):
        pipeline.process_lines(lines[i : i + BATCH])
    return pipeline


def fairlearn_window_cost(lines: list[bytes], window: int, repeats: int) -> float:
    """Seconds for MetricFrame to recompute the per-group rates and gaps of one window, 3 attributes."""
    import pandas as pd
    from fairlearn import metrics as fm
    from sklearn.metrics import accuracy_score, precision_score

    rows = [json.loads(line) for line in lines[: window * 2] if b'"prediction"' in line][:window]
    frame = pd.DataFrame([{**r["groups"], "pred": r["prediction"], "score": r["score"]} for r in rows])
    rng = np.random.default_rng(0)
    frame["label"] = rng.integers(0, 2, len(frame))  # labels only shape the work, not the figure
    metrics = {
        "selection_rate": fm.selection_rate, "tpr": fm.true_positive_rate, "fpr": fm.false_positive_rate,
        "fnr": fm.false_negative_rate, "tnr": fm.true_negative_rate,
        "ppv": lambda t, p: precision_score(t, p, zero_division=0), "accuracy": accuracy_score,
    }

    def once():
        for attribute in ("sex", "race", "age"):
            mf = fm.MetricFrame(metrics=metrics, y_true=frame["label"], y_pred=frame["pred"],
                                sensitive_features=frame[attribute])
            mf.by_group, mf.difference(), mf.ratio()

    return best_of(repeats, once)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="input lines (predictions and outcomes)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for each figure")
    parser.add_argument("--window", type=int, default=10_000, help="count window size (events)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    tune_gc()  # what every fairwatch command does at start (fairwatch.command_support.tune_gc); both loops run under it
    config = MonitorConfig(attributes=["sex", "race", "age"], count_windows=[args.window], time_windows_seconds=[3600.0])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"generating {args.events:,} lines (3 attributes, 4 predictions : 1 late outcome)...", flush=True)
    lines = make_lines(args.events, args.seed)
    n = len(lines)
    parser_only = Pipeline(config).parser

    def bare_loop():
        loads = json.loads
        for line in lines:
            loads(line)

    def parse_loop():
        parse = parser_only.parse
        for line in lines:
            parse(line)

    def parse_batches():
        # What Pipeline.process_lines does before it applies a batch: the batch's events are all alive at
        # once, so they cost more than in parse_loop, whose next event reuses the memory of the one before.
        parse = parser_only.parse
        for i in range(0, n, BATCH):
            [parse(line) for line in lines[i : i + BATCH]]

    bare = best_of(args.repeats, bare_loop)
    parse = best_of(args.repeats, parse_loop)
    parse_batched = best_of(args.repeats, parse_batches)
    pipeline_seconds = best_of(args.repeats, lambda: run_pipeline(lines, config))

    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as handle:
        handle.write(b"\n".join(lines) + b"\n")
        path = handle.name
    try:
        from fairwatch.consumers.files import read_jsonl

        def replay():
            pipeline = Pipeline(config)
            for batch in read_jsonl(path, pipeline.parser, BATCH):
                pipeline.process_events(batch)
            build_report(pipeline)

        replay_seconds = best_of(args.repeats, replay)
    finally:
        os.unlink(path)

    pipeline = run_pipeline(lines, config)
    report_seconds = best_of(args.repeats, lambda: build_report(pipeline))
    fairlearn_seconds = fairlearn_window_cost(lines, args.window, args.repeats)

    def rate(seconds):
        return f"{n / seconds:>12,.0f} events/s  {seconds / n * 1e6:6.2f} us/event"

    print()
    print(f"{'bare json.loads loop (baseline)':<44}{rate(bare)}")
    print(f"{'fairwatch parse + validate (msgspec)':<44}{rate(parse)}")
    print(f"{'  the same in batches, as the pipeline does':<44}{rate(parse_batched)}")
    print(f"{'fairwatch core pipeline (parse included)':<44}{rate(pipeline_seconds)}")
    print(f"{'fairwatch replay of a JSONL file':<44}{rate(replay_seconds)}")
    print()
    core_us = (pipeline_seconds - parse_batched) / n * 1e6
    print(f"core cost beyond parsing: {core_us:.2f} us/event (goal <= 5; the pipeline's time less its own "
          f"way of parsing, in batches; less one-at-a-time parsing: {(pipeline_seconds - parse) / n * 1e6:.2f})")
    print(f"core cost in units of the bare json.loads loop (the same machine's speed): {core_us * 1e-6 * n / bare:.2f}")
    print(f"replay rate / bare parse rate: {bare / replay_seconds:.2f} (goal >= 0.25)")
    print(f"full report from counts (all windows, 3 attributes): {report_seconds * 1e3:.1f} ms")
    print(f"Fairlearn MetricFrame recompute of one {args.window:,}-event window, 3 attributes: "
          f"{fairlearn_seconds * 1e3:.1f} ms ({fairlearn_seconds / args.window * 1e6:.1f} us per event in the window)")


if __name__ == "__main__":
    main()
