"""Worker processes of ``aiodisp serve --workers N`` (one UDP port, SO_REUSEPORT)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any

READY = "ready"  # what a worker process tells its parent once it serves
_WORKER_START_TIMEOUT = 15.0
_WORKER_STOP_TIMEOUT = 5.0


def say(line: str) -> None:
    """Print a line now; if stdout is gone (a worker whose parent died), print nothing more."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def stop_when_parent_leaves(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A worker's stdin is a pipe from its parent: end of file means the parent is gone."""

    def readable() -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop.set()

    os.set_blocking(0, False)
    loop.add_reader(0, readable)


class WorkerFailed(Exception):
    pass


class Worker:
    """One more ``aiodisp serve`` process on the same UDP port (SO_REUSEPORT)."""

    def __init__(self, args: argparse.Namespace, here: Any) -> None:
        self._argv = [
            sys.executable, "-m", "aiodisp", "serve", "--worker",
            "--listen", str(here).removeprefix("udp://"),
            "--framing", args.framing, "--format", args.format,
            "--key-field", args.key_field, "--reply-field", args.reply_field,
        ]
        if args.uvloop:
            self._argv.append("--uvloop")
        if args.verbose:
            self._argv.append("-" + "v" * args.verbose)
        self._proc: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise WorkerFailed(f"cannot start a worker process: {exc}") from None
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), _WORKER_START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() != READY.encode():
            raise WorkerFailed(f"worker process {proc.pid} did not start")
        self._relay = asyncio.create_task(_relay(proc.stdout))

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self) -> int:
        """SIGTERM the worker and wait for it (SIGKILL past a few seconds); its exit status."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            status = await asyncio.wait_for(proc.wait(), _WORKER_STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            status = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if self._relay is not None:
            await self._relay
        return status


async def _relay(stream: asyncio.StreamReader) -> None:
    """Copy a worker's output lines to ours."""
    while line := await stream.readline():
        say(line.decode(errors="replace").rstrip("\n"))
