"""Prometheus export of dispatcher stats, scraped through a real registry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import aiodisp
import aiodisp.sync
from aiodisp._serve import Server
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from aiodisp.metrics import STAT_HELP, DispatcherCollector, register
from aiodisp.stats import STAT_FIELDS


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """``{(sample name, dispatcher label): value}`` parsed back from the exposition text."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, s.labels.get("dispatcher", "")] = s.value
    return out


def test_every_stat_has_help_text() -> None:
    assert set(STAT_HELP) == set(STAT_FIELDS)


async def test_counters_follow_the_dispatchers_on_every_scrape() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter(), link=aiodisp.Link(seed=1, loss=0.0))
    registry = CollectorRegistry(auto_describe=True)
    collector = DispatcherCollector(a, name="client")
    collector.add(b, "server")
    registry.register(collector)
    async with a, b:
        before = samples(registry)
        assert before["aiodisp_sent_total", "client"] == 0
        assert before["aiodisp_pending", "client"] == 0
        for i in range(3):
            await a.notify_unreliable(IdMessage(i), b.local_addr)
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(a.request(IdMessage(50), b.local_addr))
        await asyncio.sleep(0.01)
        now = samples(registry)
        assert now["aiodisp_sent_total", "client"] == 4
        assert now["aiodisp_notifies_total", "client"] == 3
        assert now["aiodisp_requests_total", "client"] == 1
        assert now["aiodisp_received_total", "server"] == 4
        assert now["aiodisp_queued", "server"] == 4
        assert now["aiodisp_pending", "client"] == 1
        assert now["aiodisp_closed", "server"] == 0
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert samples(registry)["aiodisp_cancelled_total", "client"] == 1
    after = samples(registry)
    assert after["aiodisp_closed", "server"] == 1
    assert after["aiodisp_discarded_on_close_total", "server"] == 4
    # every counter is exported for every dispatcher, with its HELP
    text = generate_latest(registry).decode()
    for field in STAT_FIELDS:
        assert f"# HELP aiodisp_{field}_total {STAT_HELP[field]}" in text
        assert ("aiodisp_" + field + "_total", "client") in after
    collector.remove("client")
    assert ("aiodisp_sent_total", "client") not in samples(registry)
    assert collector.names == ["server"]


async def test_server_counters_and_namespace() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())

    async def handler(msg: IdMessage, addr: Any) -> IdMessage:
        if msg.payload == b"bad":
            raise ValueError("bad")
        return msg._replace(reply=True)

    srv = Server(b, handler)
    registry = CollectorRegistry()
    register(b, "dns", server=srv, registry=registry, namespace="myapp")
    running = asyncio.create_task(srv.run())
    async with a, b:
        await a.request(IdMessage(1), b.local_addr)
        await a.notify(IdMessage(2, b"bad"), b.local_addr)
        async with asyncio.timeout(5):
            while srv.stats.errors < 1 or srv.stats.in_flight:
                await asyncio.sleep(0.001)
        got = samples(registry)
    await running
    assert got["myapp_serve_handled_total", "dns"] == 2
    assert got["myapp_serve_replied_total", "dns"] == 1
    assert got["myapp_serve_errors_total", "dns"] == 1
    assert got["myapp_serve_in_flight", "dns"] == 0
    assert got["myapp_replies_resent_total", "dns"] == 0
    assert not any(name.startswith("aiodisp_") for name, _ in got)


async def test_names_are_checked_by_the_registry() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    async with a, b:
        registry = CollectorRegistry()
        register(a, "one", registry=registry)
        with pytest.raises(ValueError, match="Duplicated"):
            register(b, "two", registry=registry)  # one collector for many dispatchers instead
        c = DispatcherCollector(a, "x")
        with pytest.raises(ValueError, match="already"):
            c.add(b, "x")


def test_scrape_over_http_from_another_thread() -> None:
    adapter = IdPrefixAdapter()
    registry = CollectorRegistry()
    with aiodisp.sync.open_udp(adapter) as server, aiodisp.sync.open_udp(adapter) as client:
        collector = register(server, "server", registry=registry)
        collector.add(client, "client")
        httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        try:
            client.notify(IdMessage(1), server.local_addr)
            port = httpd.server_address[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                body = resp.read().decode()
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
    assert 'aiodisp_acks_sent_total{dispatcher="server"} 1.0' in body
    assert 'aiodisp_acks_received_total{dispatcher="client"} 1.0' in body


def test_missing_prometheus_client_gives_a_clear_error(tmp_path: Any) -> None:
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('simulated')\n")
    code = (
        "try:\n"
        "    import aiodisp.metrics\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "pip install 'aiodisp[prometheus]'" in out.stdout
