"""Real parts for integration tests: one Tansu broker per session, `fairwatch run` workers as processes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

# Fast group membership for tests: a killed worker's partitions move after
# the session timeout, and a join waits at most the rebalance timeout.
SESSION_TIMEOUT_MS = 6000
MAX_POLL_INTERVAL_MS = 10000
# A Python process that imports kafka-python, numpy and River may take this long to start on a loaded machine.
STARTUP_SECONDS = 40  # times WAIT_FACTOR
_names = itertools.count()
# `fairwatch run --client`: the worker tests that hold its guarantees run on both client libraries.
CLIENTS = ["confluent", "kafka-python"]
# The same, with kafka-python with and without its fetch child process (its two ways of fetching).
CLIENT_FLAGS = {"confluent": ("--client", "confluent"),
                "kafka-python": ("--client", "kafka-python", "--fetch-process"),
                "kafka-python-one-thread": ("--client", "kafka-python", "--no-fetch-process")}


# Every readiness limit is stretched by this factor: a limit is what a loaded 2-core machine needs at worst,
# not how long a test takes (a ready condition ends the wait at once). FAIRWATCH_TEST_WAIT_FACTOR overrides it.
WAIT_FACTOR = float(os.environ.get("FAIRWATCH_TEST_WAIT_FACTOR", "3"))


def wait_for(condition: Callable[[], object], timeout: float, message: str | Callable[[], str],
             interval: float = 0.1):
    """Poll ``condition`` until it returns something truthy; fail with ``message`` after ``timeout`` seconds
    times WAIT_FACTOR."""
    timeout *= WAIT_FACTOR
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {message() if callable(message) else message}")
        time.sleep(interval)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a /metrics endpoint ({} while it does not answer)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def select(samples: dict, name: str, **labels) -> dict:
    """Samples of one name whose labels include ``labels``."""
    return {k: v for k, v in samples.items()
            if k[0] == name and all(dict(k[1]).get(key) == value for key, value in labels.items())}


def total(samples: dict, name: str, **labels) -> float:
    return sum(select(samples, name, **labels).values())


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    pytest.importorskip("kafka", reason="the kafka extra (kafka-python) is not installed")
    pytest.importorskip("confluent_kafka", reason="the kafka extra (confluent-kafka) is not installed")
    from fairwatch.consumers.broker import BrokerError, TansuBroker, find_tansu

    try:
        find_tansu()
    except BrokerError as exc:
        pytest.skip(str(exc))
    with TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as running:
        yield running


@pytest.fixture
def topics(broker, request):
    """Fresh topic names for one test: predictions, outcomes, dlq, group (4 partitions each)."""
    from fairwatch.consumers.broker import create_topics

    n = next(_names)
    stem = f"t{n}-{request.node.name[:40].replace('[', '-').replace(']', '')}"
    names = {"predictions": f"{stem}.predictions", "outcomes": f"{stem}.outcomes", "dlq": f"{stem}.dlq",
             "group": f"{stem}.group"}
    create_topics(broker.bootstrap_servers, {names[k]: 4 for k in ("predictions", "outcomes", "dlq")})
    return names


class Service:
    """A fairwatch command as a subprocess serving /metrics, its output in a log file."""

    def __init__(self, args: list[str], port: int, log_path: Path, env: dict | None = None) -> None:
        self.args, self.port, self.log_path = args, port, log_path
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self):
        with open(self.log_path, "ab") as log:
            # cwd: the test's tmp dir, where faust writes its data dir (not the checkout)
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.log_path.parent,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        wait_for(lambda: self.metrics() or self.process.poll() is not None, STARTUP_SECONDS,
                 lambda: f"{self.args[3]} /metrics never answered; log:\n{self.log()}")
        assert self.process.poll() is None, f"{self.args[3]} exited with {self.process.returncode}:\n{self.log()}"
        return self

    def metrics(self) -> dict:
        return scrape(self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(60)

    def stop(self) -> None:
        if self.alive():
            self.kill()


class Worker(Service):
    """`fairwatch run`, as an operator starts it."""

    def __init__(self, broker, topics: dict, log_dir: Path, *extra: str, name: str = "worker",
                 state_dir: Path | None = None, env: dict | None = None) -> None:
        from fairwatch.consumers.broker import free_port

        port = free_port()
        args = [sys.executable, "-m", "fairwatch", "run", "--bootstrap-servers", broker.bootstrap_servers,
                "--predictions-topic", topics["predictions"], "--outcomes-topic", topics["outcomes"],
                "--dlq-topic", topics["dlq"], "--group-id", topics["group"], "--client-id", name,
                "--metrics-port", str(port), "--metrics-addr", "127.0.0.1",
                "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
                "--max-poll-interval-ms", str(MAX_POLL_INTERVAL_MS), "--commit-interval-seconds", "1",
                *(["--state-dir", str(state_dir)] if state_dir else []), *extra]
        super().__init__(args, port, log_dir / f"{name}.log", env)

    def assigned(self) -> str | None:
        """The partitions of the worker's latest assignment, as logged."""
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if " assigned " in line]
        return lines[-1].split(" assigned ", 1)[1] if lines else None

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@pytest.fixture
def workers(broker, topics, tmp_path):
    """Start workers with ``workers(*flags, name=..., state_dir=...)``; all are killed at teardown."""
    started: list[Worker] = []

    def start(*extra: str, name: str = "worker", state_dir: Path | None = None, group: str | None = None,
              env: dict | None = None) -> Worker:
        names = dict(topics, group=group) if group else topics
        worker = Worker(broker, names, tmp_path, *extra, name=name, state_dir=state_dir, env=env)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


