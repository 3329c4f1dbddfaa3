"""One settings document for every command: ``--config FILE``, parsed once, then the flags.

One TOML file serves every command, and every command reads it whole (a
mistake in any table stops any command, in one line naming the file, the
table and the key). The rule:

- the core's settings (:class:`~fairwatch.monitor.config.MonitorConfig`) are a
  ``[monitor]`` table or, in a file without one, its top-level keys;
- ``[kafka]`` (:class:`~fairwatch.consumers.kafka_config.KafkaSettings`) is read
  by every command that connects to Kafka: all of it by ``fairwatch run``, the
  connection keys (brokers, topics, security) by ``join``, ``produce``,
  ``export``, ``trigger serve`` and ``probe --prompts-from-kafka``;
- ``[alerts]`` (:class:`~fairwatch.alerts.rules.AlertSettings`) is read by
  ``rules render``, ``dashboards render`` and ``trigger serve``;
- ``[join]`` (:class:`~fairwatch.consumers.join_config.JoinOptions`) is read by
  ``fairwatch join``;
- any other table is an error, and so is an unknown key in a table.

A flag given on the command line wins over the file; each default is defined
once, on the struct that owns the table, and ``docs/configuration.md`` is
generated from those structs (``python -m fairwatch.settings --write
docs/configuration.md``; a test checks the committed copy).

>>> s = parse_settings({"min_group_size": 50, "kafka": {"group_id": "g"}}, source="f.toml")
>>> s.monitor.min_group_size, s.kafka.group_id, s.alerts.breach_for
(50, 'g', '5m')
>>> parse_settings({"kafka": {"group": "g"}}, source="bad.toml")
Traceback (most recent call last):
...
fairwatch.monitor.config.ConfigError: bad.toml: [kafka]: Object contains unknown field `group`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Union

import msgspec
import msgspec.inspect as mi

from fairwatch.alerts.rules import AlertSettings, moved_key
from fairwatch.consumers.join_config import JoinOptions
from fairwatch.consumers.kafka_config import CONNECTION_KEYS, KafkaSettings, parse_kafka_settings, readable
from fairwatch.monitor.config import (ConfigError, MonitorConfig, ThresholdOverride, Thresholds, located,
                                      monitor_table, parse_config, read_toml)

__all__ = ["Settings", "parse_settings", "load_settings", "from_args", "reference", "TABLES", "CONNECTION_KEYS"]

# The tables of the file and the struct that owns each (beside its owner: the core never imports the others).
TABLES: dict[str, type] = {"monitor": MonitorConfig, "kafka": KafkaSettings, "alerts": AlertSettings,
                           "join": JoinOptions}
# Flags of the pipeline commands that set [monitor] keys (fairwatch.flags.add_config_flags, run's --attribute).
MONITOR_FLAGS = ("min_group_size", "privacy_floor", "exemplars")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The whole configuration of one command: the file's tables, validated, with the flags applied."""

    monitor: MonitorConfig = msgspec.field(default_factory=MonitorConfig)
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    alerts: AlertSettings = msgspec.field(default_factory=AlertSettings)
    join: JoinOptions = msgspec.field(default_factory=JoinOptions)
    source: Union[str, None] = None  # the file, for error lines

    def with_monitor(self, **overrides: Any) -> "Settings":
        """These ``[monitor]`` keys replaced (None: not given), validated together with the rest."""
        given = {key: value for key, value in overrides.items() if value is not None}
        if not given:
            return self
        try:
            monitor = parse_config({**msgspec.to_builtins(self.monitor), **given})
        except ConfigError as exc:
            raise ConfigError(f"{located(self.source, 'monitor')}{exc}") from None
        return msgspec.structs.replace(self, monitor=monitor)

    def with_kafka(self, **overrides: Any) -> "Settings":
        """These ``[kafka]`` keys replaced (None: not given), then checked as a whole (brokers, topics, files)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        data = {**msgspec.to_builtins(self.kafka), **given}
        protocol = given.get("security_protocol")
        if protocol is not None:  # a protocol flag replaces the file's: its other family's keys no longer apply
            unused = [k for k in data if (k.startswith("sasl_") and not protocol.startswith("SASL"))
                      or (k.startswith("ssl_") and not protocol.endswith("SSL"))]
            for key in unused:
                if key not in given:
                    data[key] = None
        try:
            kafka = parse_kafka_settings(data)
        except ConfigError as exc:
            raise ConfigError(f"{located(self.source)}{exc}") from None
        return msgspec.structs.replace(self, kafka=kafka)

    def with_join(self, **overrides: Any) -> "Settings":
        """These ``[join]`` keys replaced (None: not given), validated as the file's are."""
        data = {**msgspec.to_builtins(self.join), **{k: v for k, v in overrides.items() if v is not None}}
        try:
            join = msgspec.convert(data, JoinOptions)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{located(self.source, 'join')}{readable(exc)}") from None
        return msgspec.structs.replace(self, join=join)


