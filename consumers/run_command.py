"""``fairwatch run``: the production worker, a Kafka consumer group feeding the pipeline, /metrics served."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from fairwatch.consumers.kafka_config import KafkaSettings, add_client_flag, add_security_flags
from fairwatch.consumers.replay_command import add_scorer_flags, build_response_scorer, build_stages
from fairwatch.command_support import UsageError, serve_registry, finite_float
from fairwatch.flags import add_config_flags
from fairwatch.flags import (add_bootstrap_flag, add_log_level_flag, add_metrics_flags, add_topic_flags,
                             struct_default)

# Every [kafka] key is a flag of the same name (None = not given, the TOML or the struct's default wins).
SETTING_FLAGS = KafkaSettings.__struct_fields__


def _default(field: str) -> str:
    return struct_default(KafkaSettings, field)


def register(commands) -> None:
    parser = commands.add_parser(
        "run", help="consume predictions and outcomes from Kafka, serve /metrics",
        description="A Kafka consumer group (confluent-kafka, or kafka-python) feeding the fairwatch pipeline. "
                    "Every Kafka flag can also be a key "
                    "of the [kafka] table of --config (flags win); the pipeline settings go in its [monitor] table "
                    "(docs/configuration.md).")
    add_config_flags(parser)
    add_scorer_flags(parser)
    parser.add_argument("--shadow-control", metavar="FILE",
                        help="attach a shadow candidate without a restart: the file `fairwatch incidents attach` "
                             "writes, read between batches when it changes (docs/shadow.md)")
    # dest tracked_attributes: [monitor] attributes. Other commands' --attribute (finetune, probe) names a
    # lexicon attribute and must not touch the monitor's settings.
    parser.add_argument("--attribute", action="append", metavar="ATTR", dest="tracked_attributes",
                        help="protected attribute to track (repeatable; default: every attribute events carry)")
    kafka = parser.add_argument_group("kafka")
    add_client_flag(kafka)
    add_bootstrap_flag(kafka, default=None)
    add_topic_flags(kafka, predictions=None, outcomes=None, outcomes_help="topic of outcome events ('' = none)")
    kafka.add_argument("--dlq-topic", help=f"dead-letter topic for refused records ({_default('dlq_topic')})")
    kafka.add_argument("--group-id", help=f"consumer group ({_default('group_id')})")
    kafka.add_argument("--client-id", help=f"client id prefix ({_default('client_id')})")
    kafka.add_argument("--model", action="append", dest="models", metavar="NAME",
                       help="only this model's predictions (repeatable); others are skipped and counted (none: "
                            "every model)")
    kafka.add_argument("--commit-interval-seconds", type=finite_float,
                       help=f"seconds between offset commits ({_default('commit_interval_seconds')})")
    kafka.add_argument("--state-dir", metavar="DIR", help="snapshot the pipeline state here before each commit and "
                       "restore it on start, so counters survive a crash exactly (one dir per worker) (none: no snapshots)")
    kafka.add_argument("--rebuild-state", action="store_true",
                       help="set the snapshot in --state-dir aside and count again from the oldest offsets the "
                            "topics retain (after a change of attributes, intersections or windows)")
    kafka.add_argument("--fetch-process", action=argparse.BooleanOptionalAction,
                       help="kafka-python only: fetch and decode records in a child process, overlapping with "
                            f"applying them ({_default('fetch_process')})")
    kafka.add_argument("--max-poll-records", type=int, help=f"records per batch at most ({_default('max_poll_records')})")
    kafka.add_argument("--session-timeout-ms", type=int, help=f"group session timeout ({_default('session_timeout_ms')})")
    kafka.add_argument("--max-poll-interval-ms", type=int, help="max time between polls; also the rebalance timeout "
                       f"({_default('max_poll_interval_ms')})")
    kafka.add_argument("--max-partition-fetch-bytes", type=int,
                       help=f"fetch size per partition ({_default('max_partition_fetch_bytes')})")
    kafka.add_argument("--fetch-max-bytes", type=int, help=f"fetch size per request ({_default('fetch_max_bytes')})")
    kafka.add_argument("--dlq-max-bytes", type=int, help="largest dead letter sent whole; larger ones are truncated "
                       f"with a header ({_default('dlq_max_bytes')})")
    kafka.add_argument("--auto-offset-reset", choices=("earliest", "latest"),
                       help=f"where a new group starts ({_default('auto_offset_reset')})")
    add_metrics_flags(kafka, addr=None, addr_help=f"address /metrics listens on ({_default('metrics_addr')})")
    add_security_flags(parser)
    add_log_level_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s fairwatch run %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "fairwatch.librdkafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    from fairwatch.settings import from_args

    whole = from_args(args, kafka_keys=SETTING_FLAGS)
    settings, config = whole.kafka, whole.monitor

    from fairwatch.consumers.dead_letters import DeadLettersUndelivered
    from fairwatch.consumers.kafka_worker import ApplyFailed, WorkerCollector, make_worker
    from fairwatch.consumers.state import StateStore
    from fairwatch.monitor.pipeline import Pipeline

    scorer = build_stages(args)  # before connecting: a bad model or lexicon fails fast
    responses = build_response_scorer(args)
    pipeline = Pipeline(config, stages=scorer.stages())
    if responses is not None:
        pipeline.response_scorer = responses
    if args.rebuild_state and not settings.state_dir:
        raise UsageError("--rebuild-state needs --state-dir (the snapshot to set aside)")
    # A StateError or ClientMissing is one line, exit 2 (fairwatch.command_support.run_command).
    state = StateStore(settings.state_dir) if settings.state_dir else None
    if args.rebuild_state:
        aside = state.set_aside()
        print(f"rebuilding: snapshot {'set aside as ' + str(aside) if aside else 'none to set aside'}; "
              "counting again from the oldest retained offsets", file=sys.stderr, flush=True)
    worker = make_worker(settings, pipeline, state=state, rebuild=args.rebuild_state)
    if settings.metrics_port is not None:
        from fairwatch.monitor.exporter import make_registry

        registry = make_registry(pipeline)
        registry.register(WorkerCollector(worker))
        collector = scorer.collector()
        if collector is not None:
            registry.register(collector)
        serve_registry(registry, settings.metrics_port, settings.metrics_addr)

    def request_stop(signum, _frame) -> None:
        logging.getLogger("fairwatch.worker").info("%s: finishing the batch, committing, closing",
                                                   signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        worker.connect()
    except worker.client_errors as exc:
        raise UsageError(f"cannot connect to Kafka at {','.join(settings.bootstrap_list())}: {exc}") from None
    print(f"consuming {', '.join(settings.topics())} as group {settings.group_id!r} ({settings.client})",
          file=sys.stderr, flush=True)
    try:
        worker.run()
    except ApplyFailed as exc:
        print(f"fairwatch run: error: {exc}; a restart reads it again", file=sys.stderr, flush=True)
        return 1
    except DeadLettersUndelivered as exc:
        print(f"fairwatch run: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        scorer.close()
    print("stopped: batch applied, offsets committed", file=sys.stderr, flush=True)
    return 0