class JoinApp(Service):
    """`fairwatch join` as a subprocess."""

    def __init__(self, broker, topics: dict, log_dir, app_id: str, *extra: str, name: str = "join") -> None:
        from fairwatch.consumers.broker import free_port

        pytest.importorskip("faust", reason="the kafka extra (faust-streaming) is not installed")

        port = free_port()
        args = [sys.executable, "-m", "fairwatch", "join", "--bootstrap-servers", broker.bootstrap_servers,
                "--predictions-topic", topics["predictions"], "--outcomes-topic", topics["outcomes"],
                "--labeled-topic", topics["labeled"], "--app-id", app_id, "--metrics-port", str(port),
                "--metrics-addr", "127.0.0.1", "--commit-interval-seconds", "0.5",
                "--session-timeout-ms", str(SESSION_TIMEOUT_MS), "--rebalance-timeout-ms", "10000",
                # Tansu: end offsets are wrong after multi-record batches; Faust's changelog
                # recovery stops at them (see consumers/outcome_join.py).
                "--producer-max-batch-size", "1", *extra]
        super().__init__(args, port, log_dir / f"{name}.log")

    def count(self, family: str, **labels) -> float:
        return total(self.metrics(), family, **labels)

    def wait_count(self, family: str, expected: float, timeout: float = 45, **labels) -> None:
        wait_for(lambda: self.count(family, **labels) == expected or self.process.poll() is not None, timeout,
                 lambda: f"{family}{labels} is {self.count(family, **labels)}, expected {expected}; "
                         f"log:\n{self.log()}")
        assert self.process.poll() is None, f"join exited with {self.process.returncode}:\n{self.log()}"


@pytest.fixture
def join_topics(broker, topics):
    from fairwatch.consumers.broker import create_topics

    names_ = dict(topics, labeled=topics["predictions"].replace(".predictions", ".labeled"))
    create_topics(broker.bootstrap_servers, {names_["labeled"]: 4})
    return names_


def produce(bootstrap: str, messages, **producer_kwargs) -> dict[tuple[str, int], int]:
    """Send (topic, key, value[, headers]) tuples; return the end offset per (topic, partition).
    ``producer_kwargs`` override the defaults (e.g. ``batch_size``)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, "batch_size": 256 << 10, "acks": "all",
                                                             **producer_kwargs})
    futures = [producer.send(m[0], key=m[1], value=m[2], headers=m[3] if len(m) > 3 else None) for m in messages]
    producer.flush()
    ends: dict[tuple[str, int], int] = {}
    for future in futures:
        meta = future.get(timeout=30)
        key = (meta.topic, meta.partition)
        ends[key] = max(ends.get(key, 0), meta.offset + 1)
    producer.close()
    return ends
