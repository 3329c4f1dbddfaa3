"""``fairwatch produce FILE --predictions-topic T``: replay a CSV/JSONL file into Kafka as contract events."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, deque
from pathlib import Path

import msgspec
from tqdm import tqdm

from fairwatch.consumers.files import SourceError, read_events
from fairwatch.consumers.kafka_config import CONNECTION_KEYS, add_client_flag, add_security_flags
from fairwatch.consumers.replay_command import add_mapping_flags, mapping_from_args
from fairwatch.command_support import UsageError, finite_float
from fairwatch.flags import add_bootstrap_flag, add_config_file_flag, add_progress_flag, add_topic_flags
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.events import EventParser, Rejection


FLUSH_TIMEOUT_SECONDS = 30.0


class Outcome(msgspec.Struct):
    """The outcome contract: the label of an earlier prediction."""

    event_id: str
    ts: float
    label: int


def register(commands) -> None:
    parser = commands.add_parser("produce", help="replay a CSV or JSONL file into Kafka (key = event_id)")
    parser.add_argument("file", help="CSV or JSONL file")
    add_mapping_flags(parser)
    add_config_file_flag(parser, "[kafka] connection keys")
    add_topic_flags(parser, predictions=None, outcomes=None, predictions_aliases=("--topic",))
    parser.add_argument("--outcome-delay", type=int, metavar="N",
                        help="send each labeled row as a prediction without label, and its outcome on "
                             "--outcomes-topic N events later (none: labels go with the predictions)")
    parser.add_argument("--rate", type=finite_float, metavar="N", help="events per second (default: as fast as possible)")
    parser.add_argument("--limit", type=int, metavar="N", help="stop after N events (none: the whole file)")
    add_bootstrap_flag(parser, default=None)
    parser.add_argument("--compression", choices=("gzip", "snappy", "lz4", "zstd"), help="record batch compression (none)")
    add_client_flag(parser)
    add_progress_flag(parser, default=True)
    add_security_flags(parser)
    parser.set_defaults(handler=run)


class Pacer:
    """Sleep so that ``sent`` events never run ahead of ``rate`` per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()

    def wait(self, sent: int) -> None:
        if self.rate:
            ahead = sent / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def run(args: argparse.Namespace) -> int:
    if args.score_col and args.threshold is None and not args.prediction_col:
        raise UsageError("--score-col needs --threshold (or give --prediction-col)")
    if args.rate is not None and args.rate <= 0:
        raise UsageError("--rate must be positive")
    if args.outcome_delay is not None and args.outcome_delay < 0:
        raise UsageError("--outcome-delay must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be 1 or more (leave it out for the whole file)")
    from fairwatch.settings import from_args

    settings = from_args(args, kafka_keys=CONNECTION_KEYS).kafka  # checks that the topics differ
    if args.outcome_delay is not None and not settings.outcomes_topic:
        raise UsageError("--outcome-delay needs an outcomes topic (--outcomes-topic)")

    from fairwatch.consumers.kafka_clients import client_errors, open_producer

    kafka_errors = client_errors(settings.client)
    if not Path(args.file).is_file():  # before connecting: the file is read lazily
        raise UsageError(f"{args.file}: no such file")
    parser = EventParser(default_model=args.model or MonitorConfig().default_model, threshold=args.threshold)
    try:
        batches = read_events(args.file, args.format, mapping_from_args(args), parser)
        producer = open_producer(settings, "fairwatch-produce", linger_ms=10, batch_bytes=256 << 10,
                                 compression=args.compression, max_request_bytes=16 << 20)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    except kafka_errors as exc:
        raise UsageError(f"cannot connect to Kafka at {','.join(settings.bootstrap_list())}: {exc}") from None

    encode = msgspec.json.Encoder().encode
    failures: list[str] = []
    skipped: Counter = Counter()

    def failed(exc) -> None:
        failures.append(str(exc) or type(exc).__name__)

    def send(topic: str, key: str, value: bytes) -> None:
        producer.send(topic, key.encode(), value, on_error=failed)

    delayed: deque[tuple[int, Outcome]] = deque()  # (send after this many events, outcome)
    pacer = Pacer(args.rate)
    sent = predictions = outcomes = shown = 0
    try:
        with tqdm(unit="ev", desc="produce", file=sys.stderr, disable=not args.progress) as progress:
            for batch in batches:
                for event in batch:
                    if args.limit is not None and predictions >= args.limit:
                        break
                    if event.__class__ is Rejection:
                        skipped[event.reason] += 1
                        continue
                    while delayed and delayed[0][0] <= sent:
                        outcome = delayed.popleft()[1]
                        outcome.ts = time.time()
                        send(settings.outcomes_topic, outcome.event_id, encode(outcome))
                        sent += 1
                        outcomes += 1
                    if args.outcome_delay is not None and event.label is not None and not event.is_outcome:
                        delayed.append((sent + args.outcome_delay, Outcome(event.event_id, 0.0, event.label)))
                        event.label = None
                    if event.is_outcome and args.outcome_delay is not None:
                        send(settings.outcomes_topic, event.event_id, encode(event))
                        outcomes += 1
                    else:
                        send(settings.predictions_topic, event.event_id, encode(event))
                        predictions += 1
                    sent += 1
                    if sent - shown >= 512:
                        progress.update(sent - shown)
                        shown = sent
                        pacer.wait(sent)
                        if failures:
                            break
                if failures or (args.limit is not None and predictions >= args.limit):
                    break
            while delayed and not failures:
                outcome = delayed.popleft()[1]
                outcome.ts = time.time()
                send(settings.outcomes_topic, outcome.event_id, encode(outcome))
                sent += 1
                outcomes += 1
            left = producer.flush(FLUSH_TIMEOUT_SECONDS)
            if left:
                failures.append(f"{left} still queued after {FLUSH_TIMEOUT_SECONDS:.0f} s")
            progress.update(sent - shown)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    except kafka_errors as exc:
        raise UsageError(f"producing to {','.join(settings.bootstrap_list())}: {exc}") from None
    finally:
        producer.close(FLUSH_TIMEOUT_SECONDS)
    if skipped:
        print(f"skipped {sum(skipped.values())} invalid rows ({', '.join(f'{r}: {n}' for r, n in skipped.items())})",
              file=sys.stderr)
    if failures:
        raise UsageError(f"{len(failures)} events not delivered, first: {failures[0]}")
    print(f"produced {predictions} predictions to {settings.predictions_topic}"
          + (f" and {outcomes} outcomes to {settings.outcomes_topic}" if outcomes else ""), file=sys.stderr)
    return 0
