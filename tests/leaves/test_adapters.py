"""The ready-made adapters: IdPrefixAdapter and the dict codecs JsonAdapter and MsgpackAdapter."""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import socket
import subprocess
import sys
import weakref
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter, JsonAdapter, MsgpackAdapter

CODECS = [JsonAdapter, MsgpackAdapter]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_and_key(codec: Any) -> None:
    a = codec()
    msg = {"id": [1, "two", {"x": 3}], "body": "héllo", "n": 1.5}
    back = a.raw_to_msg(a.msg_to_raw(msg))
    assert back == msg
    key = a.msg_key(back)
    hash(key)
    assert key == a.msg_key(msg)
    assert key == (1, "two", frozenset({("x", 3)}))


@given(key=json_values, body=json_values)
def test_json_keys_are_always_hashable_and_stable(key: Any, body: Any) -> None:
    for a in (JsonAdapter(), MsgpackAdapter()):
        msg = {"id": key, "body": body}
        back = a.raw_to_msg(a.msg_to_raw(msg))
        assert a.msg_key(back) == a.msg_key(msg)
        hash(a.msg_key(back))


@pytest.mark.parametrize("codec", CODECS)
def test_reply_field_gives_is_reply(codec: Any) -> None:
    a = codec(key_field="seq", reply_field="resp")
    assert type(a) is codec  # one class either way, no variant swapped in
    assert a.is_reply({"seq": 1, "resp": True})
    assert not a.is_reply({"seq": 1, "resp": False})
    assert not a.is_reply({"seq": 1})
    assert a.make_reply({"seq": 9, "q": 1}, answer=2) == {"seq": 9, "answer": 2, "resp": True}


@pytest.mark.parametrize("codec", CODECS)
def test_without_reply_field_there_is_no_is_reply_attribute(codec: Any) -> None:
    a = codec(reply_field=None)
    assert type(a) is codec
    assert not hasattr(a, "is_reply")
    assert getattr(a, "is_reply", None) is None
    assert a.make_reply({"id": 3}) == {"id": 3}


