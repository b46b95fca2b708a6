"""Start and stop the real peers the interop tests talk to, and load the examples.

Each daemon runs in the foreground on a free loopback port, with its output in
a file of the test's tmp dir (not a pipe nobody reads), and is stopped by the
fixture that started it. A test skips only when the binary is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["Daemon", "binary", "free_port", "load_example", "run_daemon"]

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    module_name = f"{name}_example"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def binary(name: str, package: str) -> str:
    """The path of ``name``, or skip: the machine truly lacks it."""
    path = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin", "/usr/bin") if Path(p := f"{d}/{name}").exists()),
        None,
    )
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install {package})")
    return path


def free_port() -> int:
    """A loopback port free for UDP and TCP alike (the daemons bind both)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("127.0.0.1", port))
    return port


class Daemon:
    """A running daemon: its address, its log file and its process."""

    def __init__(self, proc: subprocess.Popen[bytes], addr: tuple[str, int], log: Path) -> None:
        self.proc = proc
        self.addr = addr
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 5.0) -> bool:
        """Whether ``text`` shows up in the daemon's output within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(0.02)
        return text in self.output()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def run_daemon(
    argv: Callable[[int], list[str]],
    ready: Callable[[tuple[str, int]], bool],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    attempts: int = 3,
) -> Iterator[Daemon]:
    """Run ``argv(port)`` until ``ready(addr)``; a port taken meanwhile is retried."""
    log = workdir / "output.log"
    for _ in range(attempts):
        port = free_port()
        addr = ("127.0.0.1", port)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv(port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=workdir, env={**os.environ, **(env or {})},
            )
        daemon = Daemon(proc, addr, log)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(addr):
                break
            time.sleep(0.05)
        else:
            daemon.stop()
            continue
        try:
            yield daemon
        finally:
            daemon.stop()
        return
    pytest.fail(f"{argv(0)[0]} did not start: {log.read_text(errors='replace')}")


def udp_answers(addr: tuple[str, int], query: bytes, timeout: float = 0.2) -> bytes | None:
    """The first datagram ``addr`` answers ``query`` with, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, addr)
            return s.recv(65535)
        except OSError:
            return None
