"""The [kafka] security settings reach both client libraries under their own names, the password from the env."""

from __future__ import annotations

import pytest

from fairwatch.consumers.kafka_config import PASSWORD_ENV, parse_kafka_settings

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
