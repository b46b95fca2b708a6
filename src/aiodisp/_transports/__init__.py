"""Transports: the carriers a Dispatcher drives (UDP, Unix datagram, in-memory)."""
