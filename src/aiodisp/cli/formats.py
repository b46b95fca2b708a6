"""The message formats of the command line: how JSON on the command line becomes messages.

Every command reads ``--format`` (``json`` by default, as :func:`make_format`
builds it), so ``aiodisp serve``, ``request``, ``notify`` and ``bench`` speak
the same messages unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Generic, TypeVar

from aiodisp import MessageAdapter
from aiodisp.adapters import IdMessage, IdPrefixAdapter, JsonAdapter

from .args import UsageError

__all__ = ["Format", "IdPrefixFormat", "JsonFormat", "make_format"]

M = TypeVar("M")
_make_reply = IdPrefixAdapter().make_reply


class Format(Generic[M]):
    """A message format: its adapter, JSON in and out, the echo reply, bench messages."""

    name = ""
    adapter: MessageAdapter[M]

    def from_json(self, obj: Any) -> M:
        """The message a command-line JSON value stands for (UsageError if it cannot be one)."""
        raise NotImplementedError

    def to_json(self, msg: M) -> Any:
        """``msg`` as a JSON value, to print."""
        raise NotImplementedError

    def echo(self, msg: M, addr: Any) -> M:
        """The echo server's reply to ``msg``: the same message, marked as a reply."""
        raise NotImplementedError

    def bench_body(self, size: int) -> Any:
        """The payload of every bench request: ``size`` bytes of it."""
        raise NotImplementedError

    def bench_message(self, ident: int, body: Any) -> M:
        """Bench request number ``ident``."""
        raise NotImplementedError

    def is_echo(self, reply: M, ident: int, body: Any) -> bool:
        """Whether ``reply`` is the correct echo of bench request ``ident``."""
        raise NotImplementedError

    def describe(self) -> str:
        """The format as the options that select it."""
        return f"--format {self.name}"


class JsonFormat(Format[dict[str, Any]]):
    """JSON objects via :class:`aiodisp.adapters.JsonAdapter`; the key is one field."""

    name = "json"

    def __init__(self, key_field: str = "id", reply_field: str = "reply") -> None:
        self.adapter = JsonAdapter(key_field=key_field, reply_field=reply_field)
        self.key_field = key_field
        self.reply_field = reply_field

    def from_json(self, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise UsageError(f"the message must be a JSON object, not {json.dumps(obj)}")
        if self.key_field not in obj:
            raise UsageError(f"the message has no {self.key_field!r} field (the key)")
        if obj.get(self.reply_field):
            raise UsageError(
                f"the message has {self.reply_field!r} set, so the peer would take it for a reply"
            )
        return obj

    def to_json(self, msg: dict[str, Any]) -> Any:
        return msg

    def echo(self, msg: dict[str, Any], addr: Any) -> dict[str, Any]:
        return {**msg, self.reply_field: True}

    def bench_body(self, size: int) -> str:
        return "x" * size

    def bench_message(self, ident: int, body: Any) -> dict[str, Any]:
        return {self.key_field: ident, "payload": body}

    def is_echo(self, reply: dict[str, Any], ident: int, body: Any) -> bool:
        return (
            reply.get(self.key_field) == ident
            and reply.get("payload") == body
            and reply.get(self.reply_field) is True
        )

    def describe(self) -> str:
        fields = ""
        if self.key_field != "id":
            fields += f" --key-field {self.key_field}"
        if self.reply_field != "reply":
            fields += f" --reply-field {self.reply_field}"
        return f"--format json{fields}"


class IdPrefixFormat(Format[IdMessage]):
    """:class:`~aiodisp.adapters.IdMessage` written as ``{"id": 1, "payload": "text"}``."""

    name = "idprefix"

    def __init__(self) -> None:
        self.adapter = IdPrefixAdapter()

    def from_json(self, obj: Any) -> IdMessage:
        if not isinstance(obj, dict) or set(obj) - {"id", "payload"}:
            raise UsageError('an idprefix message is {"id": INTEGER, "payload": "TEXT"}')
        ident, payload = obj.get("id"), obj.get("payload", "")
        if not isinstance(ident, int) or isinstance(ident, bool) or not 0 <= ident < 1 << 63:
            raise UsageError('"id" must be an integer from 0 to 2**63 - 1')
        if not isinstance(payload, str):
            raise UsageError('"payload" must be a string')
        return IdMessage(ident, payload.encode())

    def to_json(self, msg: IdMessage) -> Any:
        payload = msg.payload.decode("utf-8", "backslashreplace")
        return {"id": msg.id, "payload": payload, "reply": msg.reply}

    def echo(self, msg: IdMessage, addr: Any) -> IdMessage:
        # The benchmarks' echo server runs this: a module global and a tuple item
        # are the cheapest reads (see IdPrefixAdapter).
        return _make_reply(msg, msg[1])

    def bench_body(self, size: int) -> bytes:
        return b"x" * size

    def bench_message(self, ident: int, body: Any) -> IdMessage:
        return IdMessage(ident, body)

    def is_echo(self, reply: IdMessage, ident: int, body: Any) -> bool:
        return reply.id == ident and reply.payload == body and reply.reply


def make_format(args: argparse.Namespace) -> Format[Any]:
    """The format ``--format`` (``--key-field``, ``--reply-field``) selects."""
    if args.format == "idprefix":
        return IdPrefixFormat()
    return JsonFormat(args.key_field, args.reply_field)
