"""A child process that fetches and decodes records for the worker, so decoding and applying overlap.

Why a process: kafka-python decodes record batches in pure Python (about
6 µs a record on our 2-core machine), about as long as the pipeline takes to
apply one. In one process the two add up; a thread would not help (the GIL).
With the decoding in a child the worker keeps most of the raw consume rate
(docs/performance.md).

The parent stays the only group member: it holds the assignment, applies,
commits what it applied, and tells the child which partitions to read from
which offset. The child reads without a group (``assign`` + ``seek``) and
sends decoded batches back through a pipe. A full pipe blocks the child, so
at most a batch or two are in flight. Each assignment has an epoch; batches
of an older epoch are dropped by the parent (they were never applied, so the
next owner reads them again from the committed offset).

The child ignores SIGINT/SIGTERM (the parent drains and then stops it) and
exits when the parent's end of a pipe closes, e.g. after ``kill -9``.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from typing import NamedTuple

log = logging.getLogger("fairwatch.fetch")

STATUS_INTERVAL_SECONDS = 0.5  # highwaters are sent at least this often, for the lag gauges
_ASSIGN, _PAUSE, _RESUME, _STOP = "assign", "pause", "resume", "stop"


class FetchedRecord(NamedTuple):
    """What the dead-letter topic needs of a record (the fields of kafka-python's ConsumerRecord it reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list


class PartitionBatch(NamedTuple):
    """Consecutive records of one partition, column by column (cheap to pickle)."""

    topic: str
    partition: int
    offsets: list[int]
    keys: list
    values: list
    timestamps: list[int]
    headers: list | None  # None when no record of the batch has headers

    def since(self, i: int) -> PartitionBatch:
        """The records from the ``i``-th on."""
        return PartitionBatch(self.topic, self.partition, self.offsets[i:], self.keys[i:], self.values[i:],
                              self.timestamps[i:], self.headers[i:] if self.headers is not None else None)

    def record(self, i: int) -> FetchedRecord:
        return FetchedRecord(self.topic, self.partition, self.offsets[i], self.keys[i], self.values[i],
                             self.timestamps[i], self.headers[i] if self.headers is not None else [])


class FetchProcessDied(RuntimeError):
    pass


def release_parked_records(consumer) -> None:
    """Call before each ``poll`` of a kafka-python consumer whose partitions are paused and resumed.

    kafka-python 3 keeps the records it had fetched for a partition that gets
    paused (KAFKA-7548) and hands them back after ``resume``, but it restores
    them only while its next-in-line slot is ``None``, and a batch it has
    finished reading stays in that slot. Until the slot is emptied, a parked
    partition counts as having records pending, so it is never fetched again:
    paused part-way through a fetched batch, it stops for good below its high
    watermark (the worker's lag stays up, its stall warning fires, nothing is
    lost). Freeing a consumed slot lets the restore run (one parked partition
    per poll). A no-op where those attributes do not exist (other versions).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if not getattr(fetcher, "_paused_partition_records", None):
        return
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:  # a PartitionRecords is false once drained
        fetcher._next_partition_records = None


class FetchProcess:
    """Parent side: start the child, steer its assignment, receive its batches."""

    def __init__(self, client_kwargs: dict, consumer_options: dict, max_records: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited threads or sockets
        self._data, data_end = ctx.Pipe(duplex=False)
        control_end, self._control = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_fetch_loop, name="fairwatch-fetch", daemon=True,
                                   args=(client_kwargs, consumer_options, max_records, data_end, control_end))
        self.process.start()
        data_end.close()
        control_end.close()
        self.epoch = 0

    def assign(self, positions: dict[tuple[str, int], int]) -> None:
        """Read exactly these partitions, each from its offset; batches fetched before are dropped."""
        self.epoch += 1
        self._send((_ASSIGN, self.epoch, positions))

    def pause(self, partitions: list[tuple[str, int]]) -> None:
        self._send((_PAUSE, partitions))

    def resume(self, partitions: list[tuple[str, int]]) -> None:
        self._send((_RESUME, partitions))

    def receive(self, timeout: float) -> tuple[list[PartitionBatch], dict] | None:
        """(batches, highwaters) of the current epoch, or None if nothing came within ``timeout``."""
        try:
            if not self._data.poll(timeout):
                if not self.process.is_alive():
                    self._died()
                return None
            epoch, batches, highwaters = self._data.recv()
        except (EOFError, OSError):
            self._died()
        if epoch != self.epoch:
            return [], {}
        return batches, highwaters

    def close(self, timeout: float = 10.0) -> None:
        if self.process.is_alive():
            try:
                self._control.send((_STOP,))
            except OSError:
                pass
            # Drain so a child blocked on a full pipe can see the stop.
            deadline = time.monotonic() + timeout
            while self.process.is_alive() and time.monotonic() < deadline:
                try:
                    while self._data.poll(0.05):
                        self._data.recv()
                except (EOFError, OSError):
                    break
            self.process.join(max(deadline - time.monotonic(), 0.1))
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
        self._data.close()
        self._control.close()

    def _send(self, message: tuple) -> None:
        try:
            self._control.send(message)
        except OSError:
            self._died()

    def _died(self) -> None:
        self.process.join(1)
        raise FetchProcessDied(f"the fetch process exited (code {self.process.exitcode}); its error is logged above")


def _fetch_loop(client_kwargs: dict, consumer_options: dict, max_records: int, data, control) -> None:
    """Child side: assign/seek as told, poll, send column batches with the epoch they belong to."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from fairwatch.command_support import dump_stacks_on_sigusr1

    dump_stacks_on_sigusr1()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s fairwatch fetch %(levelname)s %(message)s")
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client_kwargs, group_id=None, enable_auto_commit=False, **consumer_options)
    epoch = 0
    last_status = 0.0
    try:
        while True:
            wait = 0.0 if consumer.assignment() else 0.2
            while control.poll(wait):
                wait = 0.0
                command, *args = control.recv()
                if command == _STOP:
                    return
                if command == _ASSIGN:
                    epoch, positions = args
                    partitions = [TopicPartition(t, p) for t, p in positions]
                    consumer.assign(partitions)
                    if partitions:
                        consumer.resume(*partitions)  # assign() keeps the pause of a partition kept
                    for tp in partitions:
                        consumer.seek(tp, positions[tp.topic, tp.partition])
                elif command == _PAUSE:
                    consumer.pause(*[TopicPartition(t, p) for t, p in args[0]])
                elif command == _RESUME:
                    consumer.resume(*[TopicPartition(t, p) for t, p in args[0]])
            assigned = consumer.assignment()
            if not assigned:
                continue
            release_parked_records(consumer)  # the parent pauses and resumes outcomes (pacing)
            polled = consumer.poll(timeout_ms=200, max_records=max_records)
            batches = []
            for tp, records in polled.items():
                headers = [r.headers for r in records]
                batches.append(PartitionBatch(
                    tp.topic, tp.partition, [r.offset for r in records], [r.key for r in records],
                    [r.value for r in records], [r.timestamp for r in records],
                    headers if any(headers) else None))
            now = time.monotonic()
            if batches or now - last_status >= STATUS_INTERVAL_SECONDS:
                highwaters = {(tp.topic, tp.partition): consumer.highwater(tp) for tp in assigned}
                data.send((epoch, batches, highwaters))
                last_status = now
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone
    finally:
        consumer.close()


__all__ = ["FetchProcess", "FetchProcessDied", "FetchedRecord", "PartitionBatch", "release_parked_records"]
