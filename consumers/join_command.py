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

from fairwatch.consumers.kafka_config import CONNECTION_KEYS, add_security_flags
from fairwatch.consumers.outcome_join import JoinSettings
from fairwatch.command_support import UsageError, serve_registry, finite_float
from fairwatch.flags import (add_bootstrap_flag, add_config_file_flag, add_flag, add_log_level_flag,
                             add_metrics_flags, add_topic_flags, seconds_to_ms)


def register(commands) -> None:
    defaults = JoinSettings()  # one place for the defaults (outcome_join imports without Faust)
    parser = commands.add_parser(
        "join", help="join late outcomes to predictions (faust-streaming), feeding a labeled topic",
        description="Consume the predictions and outcomes topics (keyed by event_id, same partition count), keep "
                    "pending predictions and early outcomes in changelog-backed tables, and write predictions "
                    "(at once) and their outcomes (when they come) to the labeled topic that `fairwatch run` "
                    "consumes. Needs the kafka extra (faust-streaming). The brokers, topics and security come from "
                    "the [kafka] table of --config (flags win).")
    add_config_file_flag(parser, "[kafka] connection keys")
    add_bootstrap_flag(parser, default=None)
    add_topic_flags(parser, predictions=None, outcomes=None)
    parser.add_argument("--labeled-topic", default=defaults.labeled_topic,
                        help=f"topic written for the worker ({defaults.labeled_topic})")
    parser.add_argument("--app-id", default=defaults.app_id,
                        help=f"Faust app id: consumer group and prefix of the changelog topics ({defaults.app_id})")
    parser.add_argument("--ttl-seconds", type=finite_float, default=defaults.ttl_seconds,
                        help="wall-clock seconds an entry waits for its other half, from its first arrival at the "
                             "join; then an early outcome is counted orphaned, a prediction expired (604800, 7 days)")
    parser.add_argument("--sweep-seconds", type=finite_float, help="seconds between TTL sweeps (ttl/10, 0.5 to 60)")
    parser.add_argument("--commit-interval-seconds", type=finite_float, default=defaults.commit_interval_seconds,
                        help=f"seconds between offset commits ({defaults.commit_interval_seconds:g})")
    # Milliseconds, as Kafka (and `fairwatch run --session-timeout-ms`) name them; the seconds spellings are aliases.
    add_flag(parser, "--session-timeout-ms", type=int, default=seconds_to_ms(defaults.session_timeout_seconds),
             aliases=("--session-timeout-seconds",), alias_type=finite_float, alias_convert=seconds_to_ms,
             help=f"group session timeout ({seconds_to_ms(defaults.session_timeout_seconds)})")
    add_flag(parser, "--rebalance-timeout-ms", type=int, default=seconds_to_ms(defaults.rebalance_timeout_seconds),
             aliases=("--rebalance-timeout-seconds",), alias_type=finite_float, alias_convert=seconds_to_ms,
             help=f"how long a rebalance waits for members ({seconds_to_ms(defaults.rebalance_timeout_seconds)})")
    parser.add_argument("--max-poll-interval-ms", type=int, default=seconds_to_ms(defaults.max_poll_interval_seconds),
                        help="longest time between two fetches before the member leaves its group; keep it "
                             "well above the slowest batch on a loaded machine "
                             f"({seconds_to_ms(defaults.max_poll_interval_seconds)})")
    parser.add_argument("--stall-warning-seconds", type=finite_float, default=defaults.stall_warning_seconds,
                        help="log one warning when the join stays not ready (rebalancing, or dropped from its "
                             f"group) this long ({defaults.stall_warning_seconds:g})")
    parser.add_argument("--exit-on-stall", action="store_true",
                        help="exit with status 75 when dropped from the group and not rejoining for the stall "
                             "warning's time plus the rebalance timeout, for a supervisor to restart the join "
                             "(off: it only warns)")
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
    if args.session_timeout_ms <= 0 or args.rebalance_timeout_ms <= 0 or args.max_poll_interval_ms <= 0:
        raise UsageError("--session-timeout-ms, --rebalance-timeout-ms and --max-poll-interval-ms must be positive")
    if args.stall_warning_seconds <= 0:
        raise UsageError("--stall-warning-seconds must be positive")
    from fairwatch.settings import from_args

    kafka = from_args(args, kafka_keys=CONNECTION_KEYS).kafka
    bootstrap = ",".join(kafka.bootstrap_list())
    predictions_topic, outcomes_topic = kafka.predictions_topic, kafka.outcomes_topic
    if not outcomes_topic:
        raise UsageError("the join needs an outcomes topic (--outcomes-topic or [kafka] outcomes_topic)")
    topics = {predictions_topic, outcomes_topic, args.labeled_topic}
    if len(topics) < 3:
        raise UsageError("--predictions-topic, --outcomes-topic and --labeled-topic must differ")

    from kafka.errors import KafkaError

    from fairwatch.consumers.outcome_join import JoinMetrics, JoinSettings, build_app, topic_partitions

    try:
        found = topic_partitions(bootstrap, [predictions_topic, outcomes_topic],
                                 **{k: v for k, v in kafka.client_kwargs().items() if k != "bootstrap_servers"})
    except KafkaError as exc:
        raise UsageError(f"cannot connect to Kafka at {bootstrap}: {exc}") from None
    if predictions_topic not in found:
        raise UsageError(f"topic {predictions_topic!r} does not exist (create it, keyed by event_id)")
    if outcomes_topic in found and found[outcomes_topic] != found[predictions_topic]:
        raise UsageError(f"{predictions_topic} has {found[predictions_topic]} partitions but "
                         f"{outcomes_topic} has {found[outcomes_topic]}: the join needs them co-partitioned")
    credentials = _credentials(kafka)
    settings = JoinSettings(
        bootstrap_servers=bootstrap, predictions_topic=predictions_topic,
        outcomes_topic=outcomes_topic, labeled_topic=args.labeled_topic, app_id=args.app_id,
        ttl_seconds=args.ttl_seconds, sweep_interval_seconds=args.sweep_seconds,
        partitions=found[predictions_topic], commit_interval_seconds=args.commit_interval_seconds,
        session_timeout_seconds=args.session_timeout_ms / 1000,
        rebalance_timeout_seconds=args.rebalance_timeout_ms / 1000,
        max_poll_interval_seconds=args.max_poll_interval_ms / 1000,
        stall_warning_seconds=args.stall_warning_seconds, exit_on_stall=args.exit_on_stall,
        auto_offset_reset=args.auto_offset_reset,
        producer_max_batch_size=args.producer_max_batch_size,
        client_kwargs={"broker_credentials": credentials} if credentials is not None else {},
    )
    metrics = JoinMetrics()
    if args.metrics_port is not None:
        serve_registry(metrics.registry, args.metrics_port, args.metrics_addr)
    app = build_app(settings, metrics)
    print(f"joining {predictions_topic} + {outcomes_topic} -> {args.labeled_topic} "
          f"({settings.partitions} partitions, TTL {args.ttl_seconds:g} s wall clock) as {args.app_id!r}",
          file=sys.stderr, flush=True)

    from faust.worker import Worker

    # Handles SIGTERM/SIGINT: stops the agent, commits what was processed, exits.
    worker = Worker(app, loglevel=args.log_level, redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()
    return 0
