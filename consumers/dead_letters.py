"""The dead-letter topic: refused records, original bytes and key, the reason in headers."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from fairwatch.consumers.kafka_clients import Producer
from fairwatch.monitor.errors import one_line
from fairwatch.monitor.events import Rejection

log = logging.getLogger("fairwatch.dlq")

REASON_HEADER = "fairwatch-reason"
ERROR_HEADER = "fairwatch-error"
TOPIC_HEADER = "fairwatch-topic"
PARTITION_HEADER = "fairwatch-partition"
OFFSET_HEADER = "fairwatch-offset"
# Only when the record exceeds what the producer may send: the value is then
# a prefix and this header holds the original size in bytes.
TRUNCATED_HEADER = "fairwatch-truncated-from"
_HEADROOM_BYTES = 64 << 10  # room for key, headers and batch overhead under max_request_size


class DeadLettersStuck(RuntimeError):
    """Dead letters still queued after the flush timeout: committing past them could lose them."""


class DeadLettersUndelivered(RuntimeError):
    """The broker refused dead letters: their records were neither applied nor kept, so the worker
    stops without committing past them, and a restart reads them again."""


class DeadLetters:
    """Sends refused records to ``topic``; counts the delivered ones per reason (``sent``, once a flush has
    seen them delivered) and the failed deliveries (``errors``)."""

    def __init__(self, producer: Producer, topic: str, max_bytes: int) -> None:
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.sent: Counter = Counter()
        self._unconfirmed: Counter = Counter()  # sent since the last flush, per reason
        self.errors = 0
        self._errors_lock = threading.Lock()  # kafka-python's errbacks run on its I/O thread
        self._undelivered: list[str] = []  # since the last flush, one line each

    def send(self, record, rejection: Rejection) -> None:
        """``record``: the refused record (``topic``, ``partition``, ``offset``, ``key``, ``value`` attributes)."""
        value = record.value if record.value is not None else b""
        headers = [
            (REASON_HEADER, rejection.reason.encode()),
            (ERROR_HEADER, one_line(rejection.message).encode("utf-8", "replace")),
            (TOPIC_HEADER, record.topic.encode()),
            (PARTITION_HEADER, str(record.partition).encode()),
            (OFFSET_HEADER, str(record.offset).encode()),
        ]
        limit = self.max_bytes - _HEADROOM_BYTES
        if len(value) > limit:
            log.warning("dead letter %s[%d]@%d: %d bytes exceed --dlq-max-bytes, sending the first %d",
                        record.topic, record.partition, record.offset, len(value), limit)
            headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
            value = value[:limit]
        try:
            self.producer.send(self.topic, record.key, value, headers,
                               on_error=lambda exc, record=record: self._failed(record, exc))
        except Exception as exc:  # noqa: BLE001 - any refusal must not stop the worker
            self._failed(record, exc)
        self._unconfirmed[rejection.reason] += 1

    def _failed(self, record, exc) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}: {one_line(str(exc) or type(exc).__name__, 200)}"
        with self._errors_lock:
            self.errors += 1
            self._undelivered.append(where)
        log.error("dead letter for %s not delivered", where)

    def flush(self, timeout_seconds: float) -> None:
        """Wait until every dead letter sent so far is delivered or failed (before committing past it);
        raise if one was not delivered, so that nothing is committed past its record."""
        left = self.producer.flush(timeout_seconds)
        if left:  # kafka-python raises its own KafkaTimeoutError instead
            raise DeadLettersStuck(f"{left} dead letters not delivered within {timeout_seconds:.0f} s to "
                                   f"{self.topic}: nothing is committed past them")
        with self._errors_lock:
            undelivered, self._undelivered = self._undelivered, []
        if undelivered:
            raise DeadLettersUndelivered(
                f"{len(undelivered)} dead letter{'s' if len(undelivered) > 1 else ''} not delivered to "
                f"{self.topic} (first: {undelivered[0]}); nothing is committed past their records, "
                f"and a restart reads them again")
        self.sent.update(self._unconfirmed)
        self._unconfirmed.clear()


__all__ = ["DeadLetters", "DeadLettersStuck", "DeadLettersUndelivered", "REASON_HEADER", "ERROR_HEADER", "TOPIC_HEADER", "PARTITION_HEADER",
           "OFFSET_HEADER",
           "TRUNCATED_HEADER"]
