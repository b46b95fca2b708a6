"""Ready-made message adapters.

An adapter is any object with ``msg_to_raw(msg) -> bytes``,
``raw_to_msg(raw) -> msg``, ``msg_key(msg) -> hashable`` and, optionally,
``is_reply(msg) -> bool``; these classes are examples you can use as they are.

* :class:`IdPrefixAdapter`: binary :class:`IdMessage` (8-byte id, reply flag, payload).
* :class:`JsonAdapter`: dicts as JSON objects; key and reply flag are fields.
* :class:`MsgpackAdapter`: the same as MessagePack maps (``aiodisp[msgpack]``).

For a type checker, IdPrefixAdapter is a ``MessageAdapter[IdMessage]`` and the
dict codecs are ``MessageAdapter[dict[str, Any]]`` (structurally: no class here
inherits from the protocol, and yours need not either).
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Hashable
from operator import itemgetter
from typing import Any, NamedTuple

__all__ = ["IdMessage", "IdPrefixAdapter", "JsonAdapter", "MsgpackAdapter"]


class IdMessage(NamedTuple):
    """A message of :class:`IdPrefixAdapter`: a 64-bit id, a reply flag and a payload."""

    id: int
    payload: bytes = b""
    reply: bool = False


_WORD = struct.Struct(">Q")
_pack_word = _WORD.pack
_unpack_word = _WORD.unpack_from
_REPLY_BIT = 1 << 63
_ID_MASK = _REPLY_BIT - 1
_new_tuple = tuple.__new__
_StructError = struct.error


def _encode_error(msg: object) -> Exception:
    """What IdPrefixAdapter says when handed something it cannot encode: what it expected."""
    if isinstance(msg, IdMessage) and isinstance(msg[0], int) and not 0 <= msg[0] <= _ID_MASK:
        return ValueError(f"an IdMessage id must fit in 63 bits (0..2**63-1), not {msg[0]}")
    if isinstance(msg, IdMessage):
        fields = ", ".join(f"{name}={type(value).__name__}" for name, value in
                           zip(IdMessage._fields, msg, strict=True))
        return TypeError(f"IdPrefixAdapter encodes an IdMessage(id: int, payload: bytes, "
                         f"reply: bool), not one with {fields}")
    return TypeError(
        f"IdPrefixAdapter encodes an IdMessage(id, payload, reply), not a {type(msg).__name__}")


class IdPrefixAdapter:
    """Binary messages: an 8-byte big-endian word (bit 63: reply flag, bits 0-62: id)
    followed by the payload. The id is the key; the flag tells replies apart, so a
    peer's request is never mistaken for a reply to one of ours. A
    ``MessageAdapter[IdMessage]``: a dispatcher on it takes and returns IdMessages.
    """

    # The hot path reads module globals and tuple items: in CPython 3.11 a class
    # attribute read through ``self`` and a NamedTuple field read by name are not
    # specialised, a global and ``msg[0]`` are.
    def msg_to_raw(self, msg: IdMessage) -> bytes:
        try:
            ident = msg[0]
            if ident > _ID_MASK:  # it would read as the reply flag
                raise ValueError(f"an IdMessage id must fit in 63 bits, not {ident}")
            return _pack_word(ident | _REPLY_BIT if msg[2] else ident) + msg[1]
        except (TypeError, IndexError, KeyError, _StructError) as exc:
            raise _encode_error(msg) from exc

    def raw_to_msg(self, raw: bytes) -> IdMessage:
        (word,) = _unpack_word(raw)
        # tuple.__new__ skips NamedTuple's Python-level __new__
        return _new_tuple(IdMessage, (word & _ID_MASK, raw[8:], word > _ID_MASK))

    def make_reply(self, request: IdMessage, payload: bytes = b"") -> IdMessage:
        """The reply to ``request``: its id, the reply flag and ``payload``."""
        return _new_tuple(IdMessage, (request[0], payload, True))

    # msg_key(msg) -> msg.id and is_reply(msg) -> msg.reply, as C-level item
    # getters: the dispatcher calls them once or twice per datagram.
    msg_key: Callable[[IdMessage], int] = staticmethod(itemgetter(0))
    is_reply: Callable[[IdMessage], bool] = staticmethod(itemgetter(2))


# ---------------------------------------------------------------------- dict codecs


def _freeze(value: Any) -> Hashable:
    """``value`` made hashable: lists become tuples, dicts frozensets of pairs."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((_freeze(k), _freeze(v)) for k, v in value.items())
    hash(value)
    return value  # type: ignore[no-any-return]


def _reply_test(reply_field: str) -> Callable[[dict[str, Any]], bool]:
    """The ``is_reply`` of a dict codec whose reply flag is ``reply_field``.

    A closure over the field's name rather than a bound method: no attribute
    read per call, and no adapter -> method -> adapter reference cycle.
    """

    def is_reply(msg: dict[str, Any]) -> bool:
        """True when the reply field is present and truthy."""
        return bool(msg.get(reply_field))

    return is_reply


