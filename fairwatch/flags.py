"""The flags that several ``fairwatch`` commands share, defined once with one spelling each.

A concept has one name on every command (``--metrics-port``/``--metrics-addr``
for where /metrics is served, ``--predictions-topic``/``--outcomes-topic``
for the topics, ``--scorer-*`` for the counterfactual scorer). Older
spellings stay as hidden aliases that still work and say, on stderr, what
replaces them. Units: Kafka's own client timeouts are in milliseconds, as
Kafka names them (``--session-timeout-ms``, ``--rebalance-timeout-ms``);
fairwatch's own intervals are in seconds (``--commit-interval-seconds``).
CSV columns end in ``-col`` (``--group-col``); protected attributes are
``--attribute`` (repeatable). Servers listen on ``--metrics-addr``/``--metrics-port``
(``--listen-addr``/``--listen-port`` where the port also takes webhooks).

A flag whose default lives in the configuration file's structs defaults to
None here (the file wins when the flag is not given) and shows the struct's
default in its help: each default is defined once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fairwatch.command_support import port_number

__all__ = ["add_bootstrap_flag", "add_config_file_flag", "add_config_flags", "add_flag", "add_log_level_flag", "add_metrics_flags",
           "add_progress_flag", "add_report_flag", "add_topic_flags", "DeprecatedAlias", "NoEffect"]

def _kafka_default(field: str) -> str:
    from fairwatch.consumers.kafka_config import KafkaSettings

    return getattr(KafkaSettings(), field)


BOOTSTRAP_SERVERS = _kafka_default("bootstrap_servers")
PREDICTIONS_TOPIC = _kafka_default("predictions_topic")
OUTCOMES_TOPIC = _kafka_default("outcomes_topic")


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: hidden from --help, sets the new flag's value, warns once per use."""

    def __init__(self, option_strings, dest, canonical: str, convert=None, append: bool = False,
                 **kwargs: Any) -> None:
        self.canonical = canonical
        self.convert = convert  # old value -> the canonical flag's value (another unit, a list from a CSV, ...)
        self.append = append  # the canonical flag is repeatable: add to its list
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.canonical}", file=sys.stderr)
        value = self.convert(values) if self.convert else values
        if self.append:
            value = [*(getattr(namespace, self.dest, None) or []), *(value if isinstance(value, list) else [value])]
        setattr(namespace, self.dest, value)


class NoEffect(argparse.Action):
    """A flag that no longer does anything: still accepted, so that scripts keep running, with a warning
    that says why; hidden from --help."""

    def __init__(self, option_strings, dest, why: str, **kwargs: Any) -> None:
        self.why = why
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} has no effect: {self.why}", file=sys.stderr)


def add_flag(parser, canonical: str, *, aliases: tuple[str, ...] = (), alias_type=None, alias_convert=None,
             **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(canonical, **kwargs)`` plus a hidden :class:`DeprecatedAlias` per old spelling
    (``alias_type``/``alias_convert``: an old spelling in another unit or form)."""
    action = parser.add_argument(canonical, **kwargs)
    for old in aliases:
        parser.add_argument(old, dest=action.dest, type=alias_type or kwargs.get("type"), metavar=action.metavar,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS, action=DeprecatedAlias,
                            canonical=canonical, convert=alias_convert, append=kwargs.get("action") == "append")
    return action


def comma_list(text: str) -> list[str]:
    """An old comma-separated flag's value as the repeatable flag's list."""
    return [part.strip() for part in text.split(",") if part.strip()]


def seconds_to_ms(seconds: float) -> int:
    """An old ``--...-seconds`` flag's value as the ``--...-ms`` flag takes it."""
    return round(seconds * 1000)


def struct_default(struct: type, field: str) -> str:
    """How a flag's help shows the default of the settings field it overrides (the one definition)."""
    shown = getattr(struct, "DOC_DEFAULTS", {}).get(field)
    if shown is not None:
        return shown
    value = getattr(struct(), field)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def add_metrics_flags(parser, *, port: int | None = None, addr: str | None = "127.0.0.1",
                      port_help: str = "serve /metrics on this port (none: no server)",
                      addr_help: str | None = None, aliases: tuple[str, ...] = (),
                      addr_aliases: tuple[str, ...] = ()) -> None:
    """``--metrics-port`` and ``--metrics-addr``: where a command serves /metrics.

    ``port``/``addr`` are the defaults (None: not given, a config file or a later default wins).
    """
    add_flag(parser, "--metrics-port", type=port_number, default=port, metavar="PORT", aliases=aliases,
             help=port_help if port is None else f"{port_help} ({port})")
    add_flag(parser, "--metrics-addr", default=addr, metavar="ADDR", aliases=addr_aliases,
             help=addr_help or f"address /metrics listens on ({addr})")


def add_topic_flags(parser, *, predictions: str | None = PREDICTIONS_TOPIC, outcomes: str | None = OUTCOMES_TOPIC,
                    predictions_help: str = "topic of prediction events",
                    outcomes_help: str = "topic of outcome events",
                    predictions_aliases: tuple[str, ...] = ()) -> None:
    """``--predictions-topic`` and ``--outcomes-topic`` (defaults None: a config file's [kafka] table wins)."""
    add_flag(parser, "--predictions-topic", default=predictions, metavar="TOPIC", aliases=predictions_aliases,
             help=f"{predictions_help} ({predictions or PREDICTIONS_TOPIC})")
    parser.add_argument("--outcomes-topic", default=outcomes, metavar="TOPIC",
                        help=f"{outcomes_help} ({outcomes or OUTCOMES_TOPIC})")


def add_bootstrap_flag(parser, *, default: str | None = BOOTSTRAP_SERVERS) -> None:
    """``--bootstrap-servers`` (default None: a config file's [kafka] table wins)."""
    parser.add_argument("--bootstrap-servers", default=default, metavar="HOST:PORT[,...]",
                        help=f"Kafka brokers ({default or BOOTSTRAP_SERVERS})")


def add_log_level_flag(parser) -> None:
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="least severe log records written to stderr (info)")


def add_report_flag(parser) -> None:
    parser.add_argument("--report", choices=("table", "json"), default="table",
                        help="the report printed at the end: a table, or one JSON object (table)")


def add_progress_flag(parser, *, default: bool) -> None:
    """``--progress``/``--no-progress``: a progress bar on stderr (each command keeps its own default)."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=default,
                        help=f"a progress bar on stderr ({'on' if default else 'off'})")


def add_config_file_flag(parser: argparse.ArgumentParser, reads: str = "[monitor]") -> None:
    """``--config``: the one TOML file of every command (fairwatch.settings; docs/configuration.md)."""
    parser.add_argument("--config", metavar="TOML",
                        help=f"configuration file, read whole; this command uses its {reads} (flags win; "
                             "docs/configuration.md) (none: defaults)")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs the pipeline."""
    from fairwatch.monitor.config import MonitorConfig

    add_config_file_flag(parser)
    parser.add_argument("--min-group-size", type=int, help="groups below this take no part in alert gaps "
                                                           f"({struct_default(MonitorConfig, 'min_group_size')})")
    parser.add_argument("--privacy-floor", type=int, help="groups below this are never exported as rates "
                                                          f"({struct_default(MonitorConfig, 'privacy_floor')})")
    parser.add_argument("--no-exemplars", dest="exemplars", action="store_const", const=False,
                        help="export no event ids as exemplars on the positives counters")
    parser.add_argument(
        "--intersection", action="append", metavar="A&B", help="track an intersection of attributes, e.g. race&sex (repeatable; none)"
    )
