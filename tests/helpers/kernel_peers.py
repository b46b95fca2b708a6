"""A loss lab in the real kernel, and the two peers that run inside it.

:class:`LossLab` creates two fresh network namespaces joined by a veth pair
(server 10.231.0.1, client 10.231.0.2; nothing else lives there) and, in each,
an nftables ``input`` chain that drops a given percentage of the test's UDP
datagrams at random: in the server's namespace those sent to the server's port,
in the client's namespace those sent from it. Each drop rule has a counter, so
a test can prove the kernel really dropped packets. Deleting the namespaces
removes the veth pair and the rules with them.

Run as a script (``ip netns exec NS python kernel_peers.py ...``), this file is
one of the peers; each prints one JSON line with what it saw:

* ``server --bind IP:PORT [--reply]``: a dispatcher whose application records
  the id of every message it is handed (and, with ``--reply``, answers with
  ``notify_unreliable``). It prints ``{"ready": addr}`` once bound, runs until
  a line (or EOF) arrives on stdin, then prints the ids and its stats.
* ``client --server IP:PORT --mode notify|request --count N ...``: ``N``
  notify() or request() calls, ``--concurrency`` in flight at once; prints how
  many succeeded, the errors, each call's completion time and its stats.

The benchmark ``benchmarks/loss_goodput.py`` loads this module too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter

SERVER_IP = "10.231.0.1"
CLIENT_IP = "10.231.0.2"
PORT = 40000
TABLE = "aiodisp_loss"
_SCRIPT = str(Path(__file__).resolve())
_labs = itertools.count(1)


# --------------------------------------------------------------------------- the workload


def payload_for(mode: str, i: int) -> bytes:
    return f"{mode}:{i}".encode()


@dataclass
class CallResults:
    """What a batch of notify() or request() calls came to."""

    ok: int
    errors: list[str]
    bad_replies: int
    latencies: list[float]
    elapsed: float


async def run_calls(
    d: aiodisp.Dispatcher[Any],
    server: Any,
    *,
    mode: str,
    count: int,
    concurrency: int,
    timeout: float,
    retry: aiodisp.RetryPolicy | None,
) -> CallResults:
    """Make ``count`` calls to ``server``, ``concurrency`` at a time; ids are 1..count."""
    loop = asyncio.get_running_loop()
    ids = iter(range(1, count + 1))
    latencies: list[float] = []
    errors: list[str] = []
    bad = 0

    async def worker() -> None:
        nonlocal bad
        for i in ids:
            msg = IdMessage(i, payload_for(mode, i))
            start = loop.time()
            try:
                if mode == "notify":
                    await d.notify(msg, server, timeout=timeout, retry=retry)
                else:
                    reply = await d.request(msg, server, timeout=timeout, retry=retry)
                    if reply != msg._replace(reply=True):
                        bad += 1
            except aiodisp.DispatchError as exc:
                errors.append(f"{i}: {exc!r}")
            else:
                latencies.append(loop.time() - start)

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return CallResults(len(latencies), errors, bad, latencies, loop.time() - began)


async def serve_app(d: aiodisp.Dispatcher[Any], seen: list[int], mismatched: list[int],
                    *, reply: bool) -> None:
    """The serving application: record every message's id, answer it if asked to."""
    async for msg, _size, addr in d:
        seen.append(msg.id)
        if msg.payload not in (payload_for("notify", msg.id), payload_for("request", msg.id)):
            mismatched.append(msg.id)
        if reply:
            await d.notify_unreliable(msg._replace(reply=True), addr)


def policy_from(initial_timeout: float, max_attempts: int, max_interval: float,
                ) -> aiodisp.RetryPolicy:
    """A RetryPolicy from command-line numbers (0 means adaptive / unlimited)."""
    return aiodisp.RetryPolicy(
        initial_timeout=initial_timeout or None,
        max_attempts=max_attempts or None,
        max_interval=max_interval,
    )