class _DictAdapter:
    """What the dict codecs share: the key and the reply flag are fields of the dict.

    A codec is a ``MessageAdapter[dict[str, Any]]``. It has an ``is_reply``
    attribute only when it has a reply field: ``_init_fields`` sets it on the
    instance then, so ``getattr(adapter, "is_reply", None)`` (how the dispatcher
    looks it up) is None for ``reply_field=None``, with one class either way.
    """

    key_field: str
    reply_field: str | None
    #: Set on the instance only when ``reply_field`` is not None (see the class docs).
    is_reply: Callable[[dict[str, Any]], bool]
    _options: dict[str, Any]

    def _init_fields(self, key_field: str, reply_field: str | None, **options: Any) -> None:
        if reply_field is not None and reply_field == key_field:
            raise ValueError("the key field and the reply field must differ")
        self.key_field = key_field
        self.reply_field = reply_field
        self._options = options
        if reply_field is not None:
            self.is_reply = _reply_test(reply_field)

    def _dumps(self, msg: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _loads(self, raw: bytes) -> Any:
        raise NotImplementedError

    def msg_to_raw(self, msg: dict[str, Any]) -> bytes:
        if not isinstance(msg, dict):
            raise TypeError(f"a message must be a dict, not {type(msg).__name__}")
        return self._dumps(msg)

    def raw_to_msg(self, raw: bytes) -> dict[str, Any]:
        msg = self._loads(raw)
        if not isinstance(msg, dict):
            raise ValueError(f"the datagram holds a {type(msg).__name__}, not an object/map")
        return msg

    def msg_key(self, msg: dict[str, Any]) -> Hashable:
        """The key field's value, made hashable (lists become tuples). KeyError if missing."""
        return _freeze(msg[self.key_field])

    def make_reply(self, request: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A reply to ``request``: its key, the reply flag (if any) set, and ``fields``."""
        reply: dict[str, Any] = {self.key_field: request[self.key_field], **fields}
        if self.reply_field is not None:
            reply[self.reply_field] = True
        return reply

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle rebuild through the constructor: the same fields (so
        # is_reply or not), fresh codecs
        return (_rebuild, (type(self), self.key_field, self.reply_field, self._options))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key_field={self.key_field!r}, "
            f"reply_field={self.reply_field!r})"
        )


def _rebuild(
    cls: type[_DictAdapter], key_field: str, reply_field: str | None, options: dict[str, Any]
) -> _DictAdapter:
    return cls(key_field, reply_field, **options)  # type: ignore[call-arg]


class JsonAdapter(_DictAdapter):
    """Messages are dicts encoded as compact UTF-8 JSON objects.

    A ``MessageAdapter[dict[str, Any]]``. ``key_field`` names the field that
    pairs a request with its reply (its value may be any JSON value; lists and
    objects are made hashable). ``reply_field`` names the field that marks
    replies (truthy: a reply). With ``reply_field=None`` the adapter has no
    ``is_reply`` attribute at all, so a message is a reply exactly when its key
    matches a pending request. ``ensure_ascii`` and ``sort_keys`` are passed to
    :func:`json.dumps`. Datagrams that are not a UTF-8 JSON object raise
    ``ValueError``.
    """

    def __init__(
        self,
        key_field: str = "id",
        reply_field: str | None = "reply",
        *,
        ensure_ascii: bool = False,
        sort_keys: bool = False,
    ) -> None:
        self._init_fields(key_field, reply_field, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
        self._encoder = json.JSONEncoder(
            ensure_ascii=ensure_ascii, sort_keys=sort_keys, separators=(",", ":")
        )
        self._decoder = json.JSONDecoder()

    def _dumps(self, msg: dict[str, Any]) -> bytes:
        return self._encoder.encode(msg).encode("utf-8")

    def _loads(self, raw: bytes) -> Any:
        return self._decoder.decode(bytes(raw).decode("utf-8"))


class MsgpackAdapter(_DictAdapter):
    """Messages are dicts encoded with MessagePack (the ``aiodisp[msgpack]`` extra).

    A ``MessageAdapter[dict[str, Any]]``; fields as :class:`JsonAdapter`.
    Strings travel as str, bytes as bin; a datagram that is not one complete
    MessagePack map raises.
    """

    def __init__(self, key_field: str = "id", reply_field: str | None = "reply") -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ImportError(
                "MsgpackAdapter needs the msgpack package: pip install 'aiodisp[msgpack]'"
            ) from exc
        self._init_fields(key_field, reply_field)
        self._packb: Callable[[Any], bytes] = functools.partial(msgpack.packb, use_bin_type=True)
        self._unpackb: Callable[[bytes], Any] = functools.partial(
            msgpack.unpackb, raw=False, strict_map_key=False
        )

    def _dumps(self, msg: dict[str, Any]) -> bytes:
        return self._packb(msg)

    def _loads(self, raw: bytes) -> Any:
        return self._unpackb(raw)
