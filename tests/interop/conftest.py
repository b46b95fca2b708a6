"""The real peers as fixtures: a libcoap server and an snmpd per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.peers import Daemon, binary, load_example, run_daemon, udp_answers

coap = load_example("coap")


@pytest.fixture(scope="module")
def libcoap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """libcoap's example server (``coap-server-notls``), logging at debug level."""
    exe = binary("coap-server-notls", "libcoap3-bin")
    ping = coap.encode(coap.CoapMessage(coap.CON, coap.GET, 1, b"\x01"))
    with run_daemon(
        lambda port: [exe, "-A", "127.0.0.1", "-p", str(port), "-v", "7"],
        lambda addr: udp_answers(addr, ping) is not None,
        tmp_path_factory.mktemp("libcoap"),
    ) as daemon:
        yield daemon


SNMPD_CONF = """\
rocommunity public 127.0.0.1
rocommunity secret 127.0.0.1
sysLocation aiodisp interop lab
sysContact nobody@example.invalid
sysName aiodisp-snmpd
"""


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """net-snmp's agent, in the foreground, configured only by the file written here."""
    exe = binary("snmpd", "snmpd")
    snmp = load_example("snmp_get")
    workdir = tmp_path_factory.mktemp("snmpd")
    conf = workdir / "snmpd.conf"
    conf.write_text(SNMPD_CONF)
    probe = snmp.encode(snmp.SnmpMessage(snmp.GET_REQUEST, 1, (snmp.VarBind("1.3.6.1.2.1.1.5.0"),)))
    with run_daemon(
        # -f: foreground; -C -c: this config only; -Lo: log to stdout; no MIB files needed
        lambda port: [exe, "-f", "-Lo", "-C", "-c", str(conf), "-p", str(workdir / "pid"),
                      f"udp:127.0.0.1:{port}"],
        lambda addr: udp_answers(addr, probe) is not None,
        workdir,
        env={"SNMP_PERSISTENT_DIR": str(workdir), "MIBS": ""},
    ) as daemon:
        yield daemon
