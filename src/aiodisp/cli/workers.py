"""Child ``aiodisp serve`` processes: the workers of ``serve --workers N`` and bench's server.

A child runs ``python -m aiodisp serve --child ...``: it prints ``ready
HOST:PORT`` once it serves, stops on SIGTERM or when its stdin (a pipe from the
parent) closes, so it never outlives a parent that was killed, and ignores
SIGINT: it runs in a session of its own, out of the terminal's reach, and its
parent, which Ctrl-C reaches, stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable

import aiodisp

from .args import Where, parse_address

__all__ = ["READY", "Worker", "WorkerFailed", "say", "stop_when_parent_leaves"]

READY = "ready"  # what a child tells its parent once it serves, then its address
#: Where the aiodisp we run is imported from: the children import the same one.
_SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(aiodisp.__file__)))
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


def say(line: str) -> None:
    """Print a line now; if stdout is gone (a child whose parent died), print nothing more."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def stop_when_parent_leaves(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """A child's stdin is a pipe from its parent: end of file means the parent is gone."""

    def readable() -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop()

    os.set_blocking(0, False)
    loop.add_reader(0, readable)


class WorkerFailed(Exception):
    """A child process did not start, or died."""


class Worker:
    """One ``aiodisp serve --child`` process at ``listen``, with the options of ``args``.

    ``args`` has the options every talking command shares (framing, format,
    loop, verbosity) and ``sockbuf`` (None: the child's default). ``relay=True``
    copies the child's output lines to ours; otherwise they are read and dropped.
    """

    def __init__(
        self, args: argparse.Namespace, listen: Where, *, reuse_port: bool, relay: bool = True
    ) -> None:
        self._argv = [
            sys.executable, "-m", "aiodisp", "serve", "--child",
            "--listen", listen.hostport,
            "--framing", args.framing, "--format", args.format,
            "--key-field", args.key_field, "--reply-field", args.reply_field,
        ]
        if reuse_port:
            self._argv.append("--reuse-port")
        if args.sockbuf is not None:
            self._argv += ["--sockbuf", str(args.sockbuf)]
        if args.uvloop:
            self._argv.append("--uvloop")
        if args.verbose:
            self._argv.append("-" + "v" * args.verbose)
        self._relay_lines = relay
        self._proc: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> Where:
        """Start the child; return the address it serves on once it says it is ready."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE, env.get("PYTHONPATH")]))
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=env, start_new_session=True,
            )
        except OSError as exc:
            raise WorkerFailed(f"cannot start a child process: {exc}") from None
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT)
        except TimeoutError:
            line = b""
        word, _, addr = line.decode(errors="replace").strip().partition(" ")
        if word != READY:
            raise WorkerFailed(f"child process {proc.pid} did not start")
        self._relay = asyncio.create_task(_relay(proc.stdout, self._relay_lines))
        return parse_address(addr)

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self) -> int:
        """SIGTERM the child and wait for it (SIGKILL past a few seconds); its exit status."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            status = await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            status = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if self._relay is not None:
            await self._relay
        return status


async def _relay(stream: asyncio.StreamReader, relay: bool) -> None:
    """Copy a child's output lines to ours (or just read them)."""
    while line := await stream.readline():
        if relay:
            say(line.decode(errors="replace").rstrip("\n"))
