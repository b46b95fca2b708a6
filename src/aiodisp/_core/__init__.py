"""The sans-I/O protocol core: no sockets, no event loop, time passed in as ``now``."""

__all__: list[str] = []
