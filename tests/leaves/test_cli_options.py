"""Options a new user reached for: ``-v``, a message from stdin, ``serve --sockbuf``."""

from __future__ import annotations

import json
import re
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.leaves.test_cli import CLI, Server, run_cli

_VERBOSE = re.compile(
    r"aiodisp request: reply from udp://\S+ after (\d+) attempts? in ([\d.]+) ms "
    r"\(retransmission timeout now \d+ ms\)"
)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*args: str) -> Server:
        server = Server([*CLI, "serve", *args])
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate()


class DropFirst(threading.Thread):
    """A UDP relay in front of ``server`` that drops the first datagram a client sends."""

    def __init__(self, server: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.front.getsockname()[1]}"
        self.dropped = 0
        self._halt = threading.Event()

    def run(self) -> None:
        client: tuple[str, int] | None = None
        while not self._halt.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in ready:
                data, client = self.front.recvfrom(65535)
                if self.dropped == 0:
                    self.dropped = 1
                else:
                    self.back.sendto(data, self.server)
            if self.back in ready:
                data, _ = self.back.recvfrom(65535)
                if client is not None:
                    self.front.sendto(data, client)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.front.close()
        self.back.close()


# ---------------------------------------------------------------------- -v


def test_verbose_request_shows_one_attempt_and_its_round_trip(
    serve: Callable[..., Server],
) -> None:
    server = serve("--listen", "127.0.0.1:0")
    done = run_cli("request", "-v", server.address, '{"id": 1}', "--timeout", "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": 1, "reply": True}  # stdout stays the reply
    match = _VERBOSE.search(done.stderr)
    assert match is not None, done.stderr
    assert int(match[1]) == 1 and 0 < float(match[2]) < 5000


def test_verbose_request_counts_a_retransmission(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    relay = DropFirst(server.udp_addr)
    relay.start()
    try:
        # 4 sends over 3 s: the first wait is 3 / 15 s = 200 ms
        done = run_cli("request", "-v", relay.address, '{"id": 2}', "--timeout", "3",
                       "--retries", "3")
    finally:
        relay.stop()
    assert done.returncode == 0, done.stderr
    assert relay.dropped == 1
    match = _VERBOSE.search(done.stderr)
    assert match is not None, done.stderr
    assert int(match[1]) == 2  # the dropped first send and the retransmission
    assert float(match[2]) >= 100  # after the first wait (200 ms, give or take its jitter)


def test_verbose_notify_shows_its_ack(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    done = run_cli("notify", "-v", server.address, '{"id": 3}')
    assert done.returncode == 0, done.stderr
    assert re.search(r"aiodisp notify: ACK from udp://\S+ after 1 attempt in [\d.]+ ms",
                     done.stderr), done.stderr


def test_quiet_request_prints_only_the_reply(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    done = run_cli("request", server.address, '{"id": 4}')
    assert done.returncode == 0 and done.stderr == ""


# ---------------------------------------------------------------------- a message from stdin


@pytest.mark.parametrize("command", ["request", "notify"])
def test_message_dash_is_read_from_stdin(serve: Callable[..., Server], command: str) -> None:
    server = serve("--listen", "127.0.0.1:0")
    done = run_cli(command, server.address, "-", input='{"id": 5,\n "body": "from stdin"}\n')
    assert done.returncode == 0, done.stderr
    if command == "request":
        assert json.loads(done.stdout) == {"id": 5, "body": "from stdin", "reply": True}
    _status, out, _err = server.stop()
    assert list(server.echoed(out).values()) == [1]


@pytest.mark.parametrize(("stdin", "says"), [("", "stdin has no message"),
                                             ("{nope", "is not JSON")])
def test_bad_message_on_stdin_is_a_usage_error(stdin: str, says: str) -> None:
    done = run_cli("request", "127.0.0.1:9", "-", input=stdin)
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------- serve --sockbuf


def _kernel_figure(size: int | None) -> tuple[int, int]:
    """The buffers a UDP socket reports after asking for ``size`` (None: as it comes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if size is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        rcv = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        snd = s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    return (rcv // 2, snd // 2) if sys.platform == "linux" else (rcv, snd)


@pytest.mark.parametrize("size", [65536, 1 << 20])
def test_serve_sockbuf_sets_the_socket_buffers(serve: Callable[..., Server], size: int) -> None:
    expected = _kernel_figure(size)
    assert expected != _kernel_figure(None)  # the option makes a difference to look for
    server = serve("--listen", "127.0.0.1:0", "--sockbuf", str(size))
    assert f"socket buffers {expected[0]} / {expected[1]} bytes" in server.line
    done = run_cli("request", server.address, '{"id": 6}')  # and it serves
    assert done.returncode == 0, done.stderr


def test_serve_sockbuf_is_passed_to_every_worker(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0", "--sockbuf", "65536", "--workers", "2")
    assert "socket buffers" in server.line
    status, _out, err = server.stop()
    assert status == 0, err


def test_serve_sockbuf_needs_udp(tmp_path: object) -> None:
    done = run_cli("serve", "--unix", f"{tmp_path}/s", "--sockbuf", "65536")
    assert done.returncode == 2
    assert "--sockbuf needs a UDP --listen address" in done.stderr
