"""The ``aiodisp`` command line, run as real processes (``python -m aiodisp ...``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.flood import drain

CLI = [sys.executable, "-m", "aiodisp"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SLOW = 60  # seconds a process may take at worst on a loaded machine
_LISTENING = re.compile(r"listening on (?:udp://(?P<udp>\S+)|unix:(?P<unix>\S+)) \(")
_ECHOED = re.compile(r"pid (\d+) echoed (\d+) messages?")


def run_cli(
    *args: str, timeout: float = SLOW, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          input=input)


class Server:
    """A running server process (``aiodisp serve``, an example) and the address it printed."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self._readline(SLOW)
        match = _LISTENING.search(line)
        if match is None:
            self.proc.kill()
            _out, err = self.proc.communicate()
            raise AssertionError(f"no listening line: {line!r}; stderr: {err}")
        self.line = line
        self.address = match["udp"] or f"unix:{match['unix']}"

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    @property
    def udp_addr(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``sig``; the exit status and the rest of stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=SLOW)
        return self.proc.returncode, out, err

    def echoed(self, out: str) -> dict[int, int]:
        """pid -> messages echoed, from the lines printed at exit."""
        return {int(pid): int(n) for pid, n in _ECHOED.findall(out)}


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*args: str, argv: list[str] | None = None) -> Server:
        server = Server(argv if argv is not None else [*CLI, "serve", *args])
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate()


