"""The [kafka] security settings reach both client libraries under their own names, the password from the env."""

from __future__ import annotations

import pytest

from fairwatch.consumers.kafka_config import PASSWORD_ENV, parse_kafka_settings
from fairwatch.monitor.config import ConfigError

SASL_SSL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "fairwatch",
            "bootstrap_servers": "a:9092,b:9092"}


def test_security_settings_map_to_librdkafka_and_kafka_python(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    settings = parse_kafka_settings({**SASL_SSL, "ssl_cafile": str(ca)})
    assert settings.librdkafka_config() == {
        "bootstrap.servers": "a:9092,b:9092", "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fairwatch", "sasl.password": "from-env", "ssl.ca.location": str(ca)}
    assert settings.client_kwargs() == {
        "bootstrap_servers": ["a:9092", "b:9092"], "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "fairwatch", "sasl_plain_password": "from-env", "ssl_cafile": str(ca)}


def test_a_password_setting_wins_over_the_env_and_none_goes_out_without_sasl(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert parse_kafka_settings({**SASL_SSL, "sasl_password": "given"}).librdkafka_config()["sasl.password"] == "given"
    assert "sasl.password" not in parse_kafka_settings({}).librdkafka_config()


def test_librdkafka_takes_the_mapped_settings():
    """confluent-kafka checks its configuration when a client is built (it connects only later)."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    certifi = pytest.importorskip("certifi")
    settings = parse_kafka_settings({**SASL_SSL, "sasl_password": "x", "ssl_cafile": certifi.where()})
    consumer = confluent_kafka.Consumer({**settings.librdkafka_config(), "group.id": "g",
                                         "partition.assignment.strategy": "range"})
    consumer.close()


def test_the_client_is_one_of_two():
    assert parse_kafka_settings({}).client == "confluent"  # its wheel is installed here
    with pytest.raises(Exception, match="client"):
        parse_kafka_settings({"client": "aiokafka"})


def test_kafka_python_is_the_default_without_the_confluent_wheel(monkeypatch):
    import importlib.util

    from fairwatch.consumers import kafka_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "confluent_kafka" else real(name, *a))
    assert kafka_config._default_client() == "kafka-python"


# librdkafka's own ranges, which the [kafka] table now enforces: outside them the client refused the
# value only when it started, and the worker reported it as a broker it could not reach.
BOUNDED = {"max_poll_records": (1, 1_000_000), "session_timeout_ms": (1_000, 3_600_000),
           "max_poll_interval_ms": (1, 86_400_000), "max_partition_fetch_bytes": (1, 1_000_000_000),
           "fetch_max_bytes": (1_000_000, 2_147_483_135), "dlq_max_bytes": (128 << 10, 1_000_000_000),
           "metrics_port": (0, 65535)}


@pytest.mark.parametrize("key", BOUNDED)
def test_each_bounded_setting_is_refused_in_one_line_just_outside_its_range(key):
    low, high = BOUNDED[key]
    for value in (low - 1, high + 1):
        with pytest.raises(ConfigError, match=rf"^\[kafka\]: Expected `int` [<>]= \d+ - at `\$.{key}`$"):
            parse_kafka_settings({key: value})


@pytest.mark.parametrize("end", [0, 1])
def test_librdkafka_accepts_the_worker_and_dead_letter_clients_at_either_end_of_each_range(end):
    """Building the clients checks every setting (they connect only later)."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from fairwatch.consumers.confluent_worker import consumer_config

    values = {key: bounds[end] for key, bounds in BOUNDED.items() if key != "metrics_port"}
    if end == 0:
        values["max_poll_interval_ms"] = values["session_timeout_ms"]  # the session must fit in the poll interval
    settings = parse_kafka_settings(values)
    confluent_kafka.Consumer(consumer_config(settings)).close()
    confluent_kafka.Producer({**settings.librdkafka_config(), "message.max.bytes": settings.dlq_max_bytes})


@pytest.mark.parametrize("data, words", [
    ({"group_id": ""}, "length >= 1 - at `$.group_id`"),
    ({"client_id": ""}, "length >= 1 - at `$.client_id`"),
    ({"predictions_topic": ""}, "Expected a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-', not '.' or '..') - at "
                                "`$.predictions_topic`"),
    ({"dlq_topic": "dead letters"}, "Expected a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-', not '.' or '..') - at "
                                    "`$.dlq_topic`"),
    ({"dlq_topic": "fairwatch.dlq\n"}, "at `$.dlq_topic`"),
    ({"dlq_topic": ".."}, "not '.' or '..') - at `$.dlq_topic`"),
    ({"outcomes_topic": "x" * 250}, "Expected a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-', not '.' or '..') or \"\" "
                                    "- at `$.outcomes_topic`"),
    ({"commit_interval_seconds": float("inf")}, "`commit_interval_seconds` must be a finite number, got inf"),
    ({"commit_interval_seconds": float("nan")}, "at `$.commit_interval_seconds`"),
])
def test_names_kafka_would_refuse_and_an_endless_commit_interval_are_refused(data, words):
    with pytest.raises(ConfigError) as raised:
        parse_kafka_settings(data)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_an_empty_outcomes_topic_still_means_predictions_only():
    assert parse_kafka_settings({"outcomes_topic": ""}).topics() == ["fairwatch.predictions"]
