"""The ``fairwatch`` command line.

Subcommands of the core live here; adapters (``consumers``, ``alerts``,
``dashboards``) contribute theirs through the ``fairwatch.commands`` entry
point group, so the core never imports them. Every user-facing error (a
``fairwatch.monitor.errors.FairwatchError``) ends in one place,
``fairwatch.command_support.run_command``, as one line on stderr and exit status 2. Nothing but ``fairwatch.__main__`` and the
console script imports this module: the commands take their helpers from
``fairwatch.command_support``.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

from fairwatch import __version__
from fairwatch.command_support import (  # noqa: F401  (UsageError, EXIT_USAGE: still importable from here)
    EXIT_USAGE,
    OneLineParser,
    UsageError,
    dump_stacks_on_sigusr1,
    run_command,
    tune_gc,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fairwatch", description="Streaming fairness monitor for deployed models.")
    parser.add_argument("--version", action="version", version=f"fairwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    commands.required = True
    from fairwatch import decide, demo

    decide.register(commands)
    demo.register(commands)
    try:
        from fairwatch import score_command
    except ImportError:  # the scorer is optional until its module lands
        score_command = None
    if score_command is not None and hasattr(score_command, "register"):
        score_command.register(commands)
    for entry in sorted(entry_points(group="fairwatch.commands"), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:  # an adapter whose extra is not installed
            _register_missing(commands, entry.name, exc)
            continue
        register(commands)
    return parser


def _register_missing(commands, name: str, exc: ImportError) -> None:
    """A command whose module cannot be imported still answers, in one line."""
    missing = getattr(exc, "name", None) or str(exc)

    def explain(args: argparse.Namespace) -> int:
        raise UsageError(f"needs {missing}, which is not installed (pip install 'fairwatch[kafka,ml]')")

    parser = commands.add_parser(name, help=f"(unavailable: {missing} is not installed)", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=explain)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    tune_gc()
    dump_stacks_on_sigusr1()
    return run_command(parser.parse_args(argv))
