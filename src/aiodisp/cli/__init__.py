"""The ``aiodisp`` console tools (``aiodisp`` / ``python -m aiodisp``).

One module per job: :mod:`.app` (the parser and :func:`main`), :mod:`.args`
(addresses, numbers, messages, shared options), :mod:`.formats` (message
formats), :mod:`.loop` (the event-loop runner), :mod:`.echo` (the echo
server), :mod:`.serve`, :mod:`.request` (``request`` and ``notify``),
:mod:`.bench` with :mod:`.bench_probe`, :mod:`.bench_measure` and
:mod:`.bench_report`, :mod:`.workers` (child processes) and :mod:`.demo`.
They use aiodisp's public API only, and for ``bench --loss`` the fault-injecting
transport (:mod:`aiodisp._transports.faults`).
"""

from .app import main

__all__ = ["main"]
