"""Processes of a benchmark: servers that live across rounds, one process per client run."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from typing import Any

import common

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: The aiodisp sources the benchmark processes import: the working tree's ``src/``, or a
#: snapshot of a commit (``AIODISP_BENCH_SRC``, say from ``git archive HEAD src | tar -x
#: -C DIR``) when the working tree is being edited meanwhile; ``AIODISP_BENCH_COMMIT``
#: then names the snapshot's commit in the results.
SRC = os.environ.get("AIODISP_BENCH_SRC") or os.path.join(ROOT, "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = SRC
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    return env


class Server:
    """A server process (``server_main.py``); ``addr`` is what it printed once bound."""

    def __init__(self, **opts: Any) -> None:
        self.opts = opts
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server_main.py"), json.dumps(opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(),
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60.0)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.close()
            raise RuntimeError(f"server {opts} did not start")
        self.addr: Any = json.loads(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return common.process_cpu(self.proc.pid)

    def close(self) -> None:
        proc = self.proc
        if proc.returncode is not None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.close()
            proc.wait(10.0)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(10.0)
        proc.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_client(budget: float | None = None, **opts: Any) -> dict[str, Any]:
    """Run one client measurement in a fresh process; its Measurement as a dict."""
    if budget is None:
        budget = opts["duration"] + opts["warmup"] + 60.0
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "client_main.py"), json.dumps(opts)],
        capture_output=True, env=_env(), timeout=budget, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"client {opts['peer']}/{opts['variant']} failed: {out.stderr.decode()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def free_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody is bound to now (for servers that cannot report theirs)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def source_version() -> dict[str, Any]:
    """The commit measured, and whether src/ had uncommitted changes."""
    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT,
                             check=False)
        return out.stdout.strip()

    if os.environ.get("AIODISP_BENCH_SRC"):
        return {"commit": os.environ.get("AIODISP_BENCH_COMMIT", "unknown"), "src_dirty": False,
                "src": SRC, "tree_head": git("rev-parse", "--short", "HEAD")}
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "src_dirty": bool(git("status", "--porcelain", "src"))}
