"""examples/snmp_get.py against net-snmp's agent (snmpd), and its accept= check."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

import aiodisp
from tests.interop.peers import ROOT, Daemon, load_example

snmp = load_example("snmp_get")

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
FAST = aiodisp.RetryPolicy(initial_timeout=0.2, backoff=2.0, max_attempts=4)


async def test_get_reads_the_values_snmpd_was_configured_with(snmpd: Daemon) -> None:
    async with await snmp.SnmpClient.open(("127.0.0.1", 0), retry=FAST) as client:
        values = await client.get(snmpd.addr, [SYS_NAME, SYS_LOCATION, SYS_UPTIME])
    assert [vb.oid for vb in values] == [SYS_NAME, SYS_LOCATION, SYS_UPTIME]
    assert values[0].value == b"aiodisp-snmpd" and values[0].tag == snmp.OCTET_STRING
    assert values[1].value == b"aiodisp interop lab"
    assert values[2].tag == snmp.TIMETICKS and isinstance(values[2].value, int)


async def test_an_absent_object_is_a_no_such_value_not_an_error(snmpd: Daemon) -> None:
    async with await snmp.SnmpClient.open(("127.0.0.1", 0), retry=FAST) as client:
        (value,) = await client.get(snmpd.addr, ["1.3.6.1.2.1.1.99.0"])
    assert value.exception in ("noSuchObject", "noSuchInstance") and value.value is None


async def test_getbulk_walks_the_system_group_in_order(snmpd: Daemon) -> None:
    async with await snmp.SnmpClient.open(("127.0.0.1", 0), retry=FAST) as client:
        values = await client.get_bulk(snmpd.addr, ["1.3.6.1.2.1.1"], max_repetitions=6)
    oids = [vb.oid for vb in values]
    assert oids[:5] == [SYS_DESCR, "1.3.6.1.2.1.1.2.0", SYS_UPTIME, SYS_CONTACT, SYS_NAME]
    assert len(values) == 6
    assert values[3].value == b"nobody@example.invalid"


async def test_many_requests_in_flight_on_one_socket(snmpd: Daemon) -> None:
    async with await snmp.SnmpClient.open(("127.0.0.1", 0), retry=FAST) as client:
        results = await asyncio.gather(*(client.get(snmpd.addr, [SYS_NAME]) for _ in range(200)))
        stats = client.stats
    assert all(r[0].value == b"aiodisp-snmpd" for r in results)
    assert stats.replies_matched == 200 and client.dispatcher.pending == 0


async def test_the_poller_asks_every_agent_at_once(snmpd: Daemon) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        nobody = silent.getsockname()
        quick = aiodisp.RetryPolicy(initial_timeout=0.05, max_attempts=2)
        async with await snmp.SnmpClient.open(("127.0.0.1", 0), retry=quick,
                                              timeout=1.0) as client:
            results = await client.poll([snmpd.addr, nobody], [SYS_NAME])
    assert results[snmpd.addr][0].value == b"aiodisp-snmpd"
    assert isinstance(results[nobody], aiodisp.RequestTimeout)


async def test_another_community_is_answered_in_its_own(snmpd: Daemon) -> None:
    async with await snmp.SnmpClient.open(("127.0.0.1", 0), community=b"secret",
                                          retry=FAST) as client:
        (value,) = await client.get(snmpd.addr, [SYS_NAME])
    assert value.value == b"aiodisp-snmpd"


async def test_a_community_snmpd_does_not_know_gets_no_answer(snmpd: Daemon) -> None:
    quick = aiodisp.RetryPolicy(initial_timeout=0.1, max_attempts=2)
    async with await snmp.SnmpClient.open(("127.0.0.1", 0), community=b"wrong",
                                          retry=quick, timeout=2.0) as client:
        with pytest.raises(aiodisp.RequestTimeout):
            await client.get(snmpd.addr, [SYS_NAME])


async def test_a_response_for_another_community_is_not_accepted(snmpd: Daemon) -> None:
    """accept=: the right request-id from the right agent, but not this exchange's community."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as agent:
        agent.bind(("127.0.0.1", 0))
        agent.setblocking(False)
        async with await snmp.SnmpClient.open(("127.0.0.1", 0), retry=None,
                                              timeout=5.0) as client:
            call = asyncio.create_task(client.get(agent.getsockname(), [SYS_NAME]))
            raw, manager = await loop.sock_recvfrom(agent, 65535)
            request = snmp.decode(raw)

            def answer(community: bytes, value: bytes) -> bytes:
                vb = snmp.VarBind(SYS_NAME, snmp.OCTET_STRING, value)
                return bytes(snmp.encode(snmp.SnmpMessage(snmp.RESPONSE, request.request_id,
                                                          (vb,), community)))

            agent.sendto(answer(b"private", b"forged"), manager)
            while client.stats.unaccepted < 1:
                await asyncio.sleep(0.005)
            assert not call.done()  # refused: still waiting
            agent.sendto(answer(b"public", b"genuine"), manager)
            (value,) = await call
            stats = client.stats
    assert value.value == b"genuine"
    assert stats.unaccepted == 1 and stats.replies_matched == 1


def test_the_script_prints_values_and_walks(snmpd: Daemon) -> None:
    target = f"{snmpd.addr[0]}:{snmpd.addr[1]}"
    script = str(ROOT / "examples" / "snmp_get.py")
    out = subprocess.run([sys.executable, script, target, SYS_NAME, SYS_LOCATION],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{target} {SYS_NAME} = 'aiodisp-snmpd'",
        f"{target} {SYS_LOCATION} = 'aiodisp interop lab'",
    ]
    bulk = subprocess.run([sys.executable, script, "--bulk", "3", target, "1.3.6.1.2.1.1"],
                          capture_output=True, text=True, timeout=60)
    assert bulk.returncode == 0, bulk.stderr
    assert len(bulk.stdout.splitlines()) == 3 and SYS_DESCR in bulk.stdout
