"""The two Kafka client libraries behind one small producer interface, and their error types.

``fairwatch produce`` and the worker's dead-letter topic send through
``open_producer``: ``send(topic, key, value, headers, on_error)``,
``flush(timeout)``, ``close(timeout)``, whichever library ``client`` names
(``consumers.kafka_config.CLIENTS``). The consumers live in the worker
backends (``consumers/confluent_worker.py``, ``consumers/kafka_python_worker.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.monitor.errors import FairwatchError

log = logging.getLogger("fairwatch.kafka")
CONNECT_TIMEOUT_SECONDS = 10.0
_QUEUE_FULL_WAIT_SECONDS = 0.1

OnError = Callable[[Exception], None]


class Producer(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list | None = None,
             on_error: OnError | None = None) -> None:
        """Queue one record; ``on_error(exc)`` runs (on some thread) if it is not delivered."""

    def flush(self, timeout_seconds: float) -> int:
        """Wait until every record sent so far is delivered or failed; return how many are still queued."""

    def close(self, timeout_seconds: float) -> None: ...


class ClientMissing(FairwatchError, ImportError):
    """The client library that ``client`` names is not installed: one line for the CLI."""


def client_errors(client: str) -> tuple[type[BaseException], ...]:
    """The exceptions a client library raises for broker and connection trouble."""
    try:
        if client == "confluent":
            from confluent_kafka import KafkaException

            return (KafkaException,)
        from kafka.errors import KafkaError
    except ImportError as exc:
        package = "confluent-kafka" if client == "confluent" else "kafka-python"
        raise ClientMissing(f"--client {client} needs {package}: pip install 'fairwatch[kafka]' ({exc})") from None
    return (KafkaError,)


def open_producer(settings: KafkaSettings, client_id: str, *, max_request_bytes: int, linger_ms: int,
                  batch_bytes: int | None = None, compression: str | None = None) -> Producer:
    """A producer with acks=all; raises one of ``client_errors`` if no broker answers."""
    if settings.client == "confluent":
        return ConfluentProducer(settings, client_id, max_request_bytes=max_request_bytes, linger_ms=linger_ms,
                                 batch_bytes=batch_bytes, compression=compression)
    return KafkaPythonProducer(settings, client_id, max_request_bytes=max_request_bytes, linger_ms=linger_ms,
                               batch_bytes=batch_bytes, compression=compression)


class KafkaPythonProducer:
    def __init__(self, settings: KafkaSettings, client_id: str, *, max_request_bytes: int, linger_ms: int,
                 batch_bytes: int | None, compression: str | None) -> None:
        from kafka import KafkaProducer

        options = {"batch_size": batch_bytes} if batch_bytes else {}
        self.producer = KafkaProducer(**settings.client_kwargs(), client_id=client_id, acks="all",
                                      linger_ms=linger_ms, max_request_size=max_request_bytes,
                                      compression_type=compression, **options)

    def send(self, topic, key, value, headers=None, on_error=None) -> None:
        future = self.producer.send(topic, key=key, value=value, headers=headers)
        if on_error is not None:
            future.add_errback(on_error)

    def flush(self, timeout_seconds: float) -> int:
        self.producer.flush(timeout=timeout_seconds)  # raises KafkaTimeoutError if records are left
        return 0

    def close(self, timeout_seconds: float) -> None:
        self.producer.close(timeout=timeout_seconds)


class ConfluentProducer:
    """confluent-kafka's Producer: delivery reports are served by ``poll``/``flush`` on the caller's thread."""

    def __init__(self, settings: KafkaSettings, client_id: str, *, max_request_bytes: int, linger_ms: int,
                 batch_bytes: int | None, compression: str | None) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import Producer as RdProducer

        config = {**settings.librdkafka_config(), "client.id": client_id, "acks": "all", "linger.ms": linger_ms,
                  "message.max.bytes": max_request_bytes, "error_cb": log_client_error}
        if batch_bytes:
            config["batch.size"] = batch_bytes
        if compression:
            config["compression.type"] = compression
        self.producer = RdProducer(config, logger=logging.getLogger("fairwatch.librdkafka"))
        # librdkafka connects lazily; ask for metadata so that a wrong address fails here, in one line.
        try:
            self.producer.list_topics(timeout=CONNECT_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise KafkaException(f"no broker answered within {CONNECT_TIMEOUT_SECONDS:.0f} s "
                                 f"({exc.args[0].str() if exc.args else exc})") from None
        self._sent = 0

    def send(self, topic, key, value, headers=None, on_error=None) -> None:
        callback = None
        if on_error is not None:
            def callback(err, _message, on_error=on_error):
                if err is not None:
                    on_error(RuntimeError(err.str()))
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=callback)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(_QUEUE_FULL_WAIT_SECONDS)
        self._sent += 1
        if self._sent % 1000 == 0:
            self.producer.poll(0)  # serve delivery reports now and then, not only at flush

    def flush(self, timeout_seconds: float) -> int:
        left = self.producer.flush(timeout_seconds)
        if left:
            log.warning("%d records not delivered within %.0f s", left, timeout_seconds)
        return left

    def close(self, timeout_seconds: float) -> None:
        self.flush(timeout_seconds)  # confluent-kafka has no close(); the client goes with its last reference


_last_error: list[str] = [""]


def log_client_error(err) -> None:
    """librdkafka's global errors (broker down, authentication): it retries, so one line per new error."""
    text = err.str()
    if text != _last_error[0]:
        _last_error[0] = text
        log.warning("kafka client: %s", text)


__all__ = ["ClientMissing", "Producer", "open_producer", "client_errors", "log_client_error", "KafkaPythonProducer",
           "ConfluentProducer"]
