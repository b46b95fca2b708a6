"""Transports: the carriers a Dispatcher drives (UDP, Unix datagram, in-memory)."""

__all__: list[str] = []
