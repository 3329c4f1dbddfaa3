"""The trigger's HTTP bounds over real sockets: token before body, byte limit, timeouts, backlog, connection cap."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from test_trigger import TOKEN, alert, payload, post

from fairwatch.alerts import trigger_http
from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.trigger import Trigger, serve


@pytest.fixture
def server(tmp_path):
    started = []

    def start(**bounds):
        store = IncidentStore(tmp_path / "incidents.sqlite")
        trigger = Trigger(store, TOKEN, policy="manual")
        http, port = serve(trigger, port=0, poll_seconds=0.2, **bounds)
        started.append(http)
        return http, trigger, store, port

    yield start
    for http in started:
        http.shutdown()
        http.server_close()


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 20) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection.sendall(head.encode() + b"\r\n" + body)
    return connection


def read_status(connection: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def headers(length: int | None, token: str = TOKEN, extra: str = "") -> str:
    lines = ["POST /alerts HTTP/1.1", "Host: trigger", f"Authorization: Bearer {token}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n" + extra


def test_a_100_mib_body_with_a_bad_token_is_refused_before_the_body_is_read(server):
    http, trigger, store, port = server()
    connection = raw_request(port, headers(100 << 20, token="wrong"), b"x" * 4096)
    sent = 4096
    # Keep sending while waiting: the 401 must come while the client is far from done.
    connection.setblocking(False)
    status_line = b""
    deadline = time.monotonic() + 20
    while not status_line and time.monotonic() < deadline:
        try:
            status_line = connection.recv(4096)
        except BlockingIOError:
            try:
                sent += connection.send(b"x" * 65536)
            except (BlockingIOError, ConnectionError):
                time.sleep(0.01)
        except ConnectionError:
            break
    connection.close()
    assert status_line.startswith(b"HTTP/1.0 401"), status_line
    assert sent < 100 << 20
    assert http.counts.values["bytes_read"] < 64 * 1024
    assert trigger.counts["rejected"] == 1 and store.list() == []


@pytest.mark.parametrize("length, extra, status", [
    (None, "", 411),                                  # no Content-Length
    (-1, "", 400),                                    # "read until the client closes"
    (trigger_http.MAX_BODY_BYTES + 1, "", 413),       # oversize, announced
    (None, "Transfer-Encoding: chunked\r\n", 411),    # length unknown until the end
])
def test_bodies_without_an_acceptable_length_are_refused_without_reading_them(server, length, extra, status):
    http, trigger, store, port = server()
    connection = raw_request(port, headers(length, extra=extra), b"y" * 1000)
    assert read_status(connection) == status
    connection.close()
    assert http.counts.values["bytes_read"] < 64 * 1024
    assert store.list() == []
    assert post(f"http://127.0.0.1:{port}/alerts", payload(alert()))[0] == 200  # still serving


def test_endless_headers_are_cut_off_at_the_header_allowance(server):
    http, trigger, store, port = server()
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        connection.sendall(b"POST /alerts HTTP/1.1\r\n")
        for i in range(40):  # 40 headers of 60 KiB: each under http.server's line limit
            connection.sendall(f"X-Pad-{i}: ".encode() + b"p" * (60 << 10) + b"\r\n")
    except OSError:
        pass  # the server stopped reading and closed: what this test wants
    connection.close()
    wait = time.monotonic() + 20
    while http.counts.values["bytes_read"] == 0 and time.monotonic() < wait:
        time.sleep(0.05)
    assert 0 < http.counts.values["bytes_read"] <= trigger_http.MAX_HEADER_BYTES < 40 * (60 << 10)
    assert store.list() == [] and post(f"http://127.0.0.1:{port}/alerts", payload(alert()))[0] == 200


def test_a_slow_client_is_cut_off_at_the_request_deadline(server):
    http, trigger, store, port = server(request_seconds=1.0)
    body = payload(alert())
    connection = raw_request(port, headers(len(body)), body[:10])  # then nothing more
    connection.settimeout(20)
    started = time.monotonic()
    assert connection.recv(4096) == b""  # the server closed the connection
    assert time.monotonic() - started < 15
    assert http.counts.values["timeouts"] == 1 and store.list() == []
    # A header trickling in a byte at a time: each byte arrives well within any per-read
    # timeout, but the request as a whole never finishes.
    dripping = socket.create_connection(("127.0.0.1", port), timeout=20)
    dripping.sendall(b"POST /alerts HTTP/1.1\r\nX-Slow: ")
    for _ in range(200):
        try:
            dripping.send(b"X")
        except OSError:
            break
        time.sleep(0.02)
    dripping.settimeout(20)
    try:
        assert dripping.recv(4096) == b""
    except ConnectionResetError:
        pass
    assert http.counts.values["timeouts"] == 2


def test_50_simultaneous_deliveries_all_get_2xx(server):
    http, trigger, store, port = server()
    url = f"http://127.0.0.1:{port}/alerts"
    ready = threading.Barrier(50)
    statuses = []

    def deliver(i: int) -> None:
        body = payload(alert(attribute=f"a{i}", fingerprint=f"f{i}"))
        ready.wait()
        statuses.append(post(url, body)[0])

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] * 50
    assert len(store.list()) == 50


def test_connections_beyond_the_cap_get_a_quick_503_and_the_server_recovers(server):
    http, trigger, store, port = server(max_connections=4, request_seconds=30)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(4)]
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:  # until the four idle ones hold every slot
        extra = socket.create_connection(("127.0.0.1", port), timeout=20)
        extra.sendall(headers(2).encode() + b"\r\n{}")
        status = read_status(extra)
        extra.close()
        if status == 503:
            break
    assert status == 503 and http.counts.values["busy"] >= 1
    for connection in idle:
        connection.close()
    deadline = time.monotonic() + 20
    while post(f"http://127.0.0.1:{port}/alerts", payload(alert()))[0] != 200:
        assert time.monotonic() < deadline
    assert len(store.list()) == 1


def test_the_listen_backlog_is_real(server):
    http, *_ = server()
    assert http.request_queue_size == trigger_http.LISTEN_BACKLOG >= 128


@pytest.mark.parametrize("declared", [
    "\N{SUPERSCRIPT TWO}",  # str.isdigit says yes, int() says no
    "9" * 5000,             # past int()'s digit limit
    "12345678901",          # 11 digits: no body that long is ever read
])
def test_an_odd_content_length_is_a_counted_400_not_a_dropped_connection(server, declared):
    http, trigger, store, port = server()
    head = (f"POST /alerts HTTP/1.1\r\nHost: trigger\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {declared}\r\n\r\n")
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    connection.sendall(head.encode("latin-1") + b"{}")  # http.server reads headers as latin-1
    reply = b""
    while chunk := connection.recv(65536):
        reply += chunk
    connection.close()
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.0 400"), reply
    error = rest.split(b"\r\n\r\n", 1)[1].decode()
    assert "Content-Length" in error and "\n" not in error
    assert trigger.counts["rejected"] == 1 and store.list() == []
    assert post(f"http://127.0.0.1:{port}/alerts", payload(alert()))[0] == 200
