"""Ctrl-C (SIGINT) in every ``aiodisp`` subcommand: exit status 130, no traceback, nothing left.

Each test starts the real command, waits until it is busy (a line it prints,
a datagram it sent, a read it blocks in) and then interrupts it.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.leaves.test_cli import CLI, SLOW, _alive, _children

_ECHOED = re.compile(r"pid (\d+) echoed \d+ messages?")


class Command:
    """A running ``aiodisp`` process with its output piped."""

    def __init__(self, *args: str, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=new_session,
        )
        self._seen = {"stdout": b"", "stderr": b""}

    def line(self, which: str, contains: str) -> str:
        """The first line on ``which`` ("stdout", "stderr") containing ``contains``."""
        stream = self.proc.stdout if which == "stdout" else self.proc.stderr
        assert stream is not None
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline:
            for line in self._seen[which].decode(errors="replace").splitlines():
                if contains in line:
                    return line
            ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(stream.fileno(), 65536) if ready else b""
            if not chunk and self.proc.poll() is not None:
                break
            self._seen[which] += chunk
        raise AssertionError(f"no line with {contains!r}; exit status {self.proc.poll()}")

    def interrupt(self, *, group: bool = False) -> tuple[int, str, str]:
        """SIGINT (to the process group, as a terminal sends it, with ``group``).

        The exit status and all of stdout and stderr.
        """
        if group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=SLOW)
        return (self.proc.returncode, (self._seen["stdout"] + out).decode(),
                (self._seen["stderr"] + err).decode())


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        if command.proc.poll() is None:
            command.proc.kill()
        command.proc.communicate()


@pytest.fixture
def silent_port() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


def _start(commands: list[Command], *args: str, new_session: bool = False) -> Command:
    command = Command(*args, new_session=new_session)
    commands.append(command)
    return command


def _assert_interrupted(status: int, err: str) -> None:
    assert status == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_ctrl_c_stops_serve_with_130(commands: list[Command]) -> None:
    serve = _start(commands, "serve", "--listen", "127.0.0.1:0")
    serve.line("stdout", "listening on")
    status, out, err = serve.interrupt()
    _assert_interrupted(status, err)
    assert f"pid {serve.proc.pid} echoed 0 messages" in out  # it stopped cleanly


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_ctrl_c_in_a_terminal_stops_serve_and_its_workers(commands: list[Command]) -> None:
    serve = _start(commands, "serve", "--listen", "127.0.0.1:0", "--workers", "3",
                   new_session=True)
    serve.line("stdout", "listening on")
    workers = _children(serve.proc.pid)
    assert len(workers) == 2
    status, out, err = serve.interrupt(group=True)  # what Ctrl-C in a terminal does
    _assert_interrupted(status, err)
    # every process stopped cleanly and said so; the workers were stopped by their parent
    assert {int(pid) for pid in _ECHOED.findall(out)} == {serve.proc.pid, *workers}
    assert not any(_alive(w) for w in workers)


@pytest.mark.parametrize("command", ["request", "notify"])
def test_ctrl_c_stops_a_waiting_exchange_with_130(
    commands: list[Command], silent_port: socket.socket, command: str
) -> None:
    port = silent_port.getsockname()[1]
    waiting = _start(commands, command, f"127.0.0.1:{port}", '{"id": 1}', "--timeout", "60")
    silent_port.settimeout(SLOW)
    assert b'"id":1' in silent_port.recv(65535)  # sent: now it waits for an answer
    status, out, err = waiting.interrupt()
    _assert_interrupted(status, err)
    assert out == ""


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs Linux /proc")
def test_ctrl_c_while_reading_the_message_from_stdin(commands: list[Command]) -> None:
    reading = _start(commands, "request", "127.0.0.1:9", "-")
    deadline = time.monotonic() + SLOW
    while time.monotonic() < deadline:
        with open(f"/proc/{reading.proc.pid}/wchan") as f:
            if "pipe_read" in f.read():  # blocked reading stdin
                break
        time.sleep(0.01)
    else:
        pytest.skip("cannot tell when the process reads stdin")
    status, _out, err = reading.interrupt()
    _assert_interrupted(status, err)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_ctrl_c_stops_bench_and_its_server(commands: list[Command]) -> None:
    bench = _start(commands, "bench", "--duration", "600", "--in-flight", "8",
                   new_session=True)
    bench.line("stderr", "aiodisp bench: measuring")
    (server,) = _children(bench.proc.pid)
    status, out, err = bench.interrupt(group=True)
    _assert_interrupted(status, err)
    assert out == ""  # no half-measured result
    deadline = time.monotonic() + SLOW
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(server)


def test_ctrl_c_stops_bench_serve_with_130(commands: list[Command]) -> None:
    serving = _start(commands, "bench", "--serve", "127.0.0.1:0")
    serving.line("stdout", "listening on")
    status, _out, err = serving.interrupt()
    _assert_interrupted(status, err)


def test_ctrl_c_stops_demo_with_130(commands: list[Command]) -> None:
    demo = _start(commands, "demo", "--count", "100000000")
    demo.line("stdout", "ACKed by the server")  # the load has started
    status, _out, err = demo.interrupt()
    _assert_interrupted(status, err)
