"""aiodisp against implementations nobody here wrote: libcoap, aiocoap, net-snmp, dnsmasq."""
