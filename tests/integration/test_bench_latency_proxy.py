"""The benchmarks' latency proxy forwards every byte in order, both ways, and holds client bytes back."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LATENCY_PROXY = Path(__file__).resolve().parents[2] / "bench" / "latency_proxy.py"


@pytest.fixture(scope="module")
def delay_proxy_class() -> type:
    # bench/ holds scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_latency_proxy", LATENCY_PROXY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.DelayProxy


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A TCP server on loopback that sends back whatever it receives, one connection at a time."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                while data := connection.recv(65536):
                    connection.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    listener.close()


def _exchange(port: int, messages: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as client:
        for message in messages:
            client.sendall(message)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while data := client.recv(65536):
            received += data
    return received


def test_bytes_arrive_unchanged_and_in_order(delay_proxy_class: type, echo_server: tuple[str, int]) -> None:
    messages = [f"message {index};".encode() * 50 for index in range(40)] + [bytes(range(256)) * 600]

    with delay_proxy_class(echo_server, delay_s=0.001) as proxy:
        received = _exchange(proxy.port, messages)

    assert received == b"".join(messages)


def test_a_round_trip_waits_at_least_the_delay(delay_proxy_class: type, echo_server: tuple[str, int]) -> None:
    # A lower bound only: the proxy can make a round trip slower than the delay, never faster.
    with delay_proxy_class(echo_server, delay_s=0.2) as proxy:
        started = time.perf_counter()
        received = _exchange(proxy.port, [b"ping"])
        elapsed = time.perf_counter() - started

    assert received == b"ping"
    assert elapsed >= 0.2
