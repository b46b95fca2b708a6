"""The blocking facade, aiodisp.sync: same calls, same errors, many threads at once."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import aiodisp
import aiodisp.sync
from aiodisp.adapters import IdMessage, IdPrefixAdapter, JsonAdapter

FAST = aiodisp.RetryPolicy(initial_timeout=0.05, max_attempts=40, max_interval=0.2)


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("aiodisp-sync",)]


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(loop_threads())
    yield
    deadline = time.monotonic() + 5
    while set(loop_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(loop_threads()) - before == set()


def echo(msg: IdMessage, addr: Any) -> IdMessage:
    return msg._replace(reply=True)


def start_serving(s: aiodisp.sync.SyncDispatcher[Any], **kw: Any) -> threading.Thread:
    t = threading.Thread(target=s.serve, args=(kw.pop("handler", echo),), kwargs=kw)
    t.start()
    return t


def test_request_reply_between_two_blocking_dispatchers() -> None:
    adapter = IdPrefixAdapter()
    with aiodisp.sync.open_udp(adapter) as server, aiodisp.sync.open_udp(adapter) as client:

        answered: list[int] = []
        both = threading.Event()

        def loop() -> None:
            for msg, size, addr in server:  # ends when the server closes
                assert size == 8 + len(msg.payload)
                server.notify_unreliable(msg._replace(reply=True), addr)
                answered.append(msg.id)
                if len(answered) == 2:
                    both.set()

        t = threading.Thread(target=loop)
        t.start()
        reply = client.request(IdMessage(7, b"ping"), server.local_addr, timeout=5, retry=FAST)
        assert reply == IdMessage(7, b"ping", True)
        client.notify(IdMessage(8, b"note"), server.local_addr, timeout=5)
        assert client.stats.acks_received == 1
        assert client.stats.replies_matched == 1
        assert both.wait(5)
        server.close()
        t.join(5)
        assert not t.is_alive()
    assert server.closed and client.closed


def test_sixteen_threads_two_hundred_requests_each() -> None:
    adapter = IdPrefixAdapter()
    with aiodisp.sync.open_udp(adapter) as server, aiodisp.sync.open_udp(adapter) as client:
        serving = start_serving(server, concurrency=8)

        def worker(n: int) -> list[int]:
            out = []
            for i in range(200):
                key = n * 1000 + i
                reply = client.request(
                    IdMessage(key, b"%d" % key), server.local_addr, timeout=10, retry=FAST
                )
                assert reply.reply and reply.payload == b"%d" % key
                out.append(reply.id)
            return out

        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(worker, range(16)))
        elapsed = time.perf_counter() - started
        print(f"16 threads x 200 requests: {3200 / elapsed:.0f} requests/s")
        assert [sorted(r) for r in results] == [
            [n * 1000 + i for i in range(200)] for n in range(16)
        ]
        assert client.stats.replies_matched == 3200
        server.close()
        serving.join(10)
        assert not serving.is_alive()


def test_blocking_client_against_an_async_server() -> None:
    adapter = JsonAdapter()
    ready = threading.Event()
    stop = threading.Event()
    addr: list[Any] = []

    async def serve() -> None:
        server = await aiodisp.open_udp(adapter)
        addr.append(server.local_addr)

        async def handler(msg: dict[str, Any], peer: Any) -> dict[str, Any]:
            return adapter.make_reply(msg, sum=sum(msg["args"]))

        task = asyncio.create_task(server.serve(handler))
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.01)
        await server.close()
        await task

    t = threading.Thread(target=asyncio.run, args=(serve(),))
    t.start()
    ready.wait(10)
    try:
        with aiodisp.sync.open_udp(adapter) as client:
            with ThreadPoolExecutor(8) as pool:
                sums = list(
                    pool.map(
                        lambda i: client.request(
                            {"id": i, "args": [i, 1]}, addr[0], timeout=10, retry=FAST
                        )["sum"],
                        range(100),
                    )
                )
            assert sums == [i + 1 for i in range(100)]
    finally:
        stop.set()
        t.join(10)


def test_errors_are_the_async_errors() -> None:
    adapter = IdPrefixAdapter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        nobody = silent.getsockname()
        with aiodisp.sync.open_udp(adapter) as s:
            with pytest.raises(aiodisp.RequestTimeout) as info:
                s.request(IdMessage(1), nobody, timeout=0.1, retry=FAST)
            assert isinstance(info.value, TimeoutError)
            assert info.value.key == 1 and info.value.attempts >= 2
            with pytest.raises(TimeoutError):
                s.recv_from(timeout=0.05)
            with pytest.raises(aiodisp.MessageTooLarge):
                s.notify_unreliable(IdMessage(2, b"x" * 70000), nobody)
            with pytest.raises(aiodisp.AdapterError):
                s.notify_unreliable("not a message", nobody)  # type: ignore[arg-type, unused-ignore]

            def hold() -> None:
                with pytest.raises(aiodisp.RequestTimeout):
                    s.request(IdMessage(3), nobody, timeout=1.0)

            t = threading.Thread(target=hold)
            t.start()
            deadline = time.monotonic() + 5
            while s.dispatcher.pending == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            with pytest.raises(aiodisp.DuplicateKeyError):
                s.request(IdMessage(3), nobody, timeout=1.0)
            t.join()
            raw = aiodisp.sync.open_udp(adapter, framing="raw")
            assert (s.framing, raw.framing) == ("ack", "raw")
            with raw, pytest.raises(aiodisp.ReliabilityUnavailable):
                raw.notify(IdMessage(4), nobody)
        with pytest.raises(aiodisp.DispatcherClosed):
            s.request(IdMessage(5), nobody)
        with pytest.raises(aiodisp.DispatcherClosed):
            s.recv_from()
        assert list(s) == []


def test_close_from_many_threads_wakes_every_blocked_call() -> None:
    adapter = IdPrefixAdapter()
    s = aiodisp.sync.open_udp(adapter, timeout=30)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        outcomes: list[str] = []
        lock = threading.Lock()

        def blocked(i: int) -> None:
            try:
                if i % 2:
                    s.recv_from()
                else:
                    s.request(IdMessage(i), silent.getsockname(), retry=FAST)
            except aiodisp.DispatcherClosed:
                with lock:
                    outcomes.append("closed")

        waiters = [threading.Thread(target=blocked, args=(i,)) for i in range(8)]
        for t in waiters:
            t.start()
        deadline = time.monotonic() + 5
        while s.dispatcher.pending < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # let the readers reach recv_from (they fail as closed either way)
        closers = [threading.Thread(target=s.close) for _ in range(8)]
        for t in closers:
            t.start()
        for t in closers + waiters:
            t.join(10)
            assert not t.is_alive()
    assert outcomes == ["closed"] * 8
    s.close()  # idempotent
    assert s.stats.cancelled + s.stats.requests >= 4  # stats still readable


def test_open_unix_and_memory_pair(tmp_path: Path) -> None:
    adapter = IdPrefixAdapter()
    path = tmp_path / "server.sock"
    with aiodisp.sync.open_unix(adapter, path) as server, aiodisp.sync.open_unix(
        adapter, tmp_path / "client.sock"
    ) as client:
        assert server.local_addr == str(path)
        serving = start_serving(server)
        assert client.request(IdMessage(1, b"u"), server.local_addr) == IdMessage(1, b"u", True)
        server.close()
        serving.join(5)
    assert not path.exists()

    a, b = aiodisp.sync.open_memory_pair(
        adapter, link=aiodisp.Link(loss=0.2, duplicate=0.2, seed=3)
    )
    with a, b:
        assert a.loop is b.loop
        serving = start_serving(b)
        for i in range(30):
            assert a.request(IdMessage(i), b.local_addr, retry=FAST).id == i
        a.notify(IdMessage(99), b.local_addr)
        b.close()
        serving.join(5)
        assert not a.closed  # the loop thread lives until both are closed
        with pytest.raises(aiodisp.RequestTimeout):
            a.request(IdMessage(100), b.local_addr, timeout=0.05)


def test_sync_serve_counts_handler_errors_and_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = IdPrefixAdapter()

    def picky(msg: IdMessage, addr: Any) -> IdMessage:
        if msg.payload == b"bad":
            raise ValueError("bad payload")
        assert threading.current_thread().name.startswith("aiodisp-handler")
        return msg._replace(reply=True)

    with aiodisp.sync.open_udp(adapter) as server, aiodisp.sync.open_udp(adapter) as client:
        serving = start_serving(server, handler=picky, concurrency=4)
        with pytest.raises(aiodisp.RequestTimeout):
            client.request(IdMessage(1, b"bad"), server.local_addr, timeout=0.2)
        assert client.request(IdMessage(2, b"ok"), server.local_addr, retry=FAST).reply
        server.close()
        serving.join(5)
        assert not serving.is_alive()
    assert any("bad payload" in r.getMessage() for r in caplog.records)


def test_uvloop() -> None:
    pytest.importorskip("uvloop")
    adapter = IdPrefixAdapter()
    with aiodisp.sync.open_udp(adapter, uvloop=True) as server, aiodisp.sync.open_udp(
        adapter, uvloop=True
    ) as client:
        assert "uvloop" in type(server.loop).__module__
        serving = start_serving(server)
        assert client.request(IdMessage(5), server.local_addr, retry=FAST).id == 5
        server.close()
        serving.join(5)


def test_a_failed_open_leaves_no_thread() -> None:
    with aiodisp.sync.open_udp(IdPrefixAdapter()) as s, pytest.raises(aiodisp.TransportError):
        aiodisp.sync.open_udp(IdPrefixAdapter(), local_addr=s.local_addr)
    with pytest.raises(TypeError):
        aiodisp.sync.open_udp(object())  # type: ignore[arg-type]  # not an adapter, on purpose


def test_calling_from_the_loop_thread_is_refused() -> None:
    with aiodisp.sync.open_udp(IdPrefixAdapter()) as s:

        async def inside() -> None:
            s.recv_from(timeout=0.01)

        fut = asyncio.run_coroutine_threadsafe(inside(), s.loop)
        with pytest.raises(RuntimeError, match="async API"):
            fut.result(5)

        async def close_inside() -> None:
            s.close()

        fut = asyncio.run_coroutine_threadsafe(close_inside(), s.loop)
        with pytest.raises(RuntimeError, match="another thread"):
            fut.result(5)
        assert not s.closed


def test_calling_the_facade_from_a_coroutine_names_the_mistake() -> None:
    """Blocking a running loop on a call would stall it (and read as a timeout)."""
    with aiodisp.sync.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0)) as s:
        peer = s.local_addr

        async def misuse() -> None:
            with pytest.raises(RuntimeError, match=r"SyncDispatcher\.request\(\) was called from "
                               r"a coroutine running on an event loop.*async API"):
                s.request(IdMessage(1, b"x"), peer, timeout=0.5)
            with pytest.raises(RuntimeError, match=r"recv_from\(\)"):
                s.recv_from(timeout=0.5)

        asyncio.run(misuse())
        assert s.stats.requests == 0  # nothing was sent


def test_request_takes_accept_and_keeps_waiting_for_an_accepted_reply() -> None:
    adapter = IdPrefixAdapter()
    with aiodisp.sync.open_udp(adapter) as server, aiodisp.sync.open_udp(adapter) as client:

        def answer_twice() -> None:
            msg, _size, addr = server.recv_from(timeout=5)
            server.notify_unreliable(msg._replace(payload=b"wrong", reply=True), addr)
            server.notify_unreliable(msg._replace(payload=b"right", reply=True), addr)

        t = threading.Thread(target=answer_twice)
        t.start()
        reply = client.request(IdMessage(3, b"q"), server.local_addr, timeout=5,
                               accept=lambda r: r.payload == b"right")
        t.join()
        assert reply.payload == b"right" and client.stats.unaccepted == 1
        server.close()
