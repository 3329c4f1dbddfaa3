"""``fairwatch dev-broker``: a local Kafka-protocol broker (Tansu, in memory) in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys

from fairwatch.consumers.broker import TansuBroker, create_topics
from fairwatch.command_support import UsageError, port_number

DEFAULT_TOPICS = ("fairwatch.predictions", "fairwatch.outcomes", "fairwatch.dlq")


def register(commands) -> None:
    parser = commands.add_parser("dev-broker", help="run a local Kafka-protocol broker (Tansu, memory storage)")
    parser.add_argument("--port", type=port_number, default=9092, help="port on 127.0.0.1 (9092; 0 = any free port)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of the fairwatch.* topics created on start (4; 0 = create none)")
    parser.add_argument("--quiet", action="store_true", help="hide the broker's own log")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise UsageError("--port must be between 0 and 65535")
    if args.partitions < 0:
        raise UsageError("--partitions must be 0 or more")
    broker = TansuBroker(port=args.port or None)
    broker.start(foreground_output=not args.quiet)  # a BrokerError is one line (fairwatch.command_support.run_command)
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if args.partitions:
            create_topics(broker.bootstrap_servers, {t: args.partitions for t in DEFAULT_TOPICS})
        print(f"Kafka-protocol broker (Tansu, memory storage) on {broker.bootstrap_servers}; "
              f"topics {', '.join(DEFAULT_TOPICS) if args.partitions else 'none'}; Ctrl-C stops it",
              file=sys.stderr, flush=True)
        status = broker.process.wait()
        print(f"fairwatch dev-broker: tansu exited with status {status}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
