"""A multi-homed server bound to the wildcard answers from the address it was reached at.

Two fresh network namespaces joined by a veth pair: the server's side has two
IPv4 and two IPv6 addresses on one interface (a primary and a secondary of each
family) and a link-local one, the client's one of each. The kernel would send a reply to the client
from the primary address whatever address the client called; the server, bound
to the dual-stack wildcard, must answer from the address each request reached,
or the client's source check drops the reply. Both peers run as ``ip netns
exec`` subprocesses. Needs root and ``ip``; skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_PRIMARY, SERVER_SECONDARY, CLIENT = "10.233.0.1", "10.233.0.3", "10.233.0.2"
SERVER6_PRIMARY, SERVER6_SECONDARY, CLIENT6 = "fd00:233::1", "fd00:233::3", "fd00:233::2"
SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL = "fe80::233:1", "fe80::233:2"
ROOT = Path(__file__).resolve().parents[2]

SERVER = """
import asyncio, sys
import aiodisp
from tests.helpers.adapters import KeyAdapter

async def main() -> None:
    if sys.argv[1] == "default":
        d = await aiodisp.open_udp(KeyAdapter())
    else:
        d = await aiodisp.open_udp(KeyAdapter(), (sys.argv[1], 0))
    serving = asyncio.create_task(d.serve(lambda msg, addr: msg))
    print("ready", d.local_addr[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await d.close()
    await serving

asyncio.run(main())
"""

CLIENT_CODE = """
import asyncio, json, sys
import aiodisp
from tests.helpers.adapters import KeyAdapter

async def main() -> None:
    results = {}
    for target in sys.argv[2:]:
        if "%" in target:  # link-local: the kernel picks the source on that link
            bind = None
        else:
            bind = ("fd00:233::2" if ":" in target else "10.233.0.2", 0)
        async with await aiodisp.open_udp(KeyAdapter(), bind) as d:
            try:
                reply = await d.request((1, b"hi"), (target, int(sys.argv[1])), timeout=1)
                results[target] = {"ok": reply == (1, b"hi"), "wrong_source": d.stats.wrong_source}
            except aiodisp.RequestTimeout:
                results[target] = {"ok": False, "wrong_source": d.stats.wrong_source}
    print(json.dumps(results))

asyncio.run(main())
"""


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")


def unavailable_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs ip (iproute2)"
    return None


@pytest.fixture
def lab() -> Iterator[tuple[str, str]]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    srv, cli = f"aiodisp-mh-s{os.getpid()}", f"aiodisp-mh-c{os.getpid()}"
    try:
        for ns in (srv, cli):
            _run("ip", "netns", "add", ns)
        _run("ip", "-n", srv, "link", "add", "veth0", "type", "veth",
             "peer", "name", "veth0", "netns", cli)
        v4: list[tuple[str, list[str]]] = [
            (srv, [SERVER_PRIMARY, SERVER_SECONDARY]), (cli, [CLIENT])]
        v6: list[tuple[str, list[str]]] = [
            (srv, [SERVER_LINK_LOCAL, SERVER6_PRIMARY, SERVER6_SECONDARY]),
            (cli, [CLIENT_LINK_LOCAL, CLIENT6])]
        for ns, addrs in v4:
            for ip in addrs:
                _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "veth0")
        for ns, addrs in v6:
            for ip in addrs:
                _run("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", "veth0", "nodad")
        for ns in (srv, cli):
            _run("ip", "-n", ns, "link", "set", "veth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        yield srv, cli
    finally:
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def exchange(lab: tuple[str, str], bind: str, targets: list[str]) -> dict[str, dict[str, int]]:
    srv, cli = lab
    path = [os.environ.get("PYTHONPATH", ""), str(ROOT / "src"), str(ROOT)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    with subprocess.Popen(
        ["ip", "netns", "exec", srv, sys.executable, "-c", textwrap.dedent(SERVER), bind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    ) as server:
        assert server.stdout is not None and server.stdin is not None
        try:
            ready, port = server.stdout.readline().split()
            assert ready == "ready"
            client = subprocess.run(
                ["ip", "netns", "exec", cli, sys.executable, "-c",
                 textwrap.dedent(CLIENT_CODE), port, *targets],
                capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
            )
        finally:
            server.stdin.close()
            server.wait(timeout=10)
    assert client.returncode == 0, client.stderr
    results: dict[str, dict[str, int]] = json.loads(client.stdout)
    return results


@pytest.mark.parametrize("bind", ["default", "0.0.0.0"])
def test_a_multi_homed_wildcard_server_answers_from_each_address_called(
    lab: tuple[str, str], bind: str
) -> None:
    targets = [SERVER_PRIMARY, SERVER_SECONDARY]
    if bind == "default":
        # and over IPv6, a link-local destination with its scope (the interface) too
        targets += [SERVER6_PRIMARY, SERVER6_SECONDARY, SERVER_LINK_LOCAL + "%veth0"]
    results = exchange(lab, bind, targets)
    assert results == {t: {"ok": True, "wrong_source": 0} for t in targets}