# --------------------------------------------------------------------------- the peers


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _server_main(args: argparse.Namespace) -> None:
    d = await aiodisp.open_udp(IdPrefixAdapter(), local_addr=_hostport(args.bind),
                               dedup_ttl=args.dedup_ttl)
    seen: list[int] = []
    mismatched: list[int] = []
    app = asyncio.create_task(serve_app(d, seen, mismatched, reply=args.reply))
    print(json.dumps({"ready": list(d.local_addr)}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # until told to stop (a line or EOF)
    await d.close()
    await app
    print(json.dumps({"received": seen, "mismatched": mismatched,
                      "stats": d.stats.as_dict()}), flush=True)


async def _client_main(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    if args.no_window:  # exactly-once through heavy random loss, not the rate
        options.update(congestion=False, retry_budget=None)
    d = await aiodisp.open_udp(IdPrefixAdapter(), local_addr=(args.bind, 0), **options)
    async with d:
        res = await run_calls(
            d, _hostport(args.server), mode=args.mode, count=args.count,
            concurrency=args.concurrency, timeout=args.timeout,
            retry=policy_from(args.initial_timeout, args.max_attempts, args.max_interval),
        )
    print(json.dumps({"ok": res.ok, "errors": res.errors, "bad_replies": res.bad_replies,
                      "latencies": res.latencies, "elapsed": res.elapsed,
                      "stats": d.stats.as_dict()}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--bind", default=f"{SERVER_IP}:{PORT}")
    server.add_argument("--reply", action="store_true")
    server.add_argument("--dedup-ttl", type=float, default=30.0,
                        help="how long delivered datagrams are remembered (a tiny value "
                        "turns de-duplication off, for the negative control)")
    client = sub.add_parser("client")
    client.add_argument("--bind", default=CLIENT_IP)
    client.add_argument("--server", default=f"{SERVER_IP}:{PORT}")
    client.add_argument("--mode", choices=("notify", "request"), required=True)
    client.add_argument("--count", type=int, default=2000)
    client.add_argument("--concurrency", type=int, default=100)
    client.add_argument("--timeout", type=float, default=15.0)
    client.add_argument("--initial-timeout", type=float, default=0.0, help="0: adaptive")
    client.add_argument("--max-attempts", type=int, default=0, help="0: unlimited")
    client.add_argument("--max-interval", type=float, default=0.5)
    client.add_argument("--no-window", action="store_true",
                        help="congestion=False, retry_budget=None: at 20 %% loss each way "
                        "the window and the budget (rightly) hold the calls back")
    args = parser.parse_args(argv)
    asyncio.run(_server_main(args) if args.role == "server" else _client_main(args))


# --------------------------------------------------------------------------- the lab


class LabError(RuntimeError):
    """A command that builds the lab failed (its stderr is the message)."""


def _run(*cmd: str, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here, or None: tried for real, not guessed."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and nftables rules"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command (Debian package {package})"
    try:
        with LossLab(0):
            pass
    except LabError as exc:
        return f"cannot build a network namespace with nftables here: {exc}"
    return None


class LossLab:
    """Two namespaces joined by veth; ``loss_percent`` of the test's UDP dropped each way."""

    def __init__(self, loss_percent: int, *, port: int = PORT) -> None:
        if not 0 <= loss_percent <= 100:
            raise ValueError("loss_percent must be in [0, 100]")
        self.loss_percent = loss_percent
        self.port = port
        tag = f"aiodisp-{os.getpid()}-{next(_labs)}"
        self.server_ns = f"{tag}-srv"
        self.client_ns = f"{tag}-cli"
        self._created: list[str] = []

    def __enter__(self) -> LossLab:
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    def _create(self) -> None:
        srv, cli = self.server_ns, self.client_ns
        for ns in (srv, cli):
            _run("ip", "netns", "add", ns)
            self._created.append(ns)
        _run("ip", "-n", srv, "link", "add", "veth0", "type", "veth",
             "peer", "name", "veth0", "netns", cli)
        for ns, ip in ((srv, SERVER_IP), (cli, CLIENT_IP)):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "veth0")
            _run("ip", "-n", ns, "link", "set", "veth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        self._rules(srv, "dport")  # datagrams arriving at the server
        self._rules(cli, "sport")  # datagrams arriving from the server

    def _rules(self, ns: str, field: str) -> None:
        match = f"udp {field} {self.port}"
        _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=f"""
table inet {TABLE} {{
    chain input {{
        type filter hook input priority 0; policy accept;
        {match} counter comment "seen"
        {match} numgen random mod 100 < {self.loss_percent} counter drop comment "dropped"
    }}
}}
""")

    def destroy(self) -> None:
        """Delete the namespaces (and so the veth pair and the rules); idempotent."""
        while self._created:
            ns = self._created.pop()
            subprocess.run(("ip", "netns", "del", ns), capture_output=True, check=False)

    def counters(self) -> dict[str, dict[str, int]]:
        """Packets seen and dropped by the rules: ``{"to_server": {...}, "to_client": {...}}``."""
        out: dict[str, dict[str, int]] = {}
        for name, ns in (("to_server", self.server_ns), ("to_client", self.client_ns)):
            listing = json.loads(_run("ip", "netns", "exec", ns, "nft", "-j", "list", "table",
                                      "inet", TABLE))
            counts: dict[str, int] = {}
            for item in listing["nftables"]:
                rule = item.get("rule")
                if rule is None:
                    continue
                for expr in rule["expr"]:
                    if "counter" in expr:
                        counts[rule["comment"]] = expr["counter"]["packets"]
            out[name] = counts
        return out

    def popen(self, ns: str, *args: str) -> subprocess.Popen[str]:
        """Start this file as a peer inside namespace ``ns``."""
        return subprocess.Popen(
            ("ip", "netns", "exec", ns, sys.executable, "-u", _SCRIPT, *args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def exchange(self, mode: str, *client_args: str, server_args: Sequence[str] = (),
                 timeout: float = 120.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run a server and a client making ``mode`` calls; return both peers' JSON reports."""
        argv = ["server", "--bind", f"{SERVER_IP}:{self.port}", *server_args]
        if mode == "request":
            argv.append("--reply")
        with self.popen(self.server_ns, *argv) as server:
            try:
                assert server.stdout is not None and server.stdin is not None
                line = server.stdout.readline()
                if not line:
                    raise LabError(f"the server did not start: {server.communicate()[1]}")
                json.loads(line)  # {"ready": ...}
                with self.popen(self.client_ns, "client", "--server",
                                f"{SERVER_IP}:{self.port}", "--mode", mode,
                                *client_args) as client:
                    try:
                        out, err = client.communicate(timeout=timeout)
                    finally:
                        if client.poll() is None:
                            client.kill()
                            client.communicate()
                if client.returncode != 0:
                    raise LabError(f"the client failed ({client.returncode}): {err}")
                server_out, server_err = server.communicate("stop\n", timeout=30)
                if server.returncode != 0:
                    raise LabError(f"the server failed ({server.returncode}): {server_err}")
                return json.loads(out), json.loads(server_out)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.communicate()


if __name__ == "__main__":
    main()
