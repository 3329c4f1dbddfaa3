"""``fairwatch replay FILE``: a CSV or JSONL file through the core pipeline, no broker."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

from consumers.files import FORMATS, CsvMapping, SourceError, read_events
from monitor.cli import UsageError, add_config_flags, config_from_args
from monitor.pipeline import Pipeline
from monitor.report import build_report, format_table


def add_mapping_flags(parser: argparse.ArgumentParser) -> None:
    """CSV column mapping, shared with ``fairwatch produce``."""
    parser.add_argument("--format", choices=FORMATS, help="input format (default: from the file ending)")
    parser.add_argument("--id-col", help="CSV column with the event id (default: the line number)")
    parser.add_argument("--prediction-col", help="CSV column with the 0/1 decision")
    parser.add_argument("--score-col", help="CSV column with the model score")
    parser.add_argument("--threshold", type=float, help="prediction = score >= THRESHOLD (CSV and JSONL)")
    parser.add_argument("--label-col", help="CSV column with the 0/1 outcome; empty = not known yet")
    parser.add_argument("--group", action="append", default=[], metavar="COL", help="protected attribute column (repeatable)")
    parser.add_argument("--ts-col", help="CSV column with the event time (epoch seconds or ISO 8601)")
    parser.add_argument("--text-col", help="CSV column with the model's input text")
    parser.add_argument("--model", help="model name for CSV rows and JSONL events without one")


def mapping_from_args(args: argparse.Namespace) -> CsvMapping:
    return CsvMapping(
        id_col=args.id_col, prediction_col=args.prediction_col, score_col=args.score_col,
        threshold=args.threshold, label_col=args.label_col, group_cols=list(args.group),
        ts_col=args.ts_col, text_col=args.text_col, model=args.model or "default",
    )


def register(commands) -> None:
    parser = commands.add_parser("replay", help="replay a CSV or JSONL file through the monitor (no broker)")
    parser.add_argument("file", help="CSV or JSONL file")
    add_mapping_flags(parser)
    add_config_flags(parser)
    parser.add_argument("--report", choices=("table", "json"), default="table")
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve /metrics on PORT and keep it up after the replay")
    parser.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.score_col and args.threshold is None and not args.prediction_col:
        raise UsageError("--score-col needs --threshold (or give --prediction-col)")
    overrides = {"default_model": args.model, "threshold": args.threshold}
    if args.group:
        overrides["attributes"] = list(args.group)
    config = config_from_args(args, **overrides)
    pipeline = Pipeline(config)
    server = None
    if args.serve is not None:
        from monitor.exporter import serve_metrics

        try:
            server, port = serve_metrics(pipeline, args.serve)
        except OSError as exc:
            raise UsageError(f"cannot serve /metrics on port {args.serve}: {exc.strerror}") from None
        print(f"serving metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr)
    try:
        batches = read_events(args.file, args.format, mapping_from_args(args), pipeline.parser)
        with tqdm(unit="ev", desc="replay", file=sys.stderr, disable=not args.progress) as progress:
            for batch in batches:
                pipeline.process_events(batch)
                progress.update(len(batch))
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    report = build_report(pipeline, args.model)
    print(json.dumps(report) if args.report == "json" else format_table(report))
    sys.stdout.flush()
    if server is not None:
        print("replay done; still serving /metrics, Ctrl-C to stop", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0
