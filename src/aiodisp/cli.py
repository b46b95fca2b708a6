"""The ``aiodisp`` command line: ``serve``, ``request``, ``notify``, ``bench`` and ``demo``.

Exit status: 0 on success, 1 when the exchange failed (no reply in time, a
transport error), 2 on bad input (an address or a message that does not parse,
conflicting options). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import __version__
from ._cli_workers import READY, Worker, WorkerFailed, say, stop_when_parent_leaves
from ._open import open_udp, open_unix
from .adapters import IdMessage, IdPrefixAdapter
from .errors import DispatchError, MessageTooLarge, RequestTimeout
from .retry import RetryPolicy

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: reported on stderr with exit status 2."""


# ---------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Where:
    """A place to listen on or send to: a UDP ``(host, port)`` or a Unix socket path."""

    kind: Literal["udp", "unix"]
    addr: Any  # (host, port) for UDP, the path for Unix

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.addr}"
        host, port = self.addr[0], self.addr[1]
        return f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"


_BRACKETED = re.compile(r"\[(?P<host>[^\]]+)\]:(?P<port>[^:]*)")


def parse_address(text: str, *, listen: bool = False) -> Where:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH`` as a :class:`Where`.

    Host names are resolved here (numeric addresses need no lookup), so the
    returned UDP address is numeric. Port 0 is only accepted to listen on.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise UsageError(f"{text!r}: the Unix socket path is empty")
        return Where("unix", path)
    match = _BRACKETED.fullmatch(text)
    if match:
        host, port_text = match["host"], match["port"]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise UsageError(f"{text!r} is not HOST:PORT ([IPV6]:PORT, unix:PATH)")
        if ":" in host:
            raise UsageError(f"{text!r}: put an IPv6 address in brackets, as in [::1]:9000")
    if not port_text.isdigit() or int(port_text) > 65535 or (int(port_text) == 0 and not listen):
        lowest = 0 if listen else 1
        raise UsageError(f"{text!r}: the port must be a number from {lowest} to 65535")
    port = int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"{text!r}: cannot resolve {host!r} ({exc})") from None
    ip = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not ip:
        raise UsageError(f"{text!r}: {host!r} has no IPv4 or IPv6 address")
    return Where("udp", (str(ip[0][4][0]), port))


def _address_arg(text: str) -> Where:
    try:
        return parse_address(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_arg(text: str) -> Where:
    try:
        return parse_address(text, listen=True)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {exc}") from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _count(lowest: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {lowest}")
        return value

    return parse


# ---------------------------------------------------------------------- message formats


class Format:
    """How the command line turns JSON into messages of an adapter and back."""

    name = ""
    adapter: Any

    def from_json(self, obj: Any) -> Any:
        raise NotImplementedError

    def to_json(self, msg: Any) -> Any:
        raise NotImplementedError

    def reply_to(self, msg: Any) -> Any:
        raise NotImplementedError


class JsonFormat(Format):
    """JSON objects via :class:`aiodisp.adapters.JsonAdapter`; the key is one field."""

    name = "json"

    def __init__(self, key_field: str, reply_field: str) -> None:
        from .adapters import JsonAdapter

        self.adapter = JsonAdapter(key_field=key_field, reply_field=reply_field)
        self.key_field = key_field
        self.reply_field = reply_field

    def from_json(self, obj: Any) -> Any:
        if not isinstance(obj, dict):
            raise UsageError(f"the message must be a JSON object, not {json.dumps(obj)}")
        if self.key_field not in obj:
            raise UsageError(f"the message has no {self.key_field!r} field (the key)")
        if obj.get(self.reply_field):
            raise UsageError(
                f"the message has {self.reply_field!r} set, so the peer would take it for a reply"
            )
        return obj

    def to_json(self, msg: Any) -> Any:
        return msg

    def reply_to(self, msg: Any) -> Any:
        return {**msg, self.reply_field: True}


class IdPrefixFormat(Format):
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

    def reply_to(self, msg: IdMessage) -> IdMessage:
        return msg._replace(reply=True)


def _format(args: argparse.Namespace) -> Format:
    if args.format == "idprefix":
        return IdPrefixFormat()
    return JsonFormat(args.key_field, args.reply_field)


