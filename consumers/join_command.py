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

from fairwatch.consumers.join_config import JOIN_FLAG_KEYS, JoinOptions
from fairwatch.consumers.kafka_config import CONNECTION_KEYS, add_security_flags
from fairwatch.command_support import UsageError, serve_registry, finite_float
from fairwatch.flags import (add_bootstrap_flag, add_config_file_flag, add_flag, add_log_level_flag,
                             add_metrics_flags, add_topic_flags, seconds_to_ms, struct_default)


def _default(key: str) -> str:
    return struct_default(JoinOptions, key)


def register(commands) -> None:
    parser = commands.add_parser(
        "join", help="join late outcomes to predictions (faust-streaming), feeding a labeled topic",
        description="Consume the predictions and outcomes topics (keyed by event_id, same partition count), keep "
                    "pending predictions and early outcomes in changelog-backed tables, and write predictions "
                    "(at once) and their outcomes (when they come) to the labeled topic that `fairwatch run` "
                    "consumes. Needs the kafka extra (faust-streaming). The brokers, topics and security come from "
                    "the [kafka] table of --config, the rest from its [join] table (flags win).")
    add_config_file_flag(parser, "[kafka] connection keys and [join]")
    add_bootstrap_flag(parser, default=None)
    add_topic_flags(parser, predictions=None, outcomes=None)
    # Each flag overrides the [join] key of the same name; the defaults (shown) are that table's.
    parser.add_argument("--labeled-topic", help=f"topic written for the worker ({_default('labeled_topic')})")
    parser.add_argument("--app-id", help="Faust app id: consumer group and prefix of the changelog topics "
                                         f"({_default('app_id')})")
    parser.add_argument("--ttl-seconds", type=finite_float,
                        help="wall-clock seconds an entry waits for its other half, from its first arrival at the "
                             "join; then an early outcome is counted orphaned, a prediction expired (604800, 7 days)")
    parser.add_argument("--sweep-seconds", type=finite_float,
                        help=f"seconds between TTL sweeps ({_default('sweep_seconds')})")
    parser.add_argument("--commit-interval-seconds", type=finite_float,
                        help=f"seconds between offset commits ({_default('commit_interval_seconds')})")
    # Milliseconds, as Kafka (and `fairwatch run --session-timeout-ms`) name them; the seconds spellings are aliases.
    add_flag(parser, "--session-timeout-ms", type=int, aliases=("--session-timeout-seconds",),
             alias_type=finite_float, alias_convert=seconds_to_ms,
             help=f"group session timeout ({_default('session_timeout_ms')})")
    add_flag(parser, "--rebalance-timeout-ms", type=int, aliases=("--rebalance-timeout-seconds",),
             alias_type=finite_float, alias_convert=seconds_to_ms,
             help=f"how long a rebalance waits for members ({_default('rebalance_timeout_ms')})")
    parser.add_argument("--max-poll-interval-ms", type=int,
                        help="longest time between two fetches before the member leaves its group; keep it "
                             f"well above the slowest batch on a loaded machine ({_default('max_poll_interval_ms')})")
    parser.add_argument("--stall-warning-seconds", type=finite_float,
                        help="log one warning when the join stays not ready (rebalancing, or dropped from its "
                             f"group) this long ({_default('stall_warning_seconds')})")
    parser.add_argument("--exit-on-stall", action="store_true", default=None,
                        help="exit with status 75 when dropped from the group and not rejoining for the stall "
                             "warning's time plus the rebalance timeout, for a supervisor to restart the join "
                             f"({_default('exit_on_stall')}: it only warns)")
    parser.add_argument("--auto-offset-reset", choices=("earliest", "latest"),
                        help=f"where a new group starts ({_default('auto_offset_reset')})")
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
    given = {key: getattr(args, key, None) for key in JOIN_FLAG_KEYS}
    for key, value in given.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise UsageError(f"--{key.replace('_', '-')} must be positive, got {value:g}")
    from fairwatch.settings import from_args

    settings = from_args(args, kafka_keys=CONNECTION_KEYS).with_join(**given)
    kafka, options = settings.kafka, settings.join
    bootstrap = ",".join(kafka.bootstrap_list())
    predictions_topic, outcomes_topic = kafka.predictions_topic, kafka.outcomes_topic
    if not outcomes_topic:
        raise UsageError("the join needs an outcomes topic (--outcomes-topic or [kafka] outcomes_topic)")
    topics = {predictions_topic, outcomes_topic, options.labeled_topic}
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
        outcomes_topic=outcomes_topic, labeled_topic=options.labeled_topic, app_id=options.app_id,
        ttl_seconds=options.ttl_seconds, sweep_interval_seconds=options.sweep_seconds,
        partitions=found[predictions_topic], commit_interval_seconds=options.commit_interval_seconds,
        session_timeout_seconds=options.session_timeout_ms / 1000,
        rebalance_timeout_seconds=options.rebalance_timeout_ms / 1000,
        max_poll_interval_seconds=options.max_poll_interval_ms / 1000,
        stall_warning_seconds=options.stall_warning_seconds, exit_on_stall=options.exit_on_stall,
        auto_offset_reset=options.auto_offset_reset,
        producer_max_batch_size=options.producer_max_batch_size,
        client_kwargs={"broker_credentials": credentials} if credentials is not None else {},
    )
    metrics = JoinMetrics()
    if args.metrics_port is not None:
        serve_registry(metrics.registry, args.metrics_port, args.metrics_addr)
    app = build_app(settings, metrics)
    print(f"joining {predictions_topic} + {outcomes_topic} -> {options.labeled_topic} "
          f"({settings.partitions} partitions, TTL {options.ttl_seconds:g} s wall clock) as {options.app_id!r}",
          file=sys.stderr, flush=True)

    from faust.worker import Worker

    # Handles SIGTERM/SIGINT: stops the agent, commits what was processed, exits.
    worker = Worker(app, loglevel=args.log_level, redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()
    return 0
