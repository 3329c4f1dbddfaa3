"""``fairwatch demo``: the whole monitor on a synthetic stream with a known bias shift.

A seeded stream of predictions over three attributes, labels arriving later,
and from ``--shift-at`` on one group's scores pushed up. It runs the same
pipeline as ``replay`` and the Kafka worker, serves /metrics while it runs,
and ends by saying whether, where and how fast the shift was detected.
"""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from fairwatch.command_support import keep_serving, positive_float, whole_number
from fairwatch.flags import add_metrics_flags, add_report_flag
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, format_table, to_json
from fairwatch.monitor.synthetic import SyntheticStream


def register(commands) -> None:
    parser = commands.add_parser("demo", help="run the monitor on a synthetic stream with an injected bias shift")
    parser.add_argument("--events", type=int, default=300_000, help="predictions in the stream (300000)")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=7, help="random seed of the synthetic stream (7)")
    parser.add_argument("--shift-at", type=int, default=None, help="prediction index of the shift (half way)")
    parser.add_argument("--shift-group", default="Hispanic", help="race group whose scores shift up (Hispanic)")
    add_metrics_flags(parser, port=9108, port_help="serve /metrics here while running (0: any free port)",
                      aliases=("--port",))
    parser.add_argument("--no-serve", action="store_true", help="do not serve /metrics")
    parser.add_argument("--keep-serving", action="store_true", help="keep /metrics up after the stream ends")
    parser.add_argument("--rate", type=positive_float, default=None, help="slow the stream to N events/s (to watch it live)")
    add_report_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fairwatch.command_support import UsageError

    if args.events < 1000:
        raise UsageError("--events must be at least 1000")
    shift_at = args.shift_at if args.shift_at is not None else args.events // 2
    if not 0 < shift_at < args.events:
        raise UsageError(f"--shift-at must lie between 0 and --events ({args.events})")
    stream = SyntheticStream(n_events=args.events, seed=args.seed, shift_at=shift_at, shift_group=args.shift_group)
    if args.shift_group not in stream.groups["race"]:
        raise UsageError(f"--shift-group must be one of {', '.join(stream.groups['race'])}")
    pipeline = Pipeline(MonitorConfig(attributes=list(stream.groups)))
    server = None
    if not args.no_serve:
        from fairwatch.command_support import serve_registry
        from fairwatch.monitor.exporter import make_registry

        server = serve_registry(make_registry(pipeline), args.metrics_port, args.metrics_addr)

    # Input positions of the predictions, to translate detections into
    # "predictions after the shift" (the stream interleaves outcome lines).
    prediction_at_position: list[int] = []
    predictions_seen = 0
    started = time.perf_counter()
    with tqdm(total=args.events, unit="ev", desc="demo", file=sys.stderr, disable=None) as progress:
        for lines in stream.batches():
            pipeline.process_lines(lines)
            before_batch = predictions_seen
            for line in lines:
                if b'"prediction"' in line:
                    predictions_seen += 1
                prediction_at_position.append(predictions_seen)
            new_predictions = predictions_seen - before_batch
            progress.update(new_predictions)
            if args.rate:
                time.sleep(new_predictions / args.rate)
    elapsed = time.perf_counter() - started

    report = build_report(pipeline)
    shifted = [d for d in pipeline.drift_events if d.attribute == "race"]
    after = [d for d in shifted if prediction_at_position[d.event_index] > shift_at]
    before = [d for d in pipeline.drift_events if prediction_at_position[d.event_index] <= shift_at]
    detection = None
    if after:
        first = after[0]
        detection = {
            "attribute": first.attribute,
            "metric": first.metric,
            "group": first.group,
            "predictions_after_shift": prediction_at_position[first.event_index] - shift_at,
            "before": first.before,
            "after": first.after,
        }
    breaches = [o for o in pipeline.onsets if prediction_at_position[o.event_index] > shift_at]
    false_breaches = [o for o in pipeline.onsets if prediction_at_position[o.event_index] <= shift_at]
    breach = None
    if breaches:
        first_breach = breaches[0]
        breach = {
            "attribute": first_breach.attribute, "metric": first_breach.metric, "groups": first_breach.groups,
            "value": first_breach.value, "lower": first_breach.lower, "threshold": first_breach.threshold,
            "predictions_after_shift": prediction_at_position[first_breach.event_index] - shift_at,
        }
    report["demo"] = {
        "shift": {"at_prediction": shift_at, "attribute": "race", "group": args.shift_group,
                  "change": f"scores +{stream.shift_logit} logit, true risk unchanged"},
        "detection": detection,
        "breach": breach,
        "changes_before_shift": len(before),
        "breaches_before_shift": len(false_breaches),
        "seconds": round(elapsed, 2),
        "events_per_second": round(args.events / elapsed),
    }
    if args.report == "json":
        print(to_json(report, indent=2))
    else:
        print(format_table(report))
        print()
        print(f"injected: race={args.shift_group} scores up from prediction {shift_at:,} (true risk unchanged)")
        if detection:
            where = f"race={detection['group']}" if detection["group"] else "race"
            print(
                f"detected: {where} {detection['metric']} moved {detection['before']:.3f} -> {detection['after']:.3f}, "
                f"{detection['predictions_after_shift']:,} predictions after the shift"
            )
        else:
            print("detected: nothing on race after the shift")
        print(f"changes flagged before the shift (false alarms): {len(before)}")
        if breach:
            print(
                f"breach: {breach['attribute']} {breach['metric']} = {breach['value']:.3f}, anytime-valid lower bound "
                f"{breach['lower']:.3f} > {breach['threshold']}, declared {breach['predictions_after_shift']:,} "
                "predictions after the shift"
            )
        else:
            print("breach: none declared")
        print(f"breaches declared before the shift (false alarms): {len(false_breaches)}")
        print(f"{args.events:,} predictions in {elapsed:.1f} s ({args.events / elapsed:,.0f}/s)")
    if server is not None and args.keep_serving:
        keep_serving("still serving /metrics; Ctrl-C to stop")
    return 0
