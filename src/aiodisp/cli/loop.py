"""The one event-loop runner of the command line (asyncio's, or uvloop's with ``--uvloop``).

Ctrl-C while a command runs cancels its coroutine (its ``finally`` blocks close
sockets and stop child processes) and then raises :class:`KeyboardInterrupt`,
which :func:`aiodisp.cli.main` turns into exit status 130.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .args import UsageError

__all__ = ["check_uvloop", "run"]

T = TypeVar("T")


def check_uvloop(wanted: bool) -> None:
    """Raise UsageError when ``--uvloop`` is asked for and uvloop is not installed."""
    if not wanted:
        return
    try:
        import uvloop  # noqa: F401
    except ImportError:
        raise UsageError("--uvloop needs uvloop (pip install 'aiodisp[speed]')") from None


def run(main: Callable[[], Coroutine[Any, Any, T]], *, use_uvloop: bool = False) -> T:
    """Run the coroutine ``main()`` makes on a new loop and return its result.

    ``main`` is called inside the runner, so an interrupt before the loop starts
    leaves no coroutine that was never awaited.
    """
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
