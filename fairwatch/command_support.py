"""What the ``fairwatch`` commands share, below the command line that registers them.

Every command module (``fairwatch.demo``, ``fairwatch.consumers.run_command``,
...) imports its helpers from here, never from ``fairwatch.cli``: the CLI
imports the commands, so the commands importing the CLI back would be a
cycle (an import-linter contract in pyproject.toml forbids it).
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import math
import signal
import sys
import time
from collections.abc import Callable

from fairwatch.monitor.errors import EXIT_USAGE, FairwatchError, UsageError

__all__ = ["EXIT_USAGE", "FairwatchError", "OneLineParser", "UsageError", "config_from_args",
           "dump_stacks_on_sigusr1", "finite_float", "http_url", "keep_serving", "number_between", "port_number", "positive_float",
           "run_command", "serve_registry", "tune_gc", "whole_number"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line, not a usage dump."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def finite_float(text: str) -> float:
    """argparse type: a finite number (``float`` alone takes nan and inf, which disable what they bound)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a rate or an interval: 0, negatives and nan mean nothing there).

    >>> positive_float("2.5")
    2.5
    """
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def whole_number(lowest: int, highest: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number from ``lowest`` (to ``highest``), both included.

    >>> whole_number(1)("3"), whole_number(0, 2**32 - 1)("0")
    (3, 0)
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest or (highest is not None and value > highest):
            bounds = f"from {lowest} to {highest}" if highest is not None else f"of at least {lowest}"
            raise argparse.ArgumentTypeError(f"{value} is not a whole number {bounds}")
        return value

    return parse


def number_between(lowest: float, highest: float = math.inf, *, exclusive: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number from ``lowest`` to ``highest`` (strictly between them if ``exclusive``).

    >>> number_between(0, 1, exclusive=True)("0.25"), number_between(0)("0")
    (0.25, 0.0)
    """
    def parse(text: str) -> float:
        value = finite_float(text)
        inside = lowest < value < highest if exclusive else lowest <= value <= highest
        if not inside:
            top = f" and {highest:g}" if highest != math.inf else ""
            where = (f"strictly between {lowest:g}{top}" if exclusive and top else
                     f"above {lowest:g}" if exclusive else
                     f"from {lowest:g} to {highest:g}" if top else f"of at least {lowest:g}")
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {where}")
        return value

    return parse


def http_url(text: str) -> str:
    """argparse type: an http(s) URL with a host (urllib would also open file: and ftp:, and a URL whose port
    is not a number fails only at its first request).

    >>> http_url("http://worker-0:9108/metrics")
    'http://worker-0:9108/metrics'
    """
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number, or past 65535)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL (e.g. http://host:9108/metrics)")
    return text


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free port) to 65535 (a socket refuses others with a traceback).

    >>> port_number("9108"), port_number("0")
    (9108, 0)
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def tune_gc() -> None:
    """Collector settings for a long-running stream process.

    The journal, the dedup index and the batches hold millions of objects,
    and CPython's default thresholds (700 allocations) rescan them over and
    over: about 1 us of every event's cost. Objects alive after start-up
    are frozen out of the scans, and collections run every 50,000
    allocations instead. Cycles are still collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def dump_stacks_on_sigusr1() -> None:
    """``kill -USR1 PID`` prints every thread's stack to stderr and the process goes on:
    what an on-call engineer needs from a worker that looks stuck."""
    try:
        # The process's own stderr: sys.stderr may be replaced (pytest's capture has no fileno).
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    except (AttributeError, ValueError, OSError):  # no usable stderr (e.g. closed): go on without
        pass


def serve_registry(registry, port: int, addr: str):
    """What every command with a metrics port does: serve ``registry`` on /metrics from a
    background thread, say where on stderr, and return the server. A port that cannot be
    bound is a one-line usage error (exit 2)."""
    from fairwatch.monitor import exporter

    try:
        server, bound = exporter.serve_registry(registry, port, addr)
    except OSError as exc:
        raise UsageError(f"cannot serve /metrics on port {port}: {exc.strerror} (--metrics-port 0: any free port)"
                         ) from None
    print(f"serving metrics on http://{addr}:{bound}/metrics", file=sys.stderr, flush=True)
    return server


def keep_serving(message: str) -> None:
    """Block, /metrics still served by its thread, until Ctrl-C (``replay --metrics-port``, ``demo --keep-serving``)."""
    print(message, file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def config_from_args(args: argparse.Namespace, **overrides):
    """The MonitorConfig of a command: its --config file (read whole, fairwatch.settings), then flags, then
    ``overrides``."""
    from fairwatch.settings import from_args

    return from_args(args, **overrides).monitor


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; every user-facing error (a FairwatchError) becomes one line and its exit status (2)."""
    try:
        return int(args.handler(args) or 0)
    except FairwatchError as exc:
        print(f"fairwatch {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:  # an optional extra the command needs is not installed
        print(f"fairwatch {args.command}: error: needs the Python package {exc.name!r}, which is not installed "
              "(pip install 'fairwatch[kafka,ml]')", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"fairwatch {args.command}: interrupted", file=sys.stderr)
        return 130
