"""The trigger's HTTP face: POST /alerts, GET /healthz, GET /metrics, bounded against hostile clients.

What a client can cost the trigger is bounded before the trigger reads a
byte of body: the bearer token is checked on the headers (at most
``MAX_HEADER_BYTES``), the body must announce its length
(``Content-Length``, at most ``MAX_BODY_BYTES``), nothing past that is read,
and a request (headers and body together) must arrive within
``REQUEST_SECONDS``. At most ``MAX_CONNECTIONS`` connections are served at
once, one thread each; a connection beyond that is answered 503 with
``Retry-After`` at once (Alertmanager retries) and closed, so a flood of
slow clients can neither exhaust threads nor starve the accept loop. The
kernel queues up to ``LISTEN_BACKLOG`` connections not yet accepted.

http.server rather than a framework: the trigger needs three routes, and
these bounds are a few lines around the standard library's server.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("fairwatch.trigger.http")

MAX_BODY_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 << 10  # request line and headers together; the body's allowance comes with its length
REQUEST_SECONDS = 10.0
WRITE_SECONDS = 10.0
LISTEN_BACKLOG = 128
MAX_CONNECTIONS = 64
# ASCII digits only, and few: str.isdigit takes '²' and int() refuses more than 4300 digits, both with a traceback.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,10}")


def _busy_reply() -> bytes:
    body = json.dumps({"error": f"more than {MAX_CONNECTIONS} connections at once: retry"}).encode()
    head = ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class ServerCounts:
    """What the HTTP layer refused or cut short, and how many bytes it read, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = {"busy": 0, "timeouts": 0, "bytes_read": 0}

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self.values[key] += amount


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes, every read bounded by the time left to the whole request and by a
    byte allowance: ``MAX_HEADER_BYTES`` for the headers, plus what ``allow`` grants the body.
    Past the allowance the connection reads as ended."""

    def __init__(self, connection: socket.socket, deadline: float, counts: ServerCounts) -> None:
        self.connection = connection
        self.deadline = deadline
        self.counts = counts
        self.allowance = MAX_HEADER_BYTES

    def allow(self, body_bytes: int) -> None:
        self.allowance += body_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.allowance <= 0:
            return 0
        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.connection.settimeout(remaining)
            with memoryview(buffer) as view:
                n = self.connection.recv_into(view[: self.allowance])
        except TimeoutError:
            self.counts.add("timeouts")
            raise
        self.allowance -= n
        self.counts.add("bytes_read", n)
        return n


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a real backlog and a cap on connections served at once."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS,
                 request_seconds: float = REQUEST_SECONDS) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self.request_seconds = request_seconds
        self.counts = ServerCounts()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.counts.add("busy")
            try:
                request.settimeout(1.0)
                request.sendall(_busy_reply())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class TriggerHandler(BaseHTTPRequestHandler):
    """Routes to ``server.trigger``; ``server.registry`` serves /metrics."""

    timeout = WRITE_SECONDS  # the socket's timeout while replying (reads use the request's deadline)

    def setup(self) -> None:
        super().setup()
        deadline = time.monotonic() + self.server.request_seconds
        self.reader = _DeadlineReader(self.connection, deadline, self.server.counts)
        self.rfile = io.BufferedReader(self.reader)

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.connection.settimeout(WRITE_SECONDS)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, error: str) -> None:
        """Answer without reading the body, and close: what is left unread is never read."""
        self.close_connection = True
        self._reply(status, self.server.trigger.reject(status, error).body)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        trigger = self.server.trigger
        if self.path.rstrip("/") != "/alerts":
            self.close_connection = True
            return self._reply(404, {"error": "POST /alerts"})
        authorization = self.headers.get("Authorization")
        if not trigger.authorised(authorization):
            return self._refuse(401, "missing or wrong bearer token")
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "send the body with a Content-Length; chunked bodies are refused")
        declared = self.headers.get("Content-Length")
        if declared is None:
            return self._refuse(411, "a Content-Length is required")
        if not _CONTENT_LENGTH.fullmatch(declared.strip()):
            return self._refuse(400, f"bad Content-Length {declared[:20]!r}: expected 1 to 10 ASCII digits")
        length = int(declared)
        if length > MAX_BODY_BYTES:
            return self._refuse(413, f"payload of {length} bytes exceeds {MAX_BODY_BYTES}")
        self.reader.allow(length)
        body = self.rfile.read(length)
        if len(body) < length:
            return self._refuse(400, f"body ended after {len(body)} of {length} bytes")
        try:
            response = trigger.handle(body, authorization)
        except Exception as exc:  # never let one request take the server down
            log.exception("webhook handling failed")
            response = trigger.reject(500, f"{type(exc).__name__}: {exc}")
        if response.status != 200:
            log.warning("webhook rejected (%s): %s", response.status, response.body.get("error"))
        self._reply(response.status, response.body)

    def do_GET(self):  # noqa: N802
        path = self.path.rstrip("/")
        if path == "/healthz":
            return self._reply(200, {"ok": True, **self.server.trigger.counts, **self.server.counts.values})
        if path == "/metrics":
            from prometheus_client import generate_latest

            data = generate_latest(self.server.registry)
            self.connection.settimeout(WRITE_SECONDS)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        self._reply(404, {"error": "GET /healthz or /metrics"})

    def log_message(self, format, *args):  # quiet: the trigger logs what matters
        log.debug(format, *args)