def parse_settings(document: dict, source: str | Path | None = None) -> Settings:
    """Every table of a TOML document, by the rule above; each problem one ConfigError line."""
    source = str(source) if source is not None else None
    try:
        monitor = monitor_table(document)
    except ConfigError as exc:
        raise ConfigError(f"{located(source)}{exc}") from None
    tables: dict[str, Any] = {"source": source}
    for name, struct in TABLES.items():
        table = monitor if name == "monitor" else document.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{located(source, name)}must be a table, got {type(table).__name__} "
                              f"({name} = ... at the top level)")
        moved = moved_key(table) if name == "alerts" else None
        if moved:
            raise ConfigError(f"{located(source, name)}{moved}")
        try:
            tables[name] = msgspec.convert(table, struct)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{located(source, name)}{readable(exc)}") from None
    return Settings(**tables)


def load_settings(path: str | Path | None = None) -> Settings:
    """The settings of a TOML file (defaults without one)."""
    return parse_settings(read_toml(path), source=path)


def from_args(args: argparse.Namespace, *, kafka_keys: tuple[str, ...] | None = None,
              **monitor_overrides: Any) -> Settings:
    """A command's settings: its ``--config`` file, then its flags, then ``monitor_overrides``.

    ``kafka_keys``: the ``[kafka]`` keys the command takes from flags of the same name (``CONNECTION_KEYS``,
    or every field for ``fairwatch run``); None for commands that do not connect to Kafka (their ``[kafka]``
    table is validated but not checked against the machine: a missing certificate does not stop a replay).
    """
    settings = load_settings(getattr(args, "config", None))
    flags = {key: getattr(args, key, None) for key in MONITOR_FLAGS}
    if getattr(args, "intersection", None):
        flags["intersections"] = [spec.split("&") for spec in args.intersection]
    if getattr(args, "tracked_attributes", None):  # `fairwatch run --attribute`
        flags["attributes"] = list(args.tracked_attributes)
    settings = settings.with_monitor(**flags, **monitor_overrides)
    if kafka_keys is not None:
        given = {key: getattr(args, key, None) for key in kafka_keys}
        if "models" in kafka_keys and not getattr(args, "models", None):
            given["models"] = None  # an empty --model list is "not given", not "no model"
        settings = settings.with_kafka(**given)
    return settings


# -- the generated reference (docs/configuration.md) ------------------------------------------------------

