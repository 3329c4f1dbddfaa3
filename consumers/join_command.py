"""``fairwatch join``: the faust-streaming app that joins late outcomes to predictions.

It reads the predictions and outcomes topics and writes the labeled topic
that ``fairwatch run --predictions-topic fairwatch.labeled --outcomes-topic ''``
consumes. See ``consumers/outcome_join.py`` for what is forwarded and why.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys

from fairwatch.consumers.kafka_config import add_security_flags, parse_kafka_settings
from fairwatch.consumers.outcome_join import JoinSettings
from fairwatch.cli import UsageError, serve_registry, finite_float
from fairwatch.flags import add_bootstrap_flag, add_log_level_flag, add_metrics_flags, add_topic_flags
from fairwatch.monitor.config import ConfigError


def register(commands) -> None:
    defaults = JoinSettings()  # one place for the defaults (outcome_join imports without Faust)
    parser = commands.add_parser(
        "join", help="join late outcomes to predictions (faust-streaming), feeding a labeled topic",
        description="Consume the predictions and outcomes topics (keyed by event_id, same partition count), keep "
                    "pending predictions and early outcomes in changelog-backed tables, and write predictions "
                    "(at once) and their outcomes (when they come) to the labeled topic that `fairwatch run` "
                    "consumes. Needs the kafka extra (faust-streaming).")
    add_bootstrap_flag(parser, default=defaults.bootstrap_servers)
    add_topic_flags(parser, predictions=defaults.predictions_topic, outcomes=defaults.outcomes_topic)
    parser.add_argument("--labeled-topic", default=defaults.labeled_topic,
                        help=f"topic written for the worker ({defaults.labeled_topic})")
    parser.add_argument("--app-id", default=defaults.app_id,
                        help=f"Faust app id: consumer group and prefix of the changelog topics ({defaults.app_id})")
    parser.add_argument("--ttl-seconds", type=finite_float, default=defaults.ttl_seconds,
                        help="wall-clock seconds an entry waits for its other half, from its first arrival at the "
                             "join; then an early outcome is counted orphaned, a prediction expired (7 days)")
    parser.add_argument("--sweep-seconds", type=finite_float, help="seconds between TTL sweeps (ttl/10, 0.5 to 60)")
    parser.add_argument("--commit-interval-seconds", type=finite_float, default=defaults.commit_interval_seconds,
                        help=f"seconds between offset commits ({defaults.commit_interval_seconds:g})")
    parser.add_argument("--session-timeout-seconds", type=finite_float, default=defaults.session_timeout_seconds,
                        help=f"group session timeout, seconds as Faust takes it ({defaults.session_timeout_seconds:g})")
    parser.add_argument("--rebalance-timeout-seconds", type=finite_float, default=defaults.rebalance_timeout_seconds,
                        help=f"rebalance timeout ({defaults.rebalance_timeout_seconds:g})")
    parser.add_argument("--auto-offset-reset", choices=("earliest", "latest"), default=defaults.auto_offset_reset,
                        help=f"where a new group starts ({defaults.auto_offset_reset})")
    parser.add_argument("--producer-max-batch-size", type=int, metavar="BYTES",
                        help="largest record batch produced (Faust's default 16384); 1 = one record per batch, "
                             "needed on Tansu, whose end offsets are wrong after multi-record batches, so that a "
                             "restarted join recovers its whole changelog")
    add_metrics_flags(parser, addr="0.0.0.0", port_help="serve the join's counters on /metrics (none: log only)")
    add_security_flags(parser)
    add_log_level_flag(parser)
    parser.set_defaults(handler=run)


def _credentials(settings):
    """faust broker_credentials from the shared security flags (None for PLAINTEXT)."""
    import faust

    protocol = settings.security_protocol or "PLAINTEXT"
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if protocol.startswith("SASL"):
        kwargs = settings.client_kwargs()
        return faust.SASLCredentials(username=kwargs.get("sasl_plain_username"),
                                     password=kwargs.get("sasl_plain_password"),
                                     mechanism=settings.sasl_mechanism or "PLAIN", ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s fairwatch join %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":  # --log-level debug shows the clients' and Faust's own logs
        for noisy in ("kafka", "aiokafka", "faust", "mode"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        import faust  # noqa: F401
    except ImportError:
        raise UsageError("fairwatch join needs faust-streaming: pip install 'fairwatch[kafka]'") from None
    if args.ttl_seconds <= 0:
        raise UsageError("--ttl-seconds must be positive")
    topics = {args.predictions_topic, args.outcomes_topic, args.labeled_topic}
    if len(topics) < 3:
        raise UsageError("--predictions-topic, --outcomes-topic and --labeled-topic must differ")
    try:
        kafka = parse_kafka_settings({k: v for k, v in {
            "bootstrap_servers": args.bootstrap_servers, "predictions_topic": args.predictions_topic,
            "outcomes_topic": args.outcomes_topic, "security_protocol": args.security_protocol,
            "sasl_mechanism": args.sasl_mechanism, "sasl_username": args.sasl_username,
            "sasl_password": args.sasl_password, "ssl_cafile": args.ssl_cafile, "ssl_certfile": args.ssl_certfile,
            "ssl_keyfile": args.ssl_keyfile,
        }.items() if v is not None})
    except ConfigError as exc:
        raise UsageError(str(exc)) from None

    from kafka.errors import KafkaError

    from fairwatch.consumers.outcome_join import JoinMetrics, JoinSettings, build_app, topic_partitions

    try:
        found = topic_partitions(args.bootstrap_servers, [args.predictions_topic, args.outcomes_topic],
                                 **{k: v for k, v in kafka.client_kwargs().items() if k != "bootstrap_servers"})
    except KafkaError as exc:
        raise UsageError(f"cannot connect to Kafka at {args.bootstrap_servers}: {exc}") from None
    if args.predictions_topic not in found:
        raise UsageError(f"topic {args.predictions_topic!r} does not exist (create it, keyed by event_id)")
    if args.outcomes_topic in found and found[args.outcomes_topic] != found[args.predictions_topic]:
        raise UsageError(f"{args.predictions_topic} has {found[args.predictions_topic]} partitions but "
                         f"{args.outcomes_topic} has {found[args.outcomes_topic]}: the join needs them co-partitioned")
    credentials = _credentials(kafka)
    settings = JoinSettings(
        bootstrap_servers=args.bootstrap_servers, predictions_topic=args.predictions_topic,
        outcomes_topic=args.outcomes_topic, labeled_topic=args.labeled_topic, app_id=args.app_id,
        ttl_seconds=args.ttl_seconds, sweep_interval_seconds=args.sweep_seconds,
        partitions=found[args.predictions_topic], commit_interval_seconds=args.commit_interval_seconds,
        session_timeout_seconds=args.session_timeout_seconds,
        rebalance_timeout_seconds=args.rebalance_timeout_seconds, auto_offset_reset=args.auto_offset_reset,
        producer_max_batch_size=args.producer_max_batch_size,
        client_kwargs={"broker_credentials": credentials} if credentials is not None else {},
    )
    metrics = JoinMetrics()
    if args.metrics_port is not None:
        serve_registry(metrics.registry, args.metrics_port, args.metrics_addr)
    app = build_app(settings, metrics)
    print(f"joining {args.predictions_topic} + {args.outcomes_topic} -> {args.labeled_topic} "
          f"({settings.partitions} partitions, TTL {args.ttl_seconds:g} s wall clock) as {args.app_id!r}",
          file=sys.stderr, flush=True)

    from faust.worker import Worker

    # Handles SIGTERM/SIGINT: stops the agent, commits what was processed, exits.
    worker = Worker(app, loglevel=args.log_level, redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()
    return 0
