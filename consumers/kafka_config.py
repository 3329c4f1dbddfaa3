"""Kafka settings of the worker: a ``[kafka]`` TOML table and flags, into client kwargs.

>>> s = parse_kafka_settings({"bootstrap_servers": "a:9092,b:9092", "models": ["credit"]})
>>> s.bootstrap_list(), s.predictions_topic
(['a:9092', 'b:9092'], 'fairwatch.predictions')
>>> parse_kafka_settings({"group": "x"})
Traceback (most recent call last):
...
fairwatch.monitor.config.ConfigError: [kafka]: Object contains unknown field `group`
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

import msgspec

from fairwatch.monitor.config import ConfigError, read_toml, require_finite

PASSWORD_ENV = "FAIRWATCH_KAFKA_SASL_PASSWORD"
# confluent-kafka (librdkafka, C) decodes record batches about 3x cheaper than kafka-python's pure Python
# (docs/kafka.md); kafka-python stays as the fallback that needs no compiled wheel.
CLIENTS = ("confluent", "kafka-python")


def _default_client() -> str:
    """confluent where its wheel is installed, else kafka-python (the pure-Python fallback).

    The confluent path's two short benchmark runs were the benchmark's, not the worker's: its two
    producers shared partitions, and Tansu can let a reader at the end of such a partition skip a
    batch (docs/kafka.md, "Why confluent is the default")."""
    return "confluent" if importlib.util.find_spec("confluent_kafka") is not None else "kafka-python"


DEFAULT_CLIENT = _default_client()
Positive = Annotated[int, msgspec.Meta(ge=1)]


def between(low: int, high: int) -> type:
    """An int in librdkafka's range for the setting: the client refuses others only when it starts,
    as if the broker were unreachable."""
    return Annotated[int, msgspec.Meta(ge=low, le=high)]


# Kafka's own rule for topic names (and a group or client id must not be empty).
# \Z, not $: $ also matches before a final newline. Kafka refuses "." and ".." too.
_TOPIC_PATTERN = r"^(?!\.\.?\Z)[A-Za-z0-9._-]{1,249}\Z"
_TOPIC_OR_EMPTY_PATTERN = r"^(?!\.\.?\Z)[A-Za-z0-9._-]{0,249}\Z"
Topic = Annotated[str, msgspec.Meta(pattern=_TOPIC_PATTERN)]
TopicOrEmpty = Annotated[str, msgspec.Meta(pattern=_TOPIC_OR_EMPTY_PATTERN)]
_TOPIC_RULE = "a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-', not '.' or '..')"


def readable(error: msgspec.ValidationError) -> str:
    """msgspec's message, with the topic names' regex said in words.

    >>> try:
    ...     msgspec.convert({"dlq_topic": "dead letters"}, KafkaSettings)
    ... except msgspec.ValidationError as exc:
    ...     print(readable(exc))
    Expected a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-', not '.' or '..') - at `$.dlq_topic`
    """
    return (str(error).replace(f"`str` matching regex {_TOPIC_PATTERN!r}", _TOPIC_RULE)
            .replace(f"`str` matching regex {_TOPIC_OR_EMPTY_PATTERN!r}", f'{_TOPIC_RULE} or ""'))
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# The dead-letter producer keeps 64 KiB of a request for key, headers and batch overhead.
MIN_DLQ_MAX_BYTES = 128 << 10


# kafka-python takes the SCRAM credentials under the sasl_plain_* names too; the rest keep the settings' names.
_KAFKA_PYTHON_NAMES = {"sasl_username": "sasl_plain_username", "sasl_password": "sasl_plain_password"}
_LIBRDKAFKA_NAMES = {"sasl_mechanism": "sasl.mechanism", "sasl_username": "sasl.username",
                     "sasl_password": "sasl.password", "ssl_cafile": "ssl.ca.location",
                     "ssl_certfile": "ssl.certificate.location", "ssl_keyfile": "ssl.key.location"}


class KafkaSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[kafka]`` table: where the Kafka commands connect and how the worker consumes."""

    client: Literal["confluent", "kafka-python"] = DEFAULT_CLIENT
    bootstrap_servers: Union[str, list[str]] = "127.0.0.1:9092"
    predictions_topic: Topic = "fairwatch.predictions"
    outcomes_topic: Union[TopicOrEmpty, None] = "fairwatch.outcomes"
    dlq_topic: Topic = "fairwatch.dlq"
    group_id: NonEmpty = "fairwatch"
    client_id: NonEmpty = "fairwatch"
    metrics_port: Union[between(0, 65535), None] = None
    metrics_addr: str = "0.0.0.0"
    models: list[str] = []
    commit_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    state_dir: Union[str, None] = None
    max_poll_records: between(1, 1_000_000) = 20_000
    fetch_process: bool = True
    session_timeout_ms: between(1_000, 3_600_000) = 10_000
    max_poll_interval_ms: between(1, 86_400_000) = 300_000
    max_partition_fetch_bytes: between(1, 1_000_000_000) = 1 << 20
    fetch_max_bytes: between(1_000_000, 2_147_483_135) = 50 << 20
    dlq_max_bytes: between(MIN_DLQ_MAX_BYTES, 1_000_000_000) = 16 << 20
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Union[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"], None] = None
    sasl_username: Union[str, None] = None
    sasl_password: Union[str, None] = None
    ssl_cafile: Union[str, None] = None
    ssl_certfile: Union[str, None] = None
    ssl_keyfile: Union[str, None] = None

    # One line per setting: the generated reference (docs/configuration.md) and the flags' help read it.
    FIELD_HELP: ClassVar[dict[str, str]] = {
        "client": "Kafka client library: confluent (confluent-kafka, librdkafka in C) or kafka-python (pure "
                  "Python, the fallback)",
        "bootstrap_servers": "Kafka brokers, HOST:PORT comma separated or a list",
        "predictions_topic": "topic of prediction events (or the labeled topic of `fairwatch join`)",
        "outcomes_topic": "topic of outcome events (\"\": predictions only)",
        "dlq_topic": "dead-letter topic for refused records",
        "group_id": "consumer group of the workers",
        "client_id": "client id prefix",
        "metrics_port": "`fairwatch run` serves /metrics on this port (unset: no server)",
        "metrics_addr": "address /metrics listens on",
        "models": "only these models' predictions (empty: every model); others are skipped and counted",
        "commit_interval_seconds": "seconds between offset commits",
        "state_dir": "snapshot the pipeline state here before each commit and restore it on start, so counters "
                     "survive a crash exactly (one directory per worker; unset: no snapshots)",
        "max_poll_records": "records per batch at most (the breach decisions cost about the same per batch, "
                            "so wide batches cost less per event; under light load batches stay small)",
        "fetch_process": "kafka-python only: fetch and decode records in a child process, overlapping with "
                         "applying them (librdkafka has its own C threads)",
        "session_timeout_ms": "group session timeout: a crashed worker's partitions wait this long (Kafka's own "
                              "default is 45 s)",
        "max_poll_interval_ms": "max time between polls; also the rebalance timeout, how long a join waits for "
                                "members that left",
        "max_partition_fetch_bytes": "fetch size per partition",
        "fetch_max_bytes": "fetch size per request",
        "dlq_max_bytes": "largest dead letter sent whole; larger ones are truncated with a header",
        "auto_offset_reset": "where a new consumer group starts: earliest or latest",
        "security_protocol": "how clients talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        "sasl_mechanism": "SASL mechanism, with a SASL_* protocol",
        "sasl_username": "SASL user name",
        "sasl_password": f"SASL password (prefer the {PASSWORD_ENV} environment variable)",
        "ssl_cafile": "PEM file of the CA certificates that sign the brokers' certificates",
        "ssl_certfile": "PEM file of the client certificate (mutual TLS)",
        "ssl_keyfile": "PEM file of the client private key (mutual TLS)",
    }
    # What the generated reference shows as a default that depends on the machine.
    DOC_DEFAULTS: ClassVar[dict[str, str]] = {"client": "confluent if confluent-kafka is installed, else kafka-python"}

    def __post_init__(self) -> None:
        require_finite(self)  # msgspec's bounds let an infinite commit interval through (TOML has `inf`)

    def bootstrap_list(self) -> list[str]:
        servers = self.bootstrap_servers
        if isinstance(servers, str):
            servers = servers.split(",")
        return [s.strip() for s in servers if s.strip()]

    def topics(self) -> list[str]:
        return [t for t in (self.predictions_topic, self.outcomes_topic) if t]

    def security(self) -> dict[str, str]:
        """The security settings given, by setting name; the password from the setting (a flag or the
        TOML), else from the environment variable. SASL credentials only with a SASL mechanism."""
        given = {key: getattr(self, key) for key in ("sasl_mechanism", "sasl_username", "ssl_cafile", "ssl_certfile",
                                                     "ssl_keyfile")}
        given["sasl_password"] = self.sasl_password if self.sasl_password is not None else os.environ.get(PASSWORD_ENV)
        if not self.sasl_mechanism:
            given["sasl_username"] = given["sasl_password"] = None
        return {key: value for key, value in given.items() if value}

    def client_kwargs(self) -> dict:
        """Connection and security settings shared by kafka-python's consumer, producer and admin clients."""
        return {"bootstrap_servers": self.bootstrap_list(), "security_protocol": self.security_protocol,
                **{_KAFKA_PYTHON_NAMES.get(key, key): value for key, value in self.security().items()}}

    def librdkafka_config(self) -> dict:
        """The same settings under librdkafka's names (confluent-kafka's clients)."""
        return {"bootstrap.servers": ",".join(self.bootstrap_list()),
                "security.protocol": self.security_protocol.lower(),
                **{_LIBRDKAFKA_NAMES[key]: value for key, value in self.security().items()}}

    def check(self) -> None:
        if not self.bootstrap_list():
            raise ConfigError("no bootstrap servers given")
        if self.outcomes_topic == self.predictions_topic:
            raise ConfigError("the outcomes topic must differ from the predictions topic")
        if self.dlq_topic in self.topics():
            raise ConfigError("the dead-letter topic must differ from the topics consumed")
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL"):
            raise ConfigError(f"--sasl-mechanism needs --security-protocol SASL_PLAINTEXT or SASL_SSL, "
                              f"not {self.security_protocol}")
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ConfigError(f"--security-protocol {self.security_protocol} needs --sasl-mechanism")
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise ConfigError(f"--{key.replace('_', '-')} {path}: no such file")
        if self.session_timeout_ms > self.max_poll_interval_ms:
            raise ConfigError("session_timeout_ms must not exceed max_poll_interval_ms")


# The settings every command that connects to Kafka takes from the [kafka] table (and flags of the same names):
# where the brokers are, the topics, how to authenticate. The rest configure `fairwatch run`'s consumer group.
CONNECTION_KEYS = ("client", "bootstrap_servers", "predictions_topic", "outcomes_topic", "security_protocol",
                   "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")


def parse_kafka_settings(data: dict) -> KafkaSettings:
    """The ``[kafka]`` table, validated and checked as a whole (brokers, topics, files); errors start ``[kafka]: ``."""
    try:
        settings = msgspec.convert(data, KafkaSettings)
        settings.check()
    except msgspec.ValidationError as exc:
        raise ConfigError(f"[kafka]: {readable(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"[kafka]: {exc}") from None
    return settings


def add_client_flag(parser) -> None:
    """``--client``: which Kafka client library every client of the command uses."""
    parser.add_argument("--client", choices=CLIENTS,
                        help=f"Kafka client library: confluent (confluent-kafka, librdkafka in C) or kafka-python "
                             f"(pure Python, the fallback) ({DEFAULT_CLIENT})")


def add_security_flags(parser, protocol_default: str | None = None) -> None:
    """Kafka security flags, passed to every client (``run`` and ``produce``)."""
    security = parser.add_argument_group("kafka security (passed to every client)")
    security.add_argument("--security-protocol", default=protocol_default,
                          choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                          help=f"how clients talk to the brokers ({protocol_default or 'PLAINTEXT'})")
    security.add_argument("--sasl-mechanism", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER",
                                                       "GSSAPI"), help="SASL mechanism, with a SASL_* protocol (none)")
    security.add_argument("--sasl-username", help="SASL user name (none)")
    security.add_argument("--sasl-password", help=f"SASL password; prefer the {PASSWORD_ENV} environment variable (none)")
    security.add_argument("--ssl-cafile", metavar="PEM", help="CA certificates that sign the brokers' certificates (none: the system's)")
    security.add_argument("--ssl-certfile", metavar="PEM", help="client certificate (mutual TLS)")
    security.add_argument("--ssl-keyfile", metavar="PEM", help="client private key (mutual TLS)")


__all__ = ["KafkaSettings", "parse_kafka_settings", "read_toml", "add_security_flags", "add_client_flag", "between", "Topic",
           "NonEmpty", "Positive", "readable",
           "PASSWORD_ENV",
           "CLIENTS", "DEFAULT_CLIENT"]
