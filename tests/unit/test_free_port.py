"""free_port never hands one process the same port twice, even once the first is closed again."""

from __future__ import annotations

import socket

from fairwatch.consumers.broker import free_port


def test_ports_picked_before_any_is_bound_are_distinct_and_bindable():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:  # each is a real free port: the last one binds
        sock.bind(("127.0.0.1", ports[-1]))
