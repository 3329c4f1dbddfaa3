"""The worker on kafka-python (pure Python, the fallback client), with its fetch child process.

By default a child process fetches and decodes the records
(``consumers/fetch_process.py``) while this one applies them; this process
stays the group member, keeps its own partitions paused, and tells the child
what to read from where after each rebalance.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections import Counter

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from fairwatch.consumers.fetch_process import FetchProcess, FetchProcessDied, PartitionBatch, release_parked_records
from fairwatch.consumers.kafka_worker import POLL_TIMEOUT_MS, KafkaWorker, _format_partitions

log = logging.getLogger("fairwatch.worker")


def _with_metadata(offsets: dict) -> dict:
    return {TopicPartition(*tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


class _CommitOnRebalance(AsyncConsumerRebalanceListener):
    """Commit what was applied before partitions go.

    Async because kafka-python 3 runs listeners on its I/O thread, where a
    blocking ``consumer.commit()`` is refused; the commit is awaited there.
    """

    def __init__(self, worker: KafkaPythonWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        if not revoked:
            return
        worker = self.worker
        worker.on_revoked(revoked)
        offsets = worker.prepare_rebalance_commit()
        if not offsets:
            return
        try:
            # No public awaitable commit exists in kafka-python 3.0; this is the
            # coroutine KafkaConsumer.commit() itself runs on the I/O thread.
            await worker.consumer._coordinator._commit_offsets_sync_async(_with_metadata(offsets))
        except KafkaError as exc:
            log.warning("commit before rebalance failed: %s", exc)
            return
        worker.committed_ok(offsets, "rebalance")

    async def on_partitions_assigned(self, assigned) -> None:
        self.worker.on_assigned(assigned)

    async def on_partitions_lost(self, lost) -> None:
        # Evicted (e.g. stalled past the session timeout): a commit would be refused.
        self.worker.on_revoked(lost)
        log.warning("lost %s without a chance to commit; their new owner resumes from the last commit",
                    _format_partitions(lost))


class KafkaPythonWorker(KafkaWorker):
    """``KafkaWorker`` on a kafka-python consumer group (``[kafka] client = "kafka-python"``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fetcher: FetchProcess | None = None
        self._owned: frozenset = frozenset()  # partitions the fetch process reads for us
        self._reassign = False  # set on the I/O thread by a rebalance, handled by the loop
        self._child_paused: set = set()
        self._highwaters: dict[tuple[str, int], int] = {}

    def connect(self) -> None:
        s = self.settings
        common = s.client_kwargs()
        self._open_dead_letters()
        fetching = {
            "auto_offset_reset": s.auto_offset_reset,
            # A record larger than these still comes back alone (Kafka returns the
            # first batch of a partition whatever its size), so a 5 MB event cannot
            # wedge its partition; it is then refused as oversized by the parser.
            "max_partition_fetch_bytes": s.max_partition_fetch_bytes,
            "fetch_max_bytes": s.fetch_max_bytes,
        }
        if s.fetch_process:
            self._fetcher_args = (common, {**fetching, "client_id": f"{s.client_id}-fetch"}, s.max_poll_records)
            self.fetcher = FetchProcess(*self._fetcher_args)
        self.consumer = KafkaConsumer(
            **common,
            **fetching,
            client_id=s.client_id,
            group_id=s.group_id,
            enable_auto_commit=False,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(s.session_timeout_ms // 3, 100),
            max_poll_interval_ms=s.max_poll_interval_ms,
            request_timeout_ms=max(30_000, s.session_timeout_ms + 5_000),
            # Range keeps partition N of the predictions and outcomes topics on one worker.
            partition_assignment_strategy=[RangePartitionAssignor],
        )
        self.consumer.subscribe(s.topics(), listener=_CommitOnRebalance(self))

    def _close_client(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()
            self.fetcher = None
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("closing the consumer: %s", exc)
            self.consumer = None

    def assignment(self) -> frozenset:
        return frozenset(self.consumer.assignment())

    def _commit_offsets(self, offsets: dict) -> None:
        self.consumer.commit(_with_metadata(offsets))

    def _highwater(self, tp) -> int | None:
        if self.fetcher is None:
            return self.consumer.highwater(tp)
        return self._highwaters.get((tp.topic, tp.partition)) if tp in self._owned else None

    def poll_once(self) -> int:
        """One poll, applied. Returns the number of records applied."""
        if self.fetcher is not None:
            try:
                applied = self._poll_fetcher()
            except FetchProcessDied as exc:
                self._restart_fetcher(exc)
                applied = 0
        else:
            release_parked_records(self.consumer)  # _hold_outcomes pauses and resumes outcomes
            polled = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.max_poll_records)
            applied = self._apply_polled(polled)
        self._after_poll(applied)
        return applied

    def _group_settled(self) -> bool:
        coordinator = self.consumer._coordinator  # no public "is the group settled" in kafka-python 3
        return not coordinator.coordinator_unknown() and not coordinator.need_rejoin()

    def _describe_client(self) -> list[str]:
        generation = getattr(self.consumer._coordinator, "_generation", None)
        parts = [f"group {'settled' if self._group_settled() else 'rejoining'}"
                 f" (generation {getattr(generation, 'generation_id', '?')})"]
        if self.fetcher is not None:
            parts += [f"fetch process {'alive' if self.fetcher.process.is_alive() else 'dead'} at epoch "
                      f"{self.fetcher.epoch}, owns {_format_partitions(self._owned)}",
                      f"highwaters {dict(sorted(self._highwaters.items()))}"]
        return parts

    def _apply_polled(self, polled: dict) -> int:
        """Apply a kafka-python poll result, predictions first (outcomes of the same batch find them)."""
        if not polled:
            return 0
        predictions = self.settings.predictions_topic
        kept, ends, counts = [], [], Counter()
        for tp, records in sorted(polled.items(), key=lambda item: item[0].topic != predictions):
            self._unconfirmed.discard(tp)
            start = self.offsets.get(tp, -1)
            if records[0].offset < start:
                records = [r for r in records if r.offset >= start]
            ends.append((tp, polled[tp][-1].offset))
            counts[tp.topic] += len(records)
            kept += records
        applied = 0
        if kept:
            timestamps = [r.timestamp for r in kept] if self.on_batch is not None else None
            applied = self.apply([r.value for r in kept], kept.__getitem__, timestamps)
        self._applied(ends, counts)
        return applied

    def _poll_fetcher(self) -> int:
        """Keep the group alive (our partitions stay paused here), apply what the fetch process sent."""
        consumer = self.consumer
        # Group upkeep only: our partitions are paused here, so poll() returns nothing. A join
        # needs a poll that may block (kafka-python gives up at once with timeout 0); a settled
        # member must not block, or it would wait on every batch.
        settled = self._group_settled()
        polled = consumer.poll(timeout_ms=0 if settled else POLL_TIMEOUT_MS)
        # Records fetched here between an assignment and its pause (the listener pauses on kafka-python's
        # I/O thread) are applied like any batch, so the position handed to the child is past them.
        applied = self._apply_polled(polled)
        if applied:
            log.info("applied %d records fetched by the group consumer before it paused its partitions", applied)
        if self._reassign:
            self._assign_fetcher()
        received = self.fetcher.receive(POLL_TIMEOUT_MS / 1000 if settled else 0)
        if received:
            batches, highwaters = received
            self._highwaters.update(highwaters)
            applied += self._apply_batches(batches)
        return applied

    def _apply_batches(self, batches: list[PartitionBatch]) -> int:
        """Apply the fetch process's batches of partitions still owned, predictions first."""
        owned = self._owned
        predictions = self.settings.predictions_topic
        parts: list[PartitionBatch] = []
        ends, counts = [], Counter()
        for batch in sorted(batches, key=lambda b: b.topic != predictions):
            tp = TopicPartition(batch.topic, batch.partition)
            if tp not in owned:
                continue  # revoked since it was fetched: the next owner reads it again
            last = batch.offsets[-1]
            start = self.offsets.get(tp, -1)
            if batch.offsets[0] < start:
                batch = batch.since(bisect.bisect_left(batch.offsets, start))
            ends.append((tp, last))
            counts[tp.topic] += len(batch.values)
            if batch.values:
                parts.append(batch)
        applied = 0
        if parts:
            values = parts[0].values if len(parts) == 1 else [v for b in parts for v in b.values]
            timestamps = [t for b in parts for t in b.timestamps] if self.on_batch is not None else None
            applied = self.apply(values, _Locator(parts).record, timestamps)
        self._applied(ends, counts)
        return applied

    def _restart_fetcher(self, exc: FetchProcessDied) -> None:
        """Nothing the dead child sent was applied past self.offsets: a new one resumes there."""
        log.error("%s; starting a new one", exc)
        self.fetcher.close()
        self.fetcher = FetchProcess(*self._fetcher_args)
        self.fetch_restarts += 1
        self._reassign = True

    def _assign_fetcher(self) -> None:
        """After a rebalance: pause our partitions here, and have the child read them from where we stand."""
        self._reassign = False
        consumer = self.consumer
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        positions = {}
        for tp in assigned:
            # The group's committed offset (or the reset policy); past it, what this worker
            # applied and snapshotted before a crash is not read again.
            position = max(consumer.position(tp), self.offsets.get(tp, -1))
            positions[tp.topic, tp.partition] = position
            self.offsets[tp] = position
        self._owned = frozenset(assigned)
        self._child_paused.clear()
        self._unconfirmed -= assigned  # positions are known: committing them is safe
        self.fetcher.assign(positions)

    def _hold_outcomes(self, hold: bool) -> None:
        outcomes = self.settings.outcomes_topic
        if self.fetcher is not None:
            self._pace_fetcher(hold, outcomes)
            return
        consumer = self.consumer
        paused = consumer.paused()
        if hold:
            partitions = [tp for tp in consumer.assignment() if tp.topic == outcomes and tp not in paused]
            if partitions:
                consumer.pause(*partitions)
        else:
            partitions = [tp for tp in paused if tp.topic == outcomes]
            if partitions:
                consumer.resume(*partitions)

    def _pace_fetcher(self, hold: bool, outcomes: str) -> None:
        if hold:
            partitions = [tp for tp in self._owned if tp.topic == outcomes and tp not in self._child_paused]
            if partitions:
                self.fetcher.pause([(tp.topic, tp.partition) for tp in partitions])
                self._child_paused.update(partitions)
        elif self._child_paused:
            self.fetcher.resume([(tp.topic, tp.partition) for tp in self._child_paused])
            self._child_paused.clear()

    def on_revoked(self, revoked) -> None:
        """Batches of revoked partitions still in flight from the fetch process are dropped."""
        self._owned = self._owned - set(revoked)

    def on_assigned(self, assigned) -> None:
        """Nothing blocking here (kafka-python's I/O thread): the consumer resumes from the
        committed offsets; records this worker applied before a crash are skipped in poll_once,
        and a partition is committed only once a fetch confirmed where it stands (or, with
        the fetch process, once the loop has read the position it hands the child)."""
        self._unconfirmed = set(assigned)
        if self._rewind and assigned:
            self._rewind = False
            self.consumer.seek_to_beginning(*assigned)  # only marks them for a reset: nothing blocks
            log.info("rebuilding: reading %s from the oldest retained offsets", _format_partitions(assigned))
        if self.fetcher is not None:
            self.consumer.pause(*assigned)  # the child reads them; poll() here only keeps the group
            self._reassign = True
        log.info("assigned %s", _format_partitions(assigned))


class _Locator:
    """Maps a position in the concatenated values of several batches back to its record."""

    def __init__(self, batches: list[PartitionBatch]) -> None:
        self.batches = batches
        self.starts = list(itertools.accumulate((len(b.values) for b in batches), initial=0))

    def record(self, i: int):
        b = bisect.bisect_right(self.starts, i) - 1
        return self.batches[b].record(i - self.starts[b])


__all__ = ["KafkaPythonWorker"]
