"""Before ``aiodisp bench`` measures a target: does an echo server that speaks our format answer?

One probe request goes through the bench's own client first. If no echo comes
back, the other framings and formats are tried, so the user hears "the server
speaks raw framing and idprefix messages" instead of watching every request
time out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiodisp
from aiodisp import Dispatcher, DispatchError, Framing, RequestTimeout

from .args import EXIT_FAILED, EXIT_USAGE, Where
from .formats import Format, IdPrefixFormat, JsonFormat
from .request import retry_policy

__all__ = ["PROBE_TIMEOUT", "TargetProblem", "check_target"]

#: How long the bench's own probe may take (ten sends, doubling waits); on a lossy path
#: (``--loss``) three times as long.
PROBE_TIMEOUT = 1.0
#: How long each probe in another framing or format may take.
_OTHER_TIMEOUT = 1.0
_FRAMINGS: tuple[Framing, ...] = ("ack", "raw")


class TargetProblem(Exception):
    """The target does not echo what the bench sends; ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def check_target(
    client: Dispatcher[Any], framing: Framing, fmt: Format[Any], target: Where, *,
    json_fields: tuple[str, str] = ("id", "reply"), lossy: bool = False,
) -> None:
    """Return if ``target`` echoes a probe sent by ``client``; raise TargetProblem if not.

    ``json_fields`` are the key and reply fields given for JSON messages (tried
    besides the defaults).
    """
    body = fmt.bench_body(0)
    timeout = PROBE_TIMEOUT * 3 if lossy else PROBE_TIMEOUT
    try:
        reply = await client.request(
            fmt.bench_message(0, body), target.addr, timeout=timeout,
            retry=retry_policy(timeout, 9),
        )
    except RequestTimeout:
        pass
    else:
        if fmt.is_echo(reply, 0, body):
            return
        raise TargetProblem(
            f"{target} answered the probe, but not with its echo: "
            "aiodisp bench measures an echo server (aiodisp serve)", EXIT_FAILED)
    tried = (framing, fmt.describe())
    others = [
        (other_framing, other)
        for other_framing in _FRAMINGS
        for other in _formats(*json_fields)
        if (other_framing, other.describe()) != tried
    ]
    answers = await asyncio.gather(*(_echoes(f, o, target) for f, o in others))
    for (other_framing, other), answered in zip(others, answers, strict=True):
        if answered:
            differ, options = [], []
            if other_framing != framing:
                differ.append("framing")
                options.append(f"--framing {other_framing}")
            if other.describe() != fmt.describe():
                differ.append("message format")
                options.append(other.describe())
            raise TargetProblem(
                f"{target} echoes {other_framing} framing and {other.name} messages, but this "
                f"bench sends {framing} framing and {fmt.name} messages: the "
                f"{' and '.join(differ)} differ{'s' if len(differ) == 1 else ''}; "
                f"run it with {' '.join(options)}", EXIT_USAGE)
    raise TargetProblem(
        f"no echo from {target} within {timeout:g} s (ack and raw framing, json and "
        "idprefix messages tried): is an aiodisp echo server (aiodisp serve) running "
        "there, with the same --key-field and --reply-field?", EXIT_FAILED)


def _formats(key_field: str, reply_field: str) -> list[Format[Any]]:
    """The formats a server may speak: JSON with the given fields and the defaults, idprefix."""
    formats: list[Format[Any]] = [JsonFormat(), IdPrefixFormat()]
    if (key_field, reply_field) != ("id", "reply"):
        formats.insert(0, JsonFormat(key_field, reply_field))
    return formats


async def _echoes(framing: Framing, fmt: Format[Any], target: Where) -> bool:
    """Whether ``target`` echoes one probe in ``framing`` and ``fmt``."""
    body = fmt.bench_body(0)
    try:
        async with await aiodisp.open_udp(
            fmt.adapter, target.client_bind(), framing=framing
        ) as d:
            reply = await d.request(
                fmt.bench_message(0, body), target.addr, timeout=_OTHER_TIMEOUT,
                retry=retry_policy(_OTHER_TIMEOUT, 3),
            )
    except DispatchError:  # RequestTimeout included
        return False
    return fmt.is_echo(reply, 0, body)
