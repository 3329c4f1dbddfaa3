"""Stress check: does a consumer at the end of a partition get every record while producers write?

    python -m benchmarks.kafka_live_edge --runs 5 --events 60000 --rate 5000 --consumer worker-confluent

Paced producer processes (--producers, 2) (the latency benchmark's) write N events with
unique ids to a 4-partition topic on a fresh Tansu broker, either into the
same partitions (``--partitions shared``, by key) or each into its own
(``own``, what ``benchmarks.kafka`` does). A consumer reads from the start
while they write: a bare confluent-kafka or kafka-python loop that records
every (partition, offset, key), or the ``fairwatch run`` worker on either
client, which stops once it applied N records (or stalls for a minute),
optionally stopped and restarted in the same group mid-stream (``--restarts``),
or two workers in one group, the second joining and leaving mid-stream
(``two-workers-*``: partitions move twice).
Then a fresh consumer re-reads the topic from the start. Per run it prints
what the live consumer missed, the offset gaps it saw, and what the re-read
found: records missed live but present on re-read were skipped at the live
edge, not lost by the broker.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import threading
import time

from benchmarks.kafka import (PARTITIONS, STALL_SECONDS, Stalled, _paced_producer, own_partitions, until_applied,
                              worker_for)

QUIET_SECONDS = 15.0  # the live consumer gives up after this long without a new record


def _values(n: int) -> list[bytes]:
    return [b'{"event_id": "e%d", "ts": 1.7e9, "model": "m", "prediction": %d, "groups": {"race": "a%d"}}'
            % (i, i % 2, i % 3) for i in range(n)]


def _bare_confluent(bootstrap: str, topic: str, n: int) -> list[tuple[int, int, bytes]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "live-edge", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen: list[tuple[int, int, bytes]] = []
    quiet_since = time.monotonic()
    while len(seen) < n and time.monotonic() - quiet_since < QUIET_SECONDS:
        messages = [m for m in consumer.consume(5000, 0.2) if m.error() is None]
        if messages:
            quiet_since = time.monotonic()
        seen.extend((m.partition(), m.offset(), m.value()) for m in messages)
    consumer.close()
    return seen


def _bare_kafka_python(bootstrap: str, topic: str, n: int) -> list[tuple[int, int, bytes]]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    seen: list[tuple[int, int, bytes]] = []
    quiet_since = time.monotonic()
    while len(seen) < n and time.monotonic() - quiet_since < QUIET_SECONDS:
        fetched = consumer.poll(timeout_ms=200, max_records=5000)
        if fetched:
            quiet_since = time.monotonic()
        for tp, records in fetched.items():
            seen.extend((tp.partition, r.offset, r.value) for r in records)
    consumer.close()
    return seen


def _worker(client: str):
    def consume(bootstrap: str, topic: str, n: int, restarts: int = 0) -> list[tuple[int, int, bytes]]:
        """The worker's applied records, as (partition, offset, value) of each message it was handed.

        ``restarts``: stop the worker (it commits on shutdown) and start a new one in the same group that many
        times, at evenly spaced counts, while the producers go on."""
        seen: list[tuple[int, int, bytes]] = []
        applied = 0
        for leg in range(restarts + 1):
            worker = worker_for(bootstrap, topic, f"live-edge-{client}", client=client, fetch_process=False)
            apply = worker.apply

            def recording_apply(values, source, timestamps=None, apply=apply):
                for i, value in enumerate(values):
                    record = source(i)
                    seen.append((record.partition, record.offset, value))
                return apply(values, source, timestamps)

            worker.apply = recording_apply
            target = n * (leg + 1) // (restarts + 1)
            try:
                worker.run(until=until_applied(worker, topic, target - applied))
            except Stalled as exc:
                print(f"  worker: {exc}")
                return seen
            finally:
                applied += worker.records[topic]
        return seen
    return consume


def _two_members(client: str):
    def consume(bootstrap: str, topic: str, n: int) -> list[tuple[int, int, bytes]]:
        """Two workers in one group: the second joins after n/3 records and leaves (stopped, committing) after
        2n/3, so that partitions move twice while the producers go on. Their applied records, together."""
        seen: list[tuple[int, int, bytes]] = []
        workers = [worker_for(bootstrap, topic, f"live-edge-two-{client}", client=client, fetch_process=False)
                   for _ in range(2)]
        for worker in workers:
            def recording_apply(values, source, timestamps=None, apply=worker.apply):
                for i, value in enumerate(values):
                    record = source(i)
                    seen.append((record.partition, record.offset, value))
                return apply(values, source, timestamps)
            worker.apply = recording_apply
        first, second = workers
        second_thread = threading.Thread(target=second.run, name="second-member", daemon=True)
        progress = {"count": -1, "since": time.monotonic()}

        def until() -> bool:
            count = sum(w.records[topic] for w in workers)
            if count != progress["count"]:
                progress.update(count=count, since=time.monotonic())
            elif time.monotonic() - progress["since"] > STALL_SECONDS:
                raise Stalled(f"stalled at {count:,} of {n:,}: {first.describe()} | {second.describe()}")
            if count >= n // 3 and second_thread.ident is None:
                second_thread.start()
            if count >= 2 * n // 3:
                second.stop()
            return count >= n

        try:
            first.run(until=until)
        except Stalled as exc:
            print(f"  workers: {exc}")
        finally:
            second.stop()
            if second_thread.ident is not None:
                second_thread.join(timeout=60)
        print(f"  members applied {first.records[topic]:,} and {second.records[topic]:,}")
        return seen
    return consume


CONSUMERS = {"confluent": _bare_confluent, "kafka-python": _bare_kafka_python,
             "worker-confluent": _worker("confluent"), "worker-kafka-python": _worker("kafka-python"),
             "two-workers-confluent": _two_members("confluent"),
             "two-workers-kafka-python": _two_members("kafka-python")}


def live_edge_run(bootstrap: str, topic: str, n: int, rate: float, consumer: str, partitions: str,
                  producers: int = 2, restarts: int = 0) -> dict:
    """Produce n events into ``topic`` (PARTITIONS partitions) while ``consumer`` reads it live; then re-read.

    Returns what the live consumer missed (``missed``: values), its ``duplicates``, the offset ``gaps`` it saw
    ((partition, first, last) skipped) and what a re-read from the start missed (``reread_missed``)."""
    values = _values(n)
    spawn = multiprocessing.get_context("spawn")
    senders = [spawn.Process(target=_paced_producer, args=(
        bootstrap, topic, values[k::producers], rate / producers, f"p{k}-",
        own_partitions(k, producers) if partitions == "own" else None)) for k in range(producers)]
    for sender in senders:
        sender.start()
    try:
        seen = CONSUMERS[consumer](bootstrap, topic, n, *((restarts,) if restarts else ()))
    finally:
        for sender in senders:
            sender.join(timeout=120)
    reread = _bare_confluent(bootstrap, topic, n)
    live = collections.Counter(value for _, _, value in seen)
    by_partition = collections.defaultdict(list)
    for p, offset, _ in seen:
        by_partition[p].append(offset)
    return {"produced": n, "read": len(seen), "missed": set(values) - set(live),
            "duplicates": sum(c - 1 for c in live.values()),
            "gaps": sorted((p, a + 1, b - 1) for p, offsets in by_partition.items()
                           for a, b in zip(offsets, offsets[1:]) if b > a + 1),
            "reread": len(reread), "reread_missed": set(values) - {value for _, _, value in reread}}


def one_run(n: int, rate: float, consumer: str, partitions: str, producers: int = 2, restarts: int = 0) -> int:
    """One run on a fresh broker, printed; returns how many produced records the live consumer missed."""
    from fairwatch.consumers.broker import TansuBroker, create_topics

    with TansuBroker() as broker:
        bootstrap, topic = broker.bootstrap_servers, "live-edge"
        create_topics(bootstrap, {topic: PARTITIONS})
        r = live_edge_run(bootstrap, topic, n, rate, consumer, partitions, producers, restarts)
    gaps = r["gaps"]
    gap_text = ", ".join(f"[{p}] {lo}-{hi}" for p, lo, hi in gaps[:6]) + (" ..." if len(gaps) > 6 else "")
    print(f"{consumer}{f' restarted {restarts}x' if restarts else ''}, {partitions} partitions, {producers} producers "
          f"at {rate:,.0f}/s: {n:,} produced, "
          f"{r['read']:,} read live ({r['duplicates']} duplicates), missed {len(r['missed'])}; offset gaps seen "
          f"live: {len(gaps)} {gap_text}; re-read from the start: {r['reread']:,} records, missed "
          f"{len(r['reread_missed'])}", flush=True)
    return len(r["missed"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=5_000.0, help="events/s, all producers together")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=0,
                        help="worker consumers: stop and restart the worker this many times mid-stream")
    parser.add_argument("--consumer", choices=sorted(CONSUMERS), default="worker-confluent")
    parser.add_argument("--partitions", choices=("shared", "own"), default="own",
                        help="shared: both producers write every partition (by key); own: each its own partitions")
    args = parser.parse_args(argv)
    missed = [one_run(args.events, args.rate, args.consumer, args.partitions, args.producers, args.restarts)
              for _ in range(args.runs)]
    print(f"runs: {args.runs}; missed per run: {missed}")
    if any(missed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
