"""``fairwatch export``: a model's labeled events of a time window, from Kafka to the fine-tune's JSONL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairwatch.command_support import UsageError


def add_window_source_flags(parser: argparse.ArgumentParser, reads: str = "[kafka] connection keys") -> None:
    """Where a window is read from: the ``[kafka]`` table of --config and the flags ``fairwatch run`` names
    the same (``export``, and the trigger when its job command holds ``{data}``)."""
    from fairwatch.consumers.kafka_config import add_client_flag, add_security_flags
    from fairwatch.flags import add_bootstrap_flag, add_config_file_flag, add_topic_flags

    add_config_file_flag(parser, reads)
    kafka = parser.add_argument_group("kafka")
    add_client_flag(kafka)
    add_bootstrap_flag(kafka, default=None)
    add_topic_flags(kafka, predictions=None, outcomes=None, outcomes_help="topic of outcome events ('' = none)",
                    predictions_help="topic of prediction events, or the labeled topic of `fairwatch join` with "
                                     "--outcomes-topic ''")
    add_security_flags(parser)


def window_source_settings(args: argparse.Namespace):
    """The KafkaSettings of the flags of ``add_window_source_flags`` (over the [kafka] table of --config)."""
    from fairwatch.consumers.kafka_config import CONNECTION_KEYS
    from fairwatch.settings import from_args

    return from_args(args, kafka_keys=CONNECTION_KEYS).kafka


def register(commands) -> None:
    parser = commands.add_parser(
        "export", help="write a model's labeled events of a time window, read back from Kafka, as JSONL",
        description="Read the predictions of --model whose Kafka record time lies between --from and --to, join "
                    "each with its outcome (outcomes that came after --to included), and write them as JSONL "
                    "events, the input of `fairwatch finetune`. Reads without a consumer group: commits nothing.")
    parser.add_argument("--model", required=True, help="the model whose events are exported")
    parser.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="window start, ISO-8601 (2026-11-22T10:00:00Z; no zone = UTC) or epoch seconds")
    parser.add_argument("--to", dest="end", required=True, metavar="TIME", help="window end, included (same forms)")
    parser.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write (replaced whole)")
    add_window_source_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fairwatch.consumers.time_window import TimeWindow

    window = TimeWindow.parse(args.start, args.end)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    settings = window_source_settings(args)
    summary = run_export(settings, args.model, window, out)
    for line in summary.lines():
        print(line, file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def run_export(settings, model: str, window, out: Path):
    """``export_window`` with every failure the user can act on as a FairwatchError (one line): its own
    (ClientMissing, EmptyWindow, TopicReadError) as they are, the client's and the file system's as UsageErrors."""
    from fairwatch.consumers.kafka_clients import client_errors
    from fairwatch.consumers.window_export import export_window

    kafka_errors = client_errors(settings.client)
    try:
        return export_window(settings, model, window, out)
    except kafka_errors as exc:
        raise UsageError(f"reading Kafka at {','.join(settings.bootstrap_list())}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}") from None


__all__ = ["add_window_source_flags", "register", "run", "run_export", "window_source_settings"]
