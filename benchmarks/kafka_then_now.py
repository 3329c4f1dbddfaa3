"""Today's Kafka worker beside the worker of an earlier commit: one broker, one topic, alternating rounds.

    python -m benchmarks.kafka_then_now --events 300000 --rounds 3 [--then 815fe7a]

Issue #16 asks the worker on the 2-core machine for at least 2x the worker of the day it was filed. That
worker's code is the baseline here, run in the same run: the tree of ``--then`` (default 815fe7a, the last
commit before the confluent-kafka backend) is exported with ``git archive`` into a temporary folder, and
each round runs its worker (its own ``benchmarks.kafka.worker_for``: kafka-python with its fetch child,
the only client it had) and today's (``[kafka]`` defaults: confluent-kafka) in child processes, each with
the GC settings of its ``fairwatch run``, each as a new consumer group reading the same topic from the
start. Rates count from the first record to the last applied; the ratio is taken per round (paired).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.kafka import PARTITIONS, make_values, produce_all

ROOT = Path(__file__).resolve().parent.parent
THEN = "815fe7a"  # 2026-11-28: the worker of the day #16 was filed (kafka-python, fetch child)

# Run in a child process, in the tree under test: the worker reads the whole topic as a new group. Not the
# trees' own ``worker_consume``: the earlier one joins one fixed group, which a second round would find at the
# topic's end.
CHILD = """
import json, sys, time
{imports}
tune_gc()  # as `fairwatch run` does at start
bootstrap, topic, n, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
worker = worker_for(bootstrap, topic, group)
first = None
def on_batch(_timestamps, _now):
    global first
    if first is None:
        first = time.perf_counter()
worker.on_batch = on_batch
worker.run(until=until_applied(worker, topic, n))
print(json.dumps({{"seconds": time.perf_counter() - first, "applied": worker.records[topic]}}))
"""
IMPORTS = {
    "then": "from benchmarks.kafka import worker_for, until_applied\nfrom monitor.cli import tune_gc",
    "now": "from benchmarks.kafka import worker_for, until_applied\nfrom fairwatch.command_support import tune_gc",
}


def export_tree(commit: str, into: Path) -> Path:
    """The files of ``commit`` under ``into`` (``git archive``: no work tree, no checkout)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    archive_path = into.parent / f"{into.name}.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(into, filter="data")
    archive_path.unlink()
    return into


def run_worker(which: str, tree: Path, bootstrap: str, topic: str, n: int, group: str, timeout: float) -> float:
    """Events/s of one worker run in a child process whose working folder is ``tree``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run([sys.executable, "-c", CHILD.format(imports=IMPORTS[which]), bootstrap, topic, str(n),
                           group], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{which} worker failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["applied"] < n:
        raise RuntimeError(f"{which} worker applied {result['applied']:,} of {n:,} records")
    return n / result["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--then", default=THEN, help=f"the earlier commit (default {THEN})")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a worker run may take")
    args = parser.parse_args(argv)

    from fairwatch.consumers.broker import TansuBroker, create_topics

    with tempfile.TemporaryDirectory(prefix="fairwatch-then-") as scratch, TansuBroker() as broker:
        then_tree = export_tree(args.then, Path(scratch) / "tree")
        bootstrap = broker.bootstrap_servers
        create_topics(bootstrap, {"bench.then-now": PARTITIONS})
        produce_all(bootstrap, "bench.then-now", make_values(args.events))
        load = os.getloadavg()[0]
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
              f"Tansu (memory), {PARTITIONS} partitions, {args.events:,} events; then = {args.then}; "
              f"load average {load:.2f}", flush=True)
        trees = {"then": then_tree, "now": ROOT}
        rates: dict[str, list[float]] = {"then": [], "now": []}
        for k in range(args.rounds):
            order = ("then", "now") if k % 2 == 0 else ("now", "then")  # neither always first
            for which in order:
                rates[which].append(run_worker(which, trees[which], bootstrap, "bench.then-now", args.events,
                                               f"then-now-{which}-{k}-{time.monotonic_ns()}", args.timeout))
            print(f"round {k + 1}: then {rates['then'][-1]:,.0f} events/s, now {rates['now'][-1]:,.0f} "
                  f"({rates['now'][-1] / rates['then'][-1]:.2f}x)", flush=True)
        ratios = [now / then for now, then in zip(rates["now"], rates["then"])]
        print(f"\nworker at {args.then} (baseline): median {statistics.median(rates['then']):,.0f} events/s")
        print(f"worker today (default client): median {statistics.median(rates['now']):,.0f} events/s")
        print(f"today / then, paired: median {statistics.median(ratios):.2f}x (rounds: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}); load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