# ---------------------------------------------------------------------- the parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiodisp",
        description="Request/reply messaging over datagrams (UDP, Unix datagram sockets).",
        epilog="Addresses are HOST:PORT, [IPV6]:PORT or unix:PATH. "
        "Exit status: 0 success, 1 failed exchange (timeout, transport error), 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"aiodisp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--framing", choices=("ack", "raw"), default="ack",
        help="ack: 8-byte header, ACKs and de-duplication (default); "
        "raw: the message is the whole datagram",
    )
    common.add_argument(
        "--format", choices=("json", "idprefix"), default="json",
        help="json: a JSON object keyed by --key-field (default); "
        "idprefix: an 8-byte id then a payload, written {\"id\": 1, \"payload\": \"hi\"}",
    )
    common.add_argument("--key-field", default="id", help="json: the field that is the key (id)")
    common.add_argument(
        "--reply-field", default="reply", help="json: the field that marks replies (reply)"
    )
    common.add_argument("--uvloop", action="store_true", help="run on uvloop")
    common.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log dropped datagrams and transport errors (-vv: debug)",
    )

    serve = sub.add_parser(
        "serve", parents=[common], help="run an echo server that answers every message",
        description="Echo every message back to its sender as a reply (the reply flag set). "
        "Stops cleanly on SIGINT or SIGTERM and prints how many messages each process echoed.",
    )
    where = serve.add_mutually_exclusive_group()
    where.add_argument(
        "--listen", type=_listen_arg, metavar="HOST:PORT",
        help="UDP address to listen on (default 127.0.0.1:9000; port 0 picks a free one)",
    )
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix datagram socket instead")
    serve.add_argument(
        "--workers", type=_count(1), default=1, metavar="N",
        help="serve one UDP port from N processes (SO_REUSEPORT; default 1)",
    )
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    for name, what in (("request", "send a request and print the reply"),
                       ("notify", "send a notification and wait for its ACK")):
        p = sub.add_parser(
            name, parents=[common], help=what,
            description=f"{what[0].upper()}{what[1:]}. The message is JSON, for instance "
            "'{\"id\": 1, \"body\": \"hi\"}'.",
        )
        p.add_argument("address", type=_address_arg, metavar="ADDRESS",
                       help="HOST:PORT, [IPV6]:PORT or unix:PATH")
        p.add_argument("message", type=_json_arg, metavar="MESSAGE", help="the message as JSON")
        p.add_argument("--timeout", type=_positive, default=2.0,
                       help="seconds to wait in all (default 2)")
        p.add_argument(
            "--retries", type=_count(0), default=2, metavar="N",
            help="sends after the first, spread over the timeout with doubling waits (default 2)",
        )
    sub.choices["notify"].add_argument(
        "--unreliable", action="store_true",
        help="send once and wait for nothing (the only kind of notify over raw UDP)",
    )

    from . import _bench  # light: it imports its heavy parts when it runs

    _bench.add_parser(sub)

    demo = sub.add_parser("demo", help="run an echo server and a client on loopback UDP")
    demo.add_argument("--count", type=int, default=20_000, help="requests to make")
    demo.add_argument("--in-flight", type=int, default=64, help="requests in flight at once")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: str = args.command
    if command == "demo":
        from ._demo import run_demo

        asyncio.run(run_demo(args.count, args.in_flight))
        return EXIT_OK
    if command == "bench":
        from . import _bench

        return _bench.run(args)
    _setup_logging(args.verbose)
    try:
        coro = _prepare(args)
    except UsageError as exc:
        print(f"aiodisp {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(coro, args.uvloop)
    except UsageError as exc:
        print(f"aiodisp {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _prepare(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Check what argparse cannot and return the command's coroutine."""
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise UsageError("--uvloop needs uvloop (pip install 'aiodisp[speed]')") from None
    fmt = _format(args)
    if args.command == "serve":
        if args.unix is not None and args.workers > 1:
            raise UsageError("--workers needs a UDP --listen address")
        where = Where("unix", args.unix) if args.unix else args.listen
        if where is None:
            where = parse_address("127.0.0.1:9000", listen=True)
        return _serve(args, fmt, where)
    msg = fmt.from_json(args.message)
    where = args.address
    raw_udp = args.framing == "raw" and where.kind == "udp"
    if args.command == "notify" and raw_udp and not args.unreliable:
        raise UsageError("notify over UDP needs --framing ack (or --unreliable)")
    return _exchange(args, fmt, msg, where)


def _run(coro: Coroutine[Any, Any, int], use_uvloop: bool) -> int:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def _setup_logging(verbose: int) -> None:
    level = logging.ERROR if verbose == 0 else logging.WARNING if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="aiodisp: %(levelname)s %(message)s")


def _fail(command: str, text: str) -> int:
    print(f"aiodisp {command}: error: {text}", file=sys.stderr)
    return EXIT_FAILED


# ---------------------------------------------------------------------- request / notify


def retry_policy(timeout: float, retries: int) -> RetryPolicy:
    """``retries + 1`` sends whose doubling waits add up to ``timeout`` (first wait >= 20 ms)."""
    attempts = retries + 1
    first = max(timeout / (2**attempts - 1), 0.02) if attempts < 64 else 0.02
    return RetryPolicy(
        initial_timeout=first, backoff=2.0, max_attempts=attempts, max_interval=timeout
    )


async def _exchange(args: argparse.Namespace, fmt: Format, msg: Any, where: Where) -> int:
    command: str = args.command
    tmpdir: str | None = None
    try:
        if where.kind == "unix":
            tmpdir = tempfile.mkdtemp(prefix="aiodisp-")
            d = await open_unix(fmt.adapter, os.path.join(tmpdir, "client.sock"),
                                framing=args.framing)
        else:
            wildcard = "::" if ":" in where.addr[0] else "0.0.0.0"
            d = await open_udp(fmt.adapter, (wildcard, 0), framing=args.framing)
    except DispatchError as exc:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return _fail(command, f"cannot open a socket: {exc}")
    policy = retry_policy(args.timeout, args.retries)
    try:
        async with d:
            if command == "request":
                reply = await d.request(msg, where.addr, timeout=args.timeout, retry=policy)
                print(json.dumps(fmt.to_json(reply)))
            elif args.unreliable:
                await d.notify_unreliable(msg, where.addr)
                print(f"sent to {where} (unconfirmed)")
            else:
                await d.notify(msg, where.addr, timeout=args.timeout, retry=policy)
                how = "sent over a reliable socket" if where.kind == "unix" else "acknowledged"
                print(f"delivered to {where} ({how})")
    except MessageTooLarge as exc:
        raise UsageError(str(exc)) from None
    except RequestTimeout as exc:
        return _fail(command, f"timed out: {exc}")
    except DispatchError as exc:
        return _fail(command, str(exc))
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return EXIT_OK


# ---------------------------------------------------------------------- serve


async def _serve(args: argparse.Namespace, fmt: Format, where: Where) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.worker:
        stop_when_parent_leaves(loop, stop)
    try:
        if where.kind == "unix":
            d = await open_unix(fmt.adapter, where.addr, framing=args.framing)
        else:
            reuse = args.workers > 1 or args.worker
            d = await open_udp(fmt.adapter, where.addr, framing=args.framing, reuse_port=reuse)
    except DispatchError as exc:
        return _fail("serve", str(exc))
    here = Where(where.kind, d.local_addr[:2] if where.kind == "udp" else d.local_addr)
    echoed = 0

    def echo(msg: Any, _addr: Any) -> Any:  # a plain function: served inline, no task each
        nonlocal echoed
        echoed += 1
        return fmt.reply_to(msg)

    serving = asyncio.create_task(d.serve(echo))
    workers: list[Worker] = []
    status = EXIT_OK
    try:
        for _ in range(args.workers - 1):
            worker = Worker(args, here)
            workers.append(worker)
            await worker.start()
        if args.worker:
            say(READY)
        else:
            extra = f", {args.workers} worker processes" if args.workers > 1 else ""
            say(f"aiodisp serve: listening on {here} ({args.framing} framing, "
                 f"{fmt.name} messages{extra}); stop with Ctrl-C or SIGTERM")
        status = await _until_stopped(stop, serving, workers)
    except WorkerFailed as exc:
        status = _fail("serve", str(exc))
    finally:
        await d.close()
        await serving
        for worker in workers:
            if await worker.stop() != 0:
                status = EXIT_FAILED
    plural = "" if echoed == 1 else "s"
    say(f"aiodisp serve: pid {os.getpid()} echoed {echoed} message{plural}")
    return status


async def _until_stopped(
    stop: asyncio.Event, serving: asyncio.Task[None], workers: list[Worker]
) -> int:
    stopping = asyncio.create_task(stop.wait())
    watched: dict[asyncio.Future[Any], Worker] = {
        asyncio.ensure_future(w.wait()): w for w in workers
    }
    try:
        done, _ = await asyncio.wait(
            {stopping, serving, *watched}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (stopping, *watched):
            task.cancel()
        await asyncio.gather(stopping, *watched, return_exceptions=True)
    for task in done:
        if task in watched:
            return _fail("serve", f"worker process {watched[task].pid} exited unexpectedly")
    return EXIT_OK
