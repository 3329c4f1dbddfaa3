"""Kafka throughput and latency of both client libraries, in one run on one local Tansu broker.

    python -m benchmarks.kafka --events 1000000

Prints: the produce rate; the bare consume loops of a topic of N events on
kafka-python and on confluent-kafka, each counting records and each parsing
them with json.loads (the baselines); the `fairwatch run` worker's rate on
the same topic on each client (the same worker the command runs, in process;
kafka-python with its fetch process), and on confluent again at the former
bound of 5,000 records per batch; and the p50/p99 latency from the
producer's send() to the pipeline having applied the event, on the default
client, with paced producer processes (--producers, 2) sending at half the
worker's rate, or at 80% of what they can send if that is less, after 1,000
warm-up records (the partitions' first fetch is not counted). Producers are
confluent-kafka (cheapest on CPU, so they take least from the worker), each on its own
partitions (on Tansu, a reader at the end of a partition that two producers write at once can
skip a batch: see benchmarks/kafka_live_edge.py).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import multiprocessing
import platform
import random
import time

import numpy as np

PARTITIONS = 4
FORMER_MAX_POLL_RECORDS = 5000  # [kafka] max_poll_records before 2026-11-30
PACING_STEP_SECONDS = 0.002
WARMUP_RECORDS = 1000  # sent and applied before the latency run's clock starts
STALL_SECONDS = 60.0  # a phase that applies nothing for this long fails, saying where the worker stands


class Stalled(RuntimeError):
    pass


def until_applied(worker, topic: str, n: int):
    """``until`` for ``worker.run``: true once ``n`` records are applied; raises Stalled if none is for a minute."""
    seen, since = -1, time.monotonic()

    def done() -> bool:
        nonlocal seen, since
        count = worker.records[topic]
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since > STALL_SECONDS:
            raise Stalled(f"stalled at {count:,} of {n:,} records for {STALL_SECONDS:.0f} s: {worker.describe()}")
        return count >= n
    return done


def make_values(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    races, sexes = ["African-American", "Caucasian", "Hispanic", "Other"], ["Male", "Female"]
    return [json.dumps({"event_id": f"e{i}", "ts": 1.7e9 + i, "model": "credit-risk", "prediction": int(rng.random() < .4),
                        "score": round(rng.random(), 3), "groups": {"race": rng.choice(races), "sex": rng.choice(sexes)},
                        "label": int(rng.random() < .5) if i % 2 else None}).encode() for i in range(n)]


def _producer(bootstrap: str, linger_ms: int):
    from confluent_kafka import Producer

    # Large batches: with small ones a slower machine's producer falls behind its pace, and its
    # own backlog would be measured as the worker's latency.
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "batch.size": 512 << 10, "acks": 1,
                     "queue.buffering.max.messages": 1_000_000})


def _send(producer, topic: str, key: bytes, value: bytes, on_delivery=None, partition: int | None = None) -> None:
    where = {} if partition is None else {"partition": partition}
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **where)  # timestamp = send time
            return
        except BufferError:  # local queue full: let deliveries drain it
            producer.poll(0.05)


def produce_all(bootstrap: str, topic: str, values: list[bytes]) -> float:
    producer = _producer(bootstrap, linger_ms=20)
    started = time.perf_counter()
    for i, value in enumerate(values):
        _send(producer, topic, b"e%d" % i, value)
    left = producer.flush(60)
    elapsed = time.perf_counter() - started
    if left:
        raise RuntimeError(f"{left} records not delivered")
    return elapsed


def raw_consume(bootstrap: str, topic: str, n: int, parse: bool = False) -> float:
    """Seconds for a bare kafka-python loop to read n records (first record to last), json.loads each if ``parse``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    loads = json.loads
    seen, started = 0, None
    while seen < n:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            if started is None:
                started = time.perf_counter()
            if parse:
                [loads(r.value) for r in records]
            seen += len(records)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def raw_consume_confluent(bootstrap: str, topic: str, n: int, parse: bool = False) -> float:
    """The same bare loop on confluent-kafka (librdkafka)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-raw", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    loads = json.loads
    seen, started = 0, None
    while seen < n:
        # consume() waits for as many as asked: never ask past the end, or the last batch waits out the timeout.
        messages = consumer.consume(min(5000, n - seen), timeout=0.5)
        if not messages:
            continue
        if started is None:
            started = time.perf_counter()
        if parse:
            [loads(m.value()) for m in messages]
        seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def worker_for(bootstrap: str, topic: str, group: str, on_batch=None, fetch_process: bool = True,
               client: str = "confluent", max_poll_records: int | None = None):
    from fairwatch.consumers.kafka_config import KafkaSettings
    from fairwatch.consumers.kafka_worker import make_worker
    from fairwatch.monitor.config import MonitorConfig
    from fairwatch.monitor.pipeline import Pipeline

    settings = KafkaSettings(bootstrap_servers=bootstrap, predictions_topic=topic, outcomes_topic=None,
                             dlq_topic=f"{topic}.dlq", group_id=group, commit_interval_seconds=5.0,
                             session_timeout_ms=6000, max_poll_interval_ms=10000, fetch_process=fetch_process,
                             client=client, **({"max_poll_records": max_poll_records} if max_poll_records else {}))
    return make_worker(settings, Pipeline(MonitorConfig(attributes=["race", "sex"])), on_batch=on_batch)


def worker_consume(bootstrap: str, topic: str, n: int, fetch_process: bool = True,
                   client: str = "confluent", max_poll_records: int | None = None) -> tuple[float, float]:
    """(seconds first record to last applied, seconds including the group join) for the worker."""
    worker = worker_for(bootstrap, topic, f"bench-worker-{client}-{fetch_process}-{max_poll_records}",
                        fetch_process=fetch_process, client=client, max_poll_records=max_poll_records)
    started = time.perf_counter()
    first = None

    def on_batch(_timestamps, _now):
        nonlocal first
        if first is None:
            first = time.perf_counter()

    worker.on_batch = on_batch
    worker.run(until=until_applied(worker, topic, n))
    done = time.perf_counter()
    return done - first, done - started


def _paced_producer(bootstrap: str, topic: str, values: list[bytes], rate: float, name: str = "l",
                    partitions: list[int] | None = None) -> None:
    """Send ``values`` at ``rate``/s, round-robin over ``partitions`` (None: by key)."""
    producer = _producer(bootstrap, linger_ms=5)
    # The topic's metadata first: librdkafka stamps a record when produce() is called, so records
    # queued while it still looks the topic up would count that lookup as the worker's latency.
    producer.list_topics(topic, timeout=30)
    failed = []

    def delivered(err, _message) -> None:  # a record the broker did not take would look like one the worker lost
        if err is not None:
            failed.append(err.str())

    started = time.monotonic()
    for i, value in enumerate(values):
        ahead = i / rate - (time.monotonic() - started)
        # Sleep in steps of a few ms, not before every record: at tens of thousands of records a
        # second, a sleep per record costs the producer (and the worker beside it) a core in wakeups.
        if ahead > PACING_STEP_SECONDS:
            time.sleep(ahead)
            producer.poll(0)
        _send(producer, topic, b"%s%d" % (name.encode(), i), value, delivered,
              partitions[i % len(partitions)] if partitions else None)
    left = producer.flush(60)
    elapsed = time.monotonic() - started
    print(f"(paced producer {name}: {len(values)} events in {elapsed:.1f} s for a schedule of "
          f"{len(values) / rate:.1f} s; not delivered: {len(failed) + left}{' ' + failed[0] if failed else ''})",
          flush=True)


def own_partitions(k: int, producers: int) -> list[int]:
    """The partitions that producer ``k`` of ``producers`` writes alone."""
    if not 0 < producers <= PARTITIONS:
        raise ValueError(f"between 1 and {PARTITIONS} producers, one partition or more each")
    return [p for p in range(PARTITIONS) if p % producers == k]


def latency(bootstrap: str, topic: str, values: list[bytes], rate: float, producers: int = 1,
            client: str = "confluent") -> np.ndarray:
    """Seconds from send() to applied, per event, at ``rate`` events/s from ``producers`` processes."""
    latencies: list[np.ndarray] = []

    def on_batch(timestamps, now):
        latencies.append(now - np.array(timestamps, dtype=np.float64) / 1000.0)

    worker = worker_for(bootstrap, topic, "bench-latency", on_batch, client=client)
    worker.connect()
    deadline = time.monotonic() + 60
    while not worker.assignment() and time.monotonic() < deadline:
        worker.poll_once()
    # Warm up: the first records after an assignment wait for the partitions' first fetch (3 to 4 s
    # on Tansu here, with either client), a one-off cost of a start, not the latency under load.
    started = time.monotonic()
    warmup = [v.replace(b'"event_id": "e', b'"event_id": "warmup-') for v in values[:WARMUP_RECORDS]]
    produce_all(bootstrap, topic, warmup)
    while worker.records[topic] < len(warmup) and time.monotonic() < deadline + 60:
        worker.poll_once()
    print(f"(latency worker: {len(warmup)} warm-up records applied {time.monotonic() - started:.1f} s after "
          f"they were sent; not counted)", flush=True)
    latencies.clear()
    spawn = multiprocessing.get_context("spawn")
    # Each producer writes its own partitions. Tansu (memory storage) lets a fetch at the end of a
    # partition that two producers write at once skip a record batch: the batch is stored and a
    # later read from the start returns it, but a consumer at the live edge, on either client, has
    # moved past it (benchmarks/kafka_live_edge.py shows it; docs/kafka.md, "Open"). On Tansu the
    # latency run then never saw its last records.
    senders = [spawn.Process(target=_paced_producer,
                             args=(bootstrap, topic, values[k::producers], rate / producers, f"l{k}-",
                                   own_partitions(k, producers)))
               for k in range(producers)]
    for sender in senders:
        sender.start()
    try:
        worker.run(until=until_applied(worker, topic, len(warmup) + len(values)))
    finally:
        for sender in senders:
            sender.join(timeout=60)
    return np.concatenate(latencies)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument("--producers", type=int, default=2, help="paced producer processes in the latency run")
    parser.add_argument("--latency-client", choices=("confluent", "kafka-python"), default="confluent",
                        help="the worker's client in the latency run (confluent)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except Stalled as exc:
        print(f"STALLED: {exc}", flush=True)
        raise SystemExit(1) from None


def run(args: argparse.Namespace) -> None:

    from fairwatch.consumers.broker import TansuBroker, create_topics
    from fairwatch.command_support import dump_stacks_on_sigusr1, tune_gc

    tune_gc()  # as `fairwatch run` does at start
    dump_stacks_on_sigusr1()

    values = make_values(args.events)
    with TansuBroker() as broker:
        bootstrap = broker.bootstrap_servers
        create_topics(bootstrap, {"bench.throughput": PARTITIONS, "bench.latency": PARTITIONS})
        print(f"machine: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores, "
              f"Python {platform.python_version()}; broker: Tansu (memory) on {bootstrap}; "
              f"{PARTITIONS} partitions; {args.events} events of ~{np.mean([len(v) for v in values[:1000]]):.0f} B")
        seconds = produce_all(bootstrap, "bench.throughput", values)
        produce_rate = args.events / seconds
        print(f"produce (confluent-kafka, acks=1):       {produce_rate:10,.0f} events/s")
        bare = {}
        for client, loop in (("kafka-python", raw_consume), ("confluent", raw_consume_confluent)):
            for parse in (False, True):
                bare[client, parse] = args.events / loop(bootstrap, "bench.throughput", args.events, parse)
                print(f"bare {client} loop, {'json.loads each' if parse else 'counting':15}: "
                      f"{bare[client, parse]:10,.0f} events/s   (baseline)", flush=True)
        rates = {}
        for client in ("kafka-python", "confluent"):
            seconds, with_join = worker_consume(bootstrap, "bench.throughput", args.events, client=client)
            rates[client] = args.events / seconds
            print(f"fairwatch run worker, {client:12}:    {rates[client]:10,.0f} events/s   "
                  f"({rates[client] / bare[client, True]:.0%} of its bare loop with json.loads; "
                  f"{args.events / with_join:,.0f}/s counting the group join)", flush=True)
        print(f"confluent worker / kafka-python worker: {rates['confluent'] / rates['kafka-python']:.2f}x")
        # The same worker at the former default batch bound: the breach decisions cost about the same per
        # batch whatever its size, so wider batches cost less per event.
        seconds, _ = worker_consume(bootstrap, "bench.throughput", args.events, max_poll_records=FORMER_MAX_POLL_RECORDS)
        former = args.events / seconds
        print(f"fairwatch run worker, confluent, at most {FORMER_MAX_POLL_RECORDS:,} records per batch (the former "
              f"default; baseline): {former:10,.0f} events/s; the default is {rates['confluent'] / former:.2f}x that",
              flush=True)
        worker_rate = rates[args.latency_client]
        # Half the worker's rate, but never above 80% of what one producer can
        # send: past that the backlog is the producer's, not the worker's.
        rate = min(worker_rate / 2, 0.8 * produce_rate * args.producers)
        if rate < worker_rate / 2:
            print(f"(latency paced at 80% of what {args.producers} producer(s) send: half the worker's rate, "
                  f"{worker_rate / 2:,.0f}/s, is more)")
        n = int(rate * args.latency_seconds)
        values = make_values(n, seed=2)
        # Three device runs once ended here without a word (killed by an outer timeout): should it
        # happen again, every thread's stack is printed after the phase has run three minutes.
        faulthandler.dump_traceback_later(args.latency_seconds + 180)
        lat = latency(bootstrap, "bench.latency", values, rate, args.producers, args.latency_client)
        faulthandler.cancel_dump_traceback_later()
        p50, p99, top = np.percentile(lat, [50, 99, 100])
        print(f"latency, {args.latency_client} worker, at {rate:,.0f} events/s ({n} events): "
              f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {top * 1000:.1f} ms "
              f"(send() to applied in the pipeline)")


if __name__ == "__main__":
    main()