def _type_name(t: mi.Type) -> str:
    if isinstance(t, mi.UnionType):
        names = [_type_name(member) for member in t.types if not isinstance(member, mi.NoneType)]
        return " or ".join(names) + (" (may be unset)" if t.includes_none else "")
    if isinstance(t, mi.LiteralType):
        return " or ".join(json.dumps(value) for value in t.values)
    if isinstance(t, mi.ListType):
        return f"list of {_type_name(t.item_type)}" if not isinstance(t.item_type, mi.StructType) else "array of tables"
    if isinstance(t, mi.StructType):
        return "table"
    name = {mi.IntType: "integer", mi.FloatType: "number", mi.StrType: "string", mi.BoolType: "boolean"}.get(type(t))
    if name is None:
        raise TypeError(f"no name for {t}")
    bounds = [f"{sign} {_number(getattr(t, attr))}" for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if getattr(t, attr, None) is not None]
    return name + (f" ({', '.join(bounds)})" if bounds else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _default(struct: type, field: mi.Field) -> str:
    shown = getattr(struct, "DOC_DEFAULTS", {}).get(field.name)
    if shown is not None:
        return shown
    value = field.default if field.default_factory is msgspec.NODEFAULT else field.default_factory()
    if value is None:
        return "unset"
    if isinstance(value, msgspec.Struct):
        return "see below"
    return f"`{json.dumps(msgspec.to_builtins(value))}`"


def _table(heading: str, struct: type) -> list[str]:
    help_ = struct.FIELD_HELP
    fields = mi.type_info(struct).fields
    missing = [f.name for f in fields if not help_.get(f.name)]
    stale = sorted(set(help_) - {f.name for f in fields})
    if missing or stale:
        raise ValueError(f"{struct.__name__}.FIELD_HELP: no line for {missing}, lines for no field {stale}")
    lines = [f"## {heading}", "", (struct.__doc__ or "").strip().splitlines()[0], "",
             "| key | type | default | what it does |", "| --- | --- | --- | --- |"]
    for field in fields:
        text = help_[field.name].replace("|", "\\|")
        lines.append(f"| `{field.name}` | {_type_name(field.type)} | {_default(struct, field)} | {text} |")
    return lines + [""]


def reference() -> str:
    """docs/configuration.md, generated from the structs that own the tables."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m fairwatch.settings --write docs/configuration.md` from the settings structs"
        " (their FIELD_HELP); edit those, not this file. A test checks that the two agree. -->",
        "",
        "Every command reads one TOML file, `--config FILE`, whole: a mistake in any table stops it with one",
        "line naming the file, the table and the key. Flags given on the command line win over the file.",
        "",
        "- The monitor's settings are a `[monitor]` table or, in a file without one, the file's top-level keys.",
        "- `[kafka]` is read by every command that connects to Kafka: all of it by `fairwatch run`, the",
        "  connection keys by `join`, `produce`, `export`, `trigger serve` and `probe --prompts-from-kafka`:",
        f"  {', '.join(f'`{k}`' for k in CONNECTION_KEYS)}.",
        "- `[alerts]` is read by `rules render`, `dashboards render` and `trigger serve`.",
        "- `[join]` is read by `fairwatch join` (its brokers, source topics and security come from `[kafka]`).",
        "- Any other table, and any unknown key, is an error.",
        "",
        "```toml",
        "[monitor]",
        'attributes = ["race", "sex"]',
        'intersections = [["race", "sex"]]',
        "",
        "[monitor.thresholds]",
        "demographic_parity_difference = 0.05",
        "",
        "[[monitor.threshold_overrides]]",
        'model = "credit-risk"',
        "demographic_parity_ratio = 0.9",
        "",
        "[kafka]",
        'bootstrap_servers = "kafka-1:9092,kafka-2:9092"',
        'state_dir = "/var/lib/fairwatch/worker-1"',
        "",
        "[alerts]",
        'breach_for = "10m"',
        "",
        "[join]",
        "ttl_seconds = 1209600  # outcomes up to 14 days late",
        "```",
        "",
    ]
    lines += _table("`[monitor]`", MonitorConfig)
    lines += _table("`[monitor.thresholds]`", Thresholds)
    lines += _table("`[[monitor.threshold_overrides]]`", ThresholdOverride)
    lines += _table("`[kafka]`", KafkaSettings)
    lines += _table("`[alerts]`", AlertSettings)
    lines += _table("`[join]`", JoinOptions)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairwatch.settings",
                                     description="Print or write the generated configuration reference.")
    parser.add_argument("--write", metavar="FILE", help="write the reference to FILE (default: print it)")
    args = parser.parse_args(argv)
    text = reference()
    if args.write:
        Path(args.write).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