@pytest.mark.parametrize("codec", CODECS)
def test_copy_and_pickle_keep_the_variant(codec: Any) -> None:
    for a in (codec(reply_field=None), codec(key_field="k", reply_field="r")):
        for b in (copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
            assert type(b) is type(a)
            assert hasattr(b, "is_reply") == hasattr(a, "is_reply")
            assert (b.key_field, b.reply_field) == (a.key_field, a.reply_field)
            assert repr(b) == repr(a)
            assert b.msg_to_raw({"k": 1, "id": 2}) == a.msg_to_raw({"k": 1, "id": 2})


@pytest.mark.parametrize("codec", CODECS)
def test_an_adapter_is_freed_without_the_cyclic_gc(codec: Any) -> None:
    # is_reply lives on the instance but holds no reference back to it
    a = codec(reply_field="r")
    ref = weakref.ref(a)
    gc.disable()
    try:
        del a
        assert ref() is None
    finally:
        gc.enable()


def test_key_and_reply_fields_must_differ() -> None:
    with pytest.raises(ValueError):
        JsonAdapter(key_field="id", reply_field="id")


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"\xff\xfe", b"[1, 2]", b'"text"', b"42", b'{"id": 1} trailing'],
)
def test_json_rejects_bad_bytes(raw: bytes) -> None:
    with pytest.raises(ValueError):
        JsonAdapter().raw_to_msg(raw)


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x92\x01\x02", b"\x81\xa1", b"\x80\x80"])
def test_msgpack_rejects_bad_bytes(raw: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - msgpack raises several types
        MsgpackAdapter().raw_to_msg(raw)


@pytest.mark.parametrize("codec", CODECS)
def test_encoding_a_non_dict_or_keyless_message_raises(codec: Any) -> None:
    a = codec()
    with pytest.raises(TypeError):
        a.msg_to_raw(["not", "a", "dict"])
    with pytest.raises(KeyError):
        a.msg_key({"no": "key"})


def test_json_options() -> None:
    assert JsonAdapter(sort_keys=True).msg_to_raw({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert JsonAdapter(ensure_ascii=True).msg_to_raw({"a": "é"}) == b'{"a":"\\u00e9"}'


def test_missing_msgpack_gives_a_clear_error(tmp_path: Any) -> None:
    # a fresh interpreter where "import msgpack" fails
    blocker = tmp_path / "msgpack.py"
    blocker.write_text("raise ImportError('simulated: msgpack not installed')\n")
    code = (
        "from aiodisp.adapters import MsgpackAdapter, JsonAdapter\n"
        "JsonAdapter()\n"
        "try:\n"
        "    MsgpackAdapter()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "pip install 'aiodisp[msgpack]'" in out.stdout


@pytest.mark.parametrize("codec", CODECS)
async def test_dispatch_over_udp_with_garbage_counted(codec: Any) -> None:
    adapter: JsonAdapter | MsgpackAdapter = codec()
    server = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))

    async def handler(msg: dict[str, Any], addr: Any) -> dict[str, Any]:
        return adapter.make_reply(msg, echo=msg["body"])

    serving = asyncio.create_task(server.serve(handler))
    async with client:
        replies = await asyncio.gather(
            *(
                client.request({"id": [i, "k"], "body": i}, server.local_addr, timeout=5.0,
                               retry=aiodisp.RetryPolicy(initial_timeout=0.05))
                for i in range(50)
            )
        )
        assert [r["echo"] for r in replies] == list(range(50))
        assert all(r["reply"] is True for r in replies)
        # a peer's request is never mistaken for a reply: the reply field tells them apart
        await client.notify({"id": [0, "k"], "body": "note"}, server.local_addr)
        # bytes that are not a message are dropped and counted by the receiver
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00" * 8 + b"not a message \xc1", server.local_addr)
        async with asyncio.timeout(5):
            while server.stats.decode_errors < 1:
                await asyncio.sleep(0.005)
    await server.close()
    await serving


async def test_json_without_reply_field_matches_by_key_alone() -> None:
    adapter = JsonAdapter(reply_field=None)
    a, b = await aiodisp.open_memory_pair(adapter)
    async with a, b:
        waiting = asyncio.create_task(a.request({"id": "q1", "ask": 1}, b.local_addr))
        got = await b.recv_from(timeout=5)
        assert got.msg == {"id": "q1", "ask": 1}
        await b.notify_unreliable({"id": "q1", "answer": 2}, got.addr)
        assert await waiting == {"id": "q1", "answer": 2}
        # a message whose key matches nothing pending is an ordinary message
        await b.notify({"id": "other"}, a.local_addr)
        assert (await a.recv_from(timeout=5)).msg == {"id": "other"}


@given(st.integers(0, (1 << 63) - 1), st.binary(max_size=64), st.booleans())
def test_id_prefix_round_trip_key_and_reply_flag(ident: int, payload: bytes, reply: bool) -> None:
    adapter = IdPrefixAdapter()
    msg = IdMessage(ident, payload, reply)
    raw = adapter.msg_to_raw(msg)
    assert raw == (ident | (1 << 63 if reply else 0)).to_bytes(8, "big") + payload
    back = adapter.raw_to_msg(raw)
    assert back == msg and type(back) is IdMessage and back.id == ident
    assert adapter.msg_key(back) == ident and adapter.is_reply(back) is reply
    answer = adapter.make_reply(back, payload[::-1])
    assert answer == IdMessage(ident, payload[::-1], True) and type(answer) is IdMessage
    assert adapter.raw_to_msg(adapter.msg_to_raw(answer)) == answer


def test_id_prefix_rejects_what_it_cannot_code() -> None:
    adapter = IdPrefixAdapter()
    with pytest.raises(ValueError, match="63 bits"):
        adapter.msg_to_raw(IdMessage(1 << 63))  # it would read as a reply
    with pytest.raises(Exception):  # noqa: B017 - struct's own error; the dispatcher wraps it
        adapter.msg_to_raw(IdMessage(-1))
    with pytest.raises(Exception):  # noqa: B017
        adapter.raw_to_msg(b"short")


@pytest.mark.parametrize(
    ("msg", "error", "says"),
    [
        ("hello", TypeError, "encodes an IdMessage(id, payload, reply), not a str"),
        (IdMessage("7", b""), TypeError,  # type: ignore[arg-type]  # wrong on purpose
         "not one with id=str, payload=bytes, reply=bool"),
        (IdMessage(7, "text"), TypeError,  # type: ignore[arg-type]  # wrong on purpose
         "not one with id=int, payload=str"),
        (IdMessage(-1, b""), ValueError, "must fit in 63 bits (0..2**63-1), not -1"),
    ],
)
def test_id_prefix_adapter_given_the_wrong_types_says_what_it_expected(
    msg: Any, error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as caught:
        IdPrefixAdapter().msg_to_raw(msg)
    assert says in str(caught.value)
