"""Where the kafka-python worker's CPU goes: CPU seconds per process, per event, next to the raw loop's.

    python -m benchmarks.kafka_cpu --events 500000 [--profile-raw]

One Tansu broker, one topic of N events (as ``benchmarks.kafka``). Prints
the CPU time (user + system, from /proc/PID/stat, Linux only) that the raw
kafka-python loop, and then the ``fairwatch run`` worker and its fetch
process, spent per event, and the broker's. Explains the share of raw the
worker keeps on a machine with few cores. ``--profile-raw`` adds the top
functions of the raw loop under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

from benchmarks.kafka import PARTITIONS, make_values, produce_all, raw_consume, until_applied, worker_for


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--profile-raw", action="store_true", help="cProfile the raw loop (slows it)")
    args = parser.parse_args(argv)

    from fairwatch.consumers.broker import TansuBroker, create_topics
    from fairwatch.command_support import tune_gc

    tune_gc()
    n = args.events
    with TansuBroker() as broker:
        bootstrap, me, tansu = broker.bootstrap_servers, os.getpid(), broker.process.pid
        create_topics(bootstrap, {"cpu": PARTITIONS})
        produce_all(bootstrap, "cpu", make_values(n))

        before = cpu_seconds(me), cpu_seconds(tansu)
        wall = raw_consume(bootstrap, "cpu", n)
        raw_cpu, raw_broker = cpu_seconds(me) - before[0], cpu_seconds(tansu) - before[1]
        print(f"raw loop: {n / wall:,.0f} events/s; CPU {raw_cpu / n * 1e6:.1f} µs/event in the consumer, "
              f"{raw_broker / n * 1e6:.1f} in the broker")

        worker = worker_for(bootstrap, "cpu", "cpu-worker", client="kafka-python")
        marks: dict[str, float] = {}
        child: dict[str, float] = {}

        def on_batch(_timestamps, _now) -> None:  # CPU counted from the first record, as the wall time
            if not marks:
                marks.update(t=time.perf_counter(), me=cpu_seconds(me), tansu=cpu_seconds(tansu),
                             child=cpu_seconds(worker.fetcher.process.pid))

        done = until_applied(worker, "cpu", n)

        def until() -> bool:  # read the child's CPU while it is alive: it exits with the worker
            child["now"] = cpu_seconds(worker.fetcher.process.pid)
            return done()

        worker.on_batch = on_batch
        worker.run(until=until)
        wall = time.perf_counter() - marks["t"]
        parent = cpu_seconds(me) - marks["me"]
        fetch = child["now"] - marks["child"]
        broker_cpu = cpu_seconds(tansu) - marks["tansu"]
        print(f"fairwatch run: {n / wall:,.0f} events/s; CPU {parent / n * 1e6:.1f} µs/event in the worker, "
              f"{fetch / n * 1e6:.1f} in its fetch process, {broker_cpu / n * 1e6:.1f} in the broker; "
              f"{(parent + fetch + broker_cpu) / wall / os.cpu_count():.0%} of {os.cpu_count()} cores busy")

        if args.profile_raw:
            profile = cProfile.Profile()
            profile.runcall(raw_consume, bootstrap, "cpu", n)
            pstats.Stats(profile).sort_stats("tottime").print_stats(6)


if __name__ == "__main__":
    main()