@pytest.fixture
def silent_port() -> Iterator[socket.socket]:
    """A bound UDP socket that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        yield s


# ---------------------------------------------------------------------- request / notify


def test_request_prints_the_echoed_reply_as_json(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    done = run_cli("request", server.address, '{"id": 1, "body": "hi"}', "--timeout", "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": 1, "body": "hi", "reply": True}
    status, out, _err = server.stop()
    assert status == 0
    assert list(server.echoed(out).values()) == [1]


def test_notify_is_acknowledged_and_reaches_the_server(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    done = run_cli("notify", server.address, '{"id": "n-1", "text": "note"}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"delivered to udp://{server.address} (acknowledged)"
    _status, out, _err = server.stop()
    assert list(server.echoed(out).values()) == [1]


def test_idprefix_messages_over_raw_framing(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0", "--framing", "raw", "--format", "idprefix")
    assert "(raw framing, idprefix messages)" in server.line
    done = run_cli("request", "--framing", "raw", "--format", "idprefix",
                   server.address, '{"id": 42, "payload": "ping"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": 42, "payload": "ping", "reply": True}
    unconfirmed = run_cli("notify", "--framing", "raw", "--format", "idprefix", "--unreliable",
                          server.address, '{"id": 43}')
    assert unconfirmed.returncode == 0, unconfirmed.stderr
    assert "(unconfirmed)" in unconfirmed.stdout


def test_key_and_reply_fields_are_configurable(serve: Callable[..., Server]) -> None:
    fields = ("--key-field", "seq", "--reply-field", "answer")
    server = serve("--listen", "127.0.0.1:0", *fields)
    done = run_cli("request", *fields, server.address, '{"seq": [1, "a"], "id": 5}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"seq": [1, "a"], "id": 5, "answer": True}
    missing = run_cli("request", *fields, server.address, '{"id": 5}')
    assert missing.returncode == 2
    assert "has no 'seq' field" in missing.stderr


def test_serves_and_requests_over_ipv6(serve: Callable[..., Server]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    server = serve("--listen", "[::1]:0")
    assert server.address.startswith("[::1]:")
    done = run_cli("request", server.address, '{"id": 6}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": 6, "reply": True}


@pytest.mark.parametrize("how", ["--unix PATH", "--listen unix:PATH"])
def test_serves_and_requests_over_a_unix_socket(
    serve: Callable[..., Server], tmp_path: Path, how: str
) -> None:
    path = tmp_path / "echo.sock"
    option, _, value = how.partition(" ")
    server = serve(option, value.replace("PATH", str(path)))
    assert server.address == f"unix:{path}"
    done = run_cli("request", server.address, '{"id": 7, "x": [1, 2]}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": 7, "x": [1, 2], "reply": True}
    note = run_cli("notify", server.address, '{"id": 8}')
    assert note.returncode == 0, note.stderr
    status, out, _err = server.stop()
    assert status == 0
    assert list(server.echoed(out).values()) == [2]
    assert not path.exists()  # the socket file is removed on close


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("127.0.0.1", "is not HOST:PORT"),
        ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("::1:9000", "put an IPv6 address in brackets"),
        ("no-such-host.invalid:9000", "cannot resolve"),
        ("unix:", "the Unix socket path is empty"),
    ],
)
def test_bad_address_is_a_usage_error(address: str, says: str) -> None:
    done = run_cli("request", address, '{"id": 1}')
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ('{"id": 1', "is not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"body": "no key"}', "has no 'id' field"),
        ('{"id": 1, "reply": true}', "would take it for a reply"),
    ],
)
def test_bad_message_is_a_usage_error(message: str, says: str) -> None:
    done = run_cli("request", "127.0.0.1:9", message)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_notify_over_raw_udp_needs_ack_framing() -> None:
    done = run_cli("notify", "--framing", "raw", "127.0.0.1:9", '{"id": 1}')
    assert done.returncode == 2
    assert "needs --framing ack" in done.stderr


def test_request_to_a_silent_port_times_out_after_its_retries(
    silent_port: socket.socket,
) -> None:
    port = silent_port.getsockname()[1]
    t0 = time.monotonic()
    done = run_cli("request", f"127.0.0.1:{port}", '{"id": 5}', "--timeout", "1",
                   "--retries", "2")
    assert done.returncode == 1
    assert time.monotonic() - t0 >= 0.5
    assert "timed out" in done.stderr and "3 attempt(s)" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    sent = drain(silent_port)
    assert len(sent) == 3  # the first send and two retransmissions
    assert all(b'{"id":5}' in datagram for datagram in sent)


def test_notify_to_a_silent_port_times_out(silent_port: socket.socket) -> None:
    port = silent_port.getsockname()[1]
    done = run_cli("notify", f"127.0.0.1:{port}", '{"id": 5}', "--timeout", "0.5")
    assert done.returncode == 1
    assert "timed out" in done.stderr and "no ACK" in done.stderr


def test_serve_on_a_port_in_use_fails_cleanly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = run_cli("serve", "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "cannot bind" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------- serving


@pytest.mark.parametrize(("sig", "exit_status"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_stops_the_server_cleanly(
    serve: Callable[..., Server], sig: int, exit_status: int
) -> None:
    server = serve("--listen", "127.0.0.1:0")
    status, out, err = server.stop(sig)
    assert status == exit_status  # Ctrl-C: 130, as a shell expects
    assert server.echoed(out) == {server.proc.pid: 0}
    assert err == ""


async def _request_from_many_sockets(addr: tuple[str, int], sockets: int) -> None:
    """One request from each of ``sockets`` client sockets (distinct source ports)."""
    clients = [await aiodisp.open_udp(IdPrefixAdapter()) for _ in range(sockets)]
    try:
        replies = await asyncio.gather(*(
            c.request(IdMessage(i, b"w%d" % i), addr, timeout=20.0,
                      retry=aiodisp.RetryPolicy(initial_timeout=0.2))
            for i, c in enumerate(clients)
        ))
    finally:
        for c in clients:
            await c.close()
    assert replies == [IdMessage(i, b"w%d" % i, True) for i in range(sockets)]


async def test_workers_share_one_port_and_all_answer(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0", "--format", "idprefix", "--workers", "2")
    assert "2 worker processes" in server.line
    await _request_from_many_sockets(server.udp_addr, 32)
    status, out, err = server.stop()
    assert status == 0, err
    echoed = server.echoed(out)
    # Two processes served: SO_REUSEPORT spreads 32 source ports over both sockets
    # (all on one socket has odds of 2 in 2**32).
    assert len(echoed) == 2 and server.proc.pid in echoed
    assert sum(echoed.values()) == 32
    assert all(n > 0 for n in echoed.values())
    for pid in echoed:
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to an init that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_parent_is_killed(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0", "--workers", "3")
    workers = _children(server.proc.pid)
    assert len(workers) == 2
    server.proc.kill()  # no chance to stop its workers: they must notice by themselves
    # The workers hold the server's stdout and stderr too: both end once they exit.
    _out, err = server.proc.communicate(timeout=SLOW)
    # Closing its pipes is one of the last things an exiting process does, not the last.
    deadline = time.monotonic() + SLOW
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(w) for w in workers)
    assert "Traceback" not in err


def test_workers_need_udp(tmp_path: Path) -> None:
    done = run_cli("serve", "--unix", str(tmp_path / "s"), "--workers", "2")
    assert done.returncode == 2
    assert "--workers needs a UDP --listen address" in done.stderr


def test_uvloop_serving(serve: Callable[..., Server]) -> None:
    pytest.importorskip("uvloop")
    server = serve("--listen", "127.0.0.1:0", "--uvloop")
    done = run_cli("request", "--uvloop", server.address, '{"id": 9}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": 9, "reply": True}
    assert server.stop()[0] == 0


# ---------------------------------------------------------------------- the echo examples


def test_echo_examples_talk_to_each_other_and_to_the_cli(serve: Callable[..., Server]) -> None:
    example = serve(argv=[sys.executable, str(EXAMPLES / "echo_server.py"), "127.0.0.1:0"])
    cli_server = serve("--listen", "127.0.0.1:0")
    for server in (example, cli_server):
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "echo_client.py"), server.address],
            capture_output=True, text=True, timeout=SLOW,
        )
        assert client.returncode == 0, client.stderr
        lines = client.stdout.splitlines()
        assert [json.loads(line) for line in lines[:5]] == [
            {"id": i, "text": f"hello {i}", "reply": True} for i in range(5)
        ]
        assert lines[5] == "notification acknowledged"
    done = run_cli("request", example.address, '{"id": "from-cli"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "from-cli", "reply": True}
    status, out, _err = example.stop()
    assert status == 0
    assert "stopped after 7 messages" in out  # 5 requests, 1 notification, 1 from the CLI


def test_echo_client_fails_cleanly_without_a_server(silent_port: socket.socket) -> None:
    port = silent_port.getsockname()[1]
    client = subprocess.run(
        [sys.executable, str(EXAMPLES / "echo_client.py"), f"127.0.0.1:{port}", "0.5"],
        capture_output=True, text=True, timeout=SLOW,
    )
    assert client.returncode == 1
    assert "no answer" in client.stderr and "Traceback" not in client.stderr


# ---------------------------------------------------------------------- the rest


def test_demo_runs() -> None:
    done = run_cli("demo", "--count", "200", "--in-flight", "8")
    assert done.returncode == 0, done.stderr
    assert "reply id=1 payload=b'hello'" in done.stdout
    assert "200 requests, 8 in flight" in done.stdout


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"aiodisp {aiodisp.__version__}"


@pytest.mark.parametrize("command", [[], ["serve"], ["request"], ["notify"], ["bench"], ["demo"]])
def test_help(command: list[str]) -> None:
    done = run_cli(*command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: aiodisp {' '.join(command)}".rstrip())


def test_no_command_is_a_usage_error() -> None:
    done = run_cli()
    assert done.returncode == 2
    assert "required" in done.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "aiodisp"
    if not script.exists():
        pytest.skip("the aiodisp console script is not installed next to this Python")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=SLOW)
    assert done.returncode == 0
    assert done.stdout.startswith("aiodisp ")
