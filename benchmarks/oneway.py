"""One-way messages: ``send_nowait``, ``notify_unreliable`` and a hand-rolled ``sendto`` loop.

    .venv/bin/python benchmarks/oneway.py --renice -20     # ~1.5 min, both loops
    .venv/bin/python benchmarks/oneway.py --quick --json -  # seconds-long smoke

A sender process (pinned to the first core) sends 64-byte-payload messages to
one receiver (a process pinned to the other core) as fast as it can for
``--duration`` seconds: ``--batch`` messages, then one event-loop iteration
(``await asyncio.sleep(0)``), again and again — the same shape for every
sender, so whatever a library does at the end of an iteration (a flush) is
counted. Senders:

* ``sendto``: hand-rolled, ``sock.sendto(WORD.pack(i) + body, addr)`` on a
  non-blocking socket (the 72 bytes of an :class:`IdMessage` in raw framing);
* ``transport``: hand-rolled, the loop's own ``DatagramTransport.sendto``;
* ``aiodisp-<framing>-send_nowait``: ``d.send_nowait(IdMessage(i, body), addr)``;
* ``aiodisp-<framing>-notify_unreliable``: ``await d.notify_unreliable(...)``.

The sender counts the messages it handed over without an error (a send the
kernel or the library refuses is counted apart); messages/s is that count
over the measured time. The receiver counts what arrived (an aiodisp
dispatcher of the same framing for the aiodisp senders, so that any bundle
format it may use is understood; a plain socket for the others), which says
how much the receiver dropped, not how fast the sender is. Cases alternate in
every round (the order reversed every other round); ratios to ``sendto`` are
taken per round, on the same loop, of messages/s and of CPU per message (the
sender is CPU-bound: on a shared machine the CPU it gets moves its wall-clock
rate more than its cost per message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402

SENDERS = ("sendto", "transport", "aiodisp-ack-send_nowait", "aiodisp-ack-notify_unreliable",
           "aiodisp-raw-send_nowait", "aiodisp-raw-notify_unreliable")
BUFFER = 4 << 20


# ---------------------------------------------------------------------- the receiver


async def _receive(opts: dict[str, Any]) -> dict[str, Any]:
    """Count what arrives until stdin closes; print the address first."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096) and not stop.done():
            stop.set_result(None)

    def ready(addr: Any) -> None:
        sys.stdout.write(json.dumps(list(addr)[:2]) + "\n")
        sys.stdout.flush()

    loop.add_reader(stdin, on_stdin)
    framing = opts.get("framing")
    counts = {"messages": 0, "datagrams": 0}
    try:
        if framing:
            import aiodisp
            from aiodisp.adapters import IdPrefixAdapter

            d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), framing=framing,
                                       buffer_size=BUFFER)

            def count(msg: Any, addr: Any) -> None:
                counts["messages"] += 1

            serving = asyncio.ensure_future(d.serve(count))
            ready(d.local_addr)
            await stop
            counts["datagrams"] = d.stats.received
            await d.close()
            await serving
        else:
            sock = _socket()
            recv_into = sock.recv_into
            buf = bytearray(65536)

            def drain() -> None:
                n = 0
                while True:
                    try:
                        recv_into(buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    n += 1
                counts["datagrams"] += n
                counts["messages"] += n

            loop.add_reader(sock.fileno(), drain)
            ready(sock.getsockname())
            await stop
            loop.remove_reader(sock.fileno())
            sock.close()
    finally:
        loop.remove_reader(stdin)
    return counts


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.bind(("127.0.0.1", 0))
    return sock


# ---------------------------------------------------------------------- the senders


async def _send(opts: dict[str, Any]) -> dict[str, Any]:
    from common import WORD

    target = tuple(opts["target"])
    sender = opts["sender"]
    batch = opts["batch"]
    body = os.urandom(common.PAYLOAD)
    loop = asyncio.get_running_loop()
    pack = WORD.pack
    state = {"sent": 0, "refused": 0, "sent_in_all": 0}
    close: Any = None
    datagrams: Any = None
    send_batch: Any = None
    send_batch_async: Any = None

    if sender == "sendto":
        sock = _socket()
        sendto = sock.sendto

        def send_batch(i: int) -> int:
            refused = 0
            for k in range(i, i + batch):
                try:
                    sendto(pack(k) + body, target)
                except BlockingIOError:
                    refused += 1
            return refused

        close = sock.close
    elif sender == "transport":
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           sock=_socket())
        tsendto = transport.sendto

        def send_batch(i: int) -> int:
            for k in range(i, i + batch):
                tsendto(pack(k) + body, target)
            return 0

        close = transport.close
    else:
        import aiodisp
        from aiodisp.adapters import IdMessage, IdPrefixAdapter

        _, framing, how = sender.split("-")
        d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), framing=framing,
                                   buffer_size=BUFFER)
        if how == "send_nowait":
            send_nowait = d.send_nowait
            TransportError = aiodisp.TransportError

            def send_batch(i: int) -> int:
                refused = 0
                for k in range(i, i + batch):
                    try:
                        send_nowait(IdMessage(k, body), target)
                    except TransportError:
                        refused += 1
                return refused
        else:
            notify_unreliable = d.notify_unreliable

            async def send_batch_async(i: int) -> int:
                for k in range(i, i + batch):
                    await notify_unreliable(IdMessage(k, body), target)
                return 0

        async def close_d() -> None:
            await d.close()

        close = close_d

        def datagrams() -> int:
            return int(d.stats.sent)

    is_async = send_batch_async is not None
    clock = time.perf_counter
    i = 1

    async def run_for(seconds: float) -> tuple[int, int]:
        nonlocal i
        sent = refused = 0
        end = clock() + seconds
        while clock() < end:
            r = await send_batch_async(i) if is_async else send_batch(i)
            i += batch
            sent += batch - r
            refused += r
            await asyncio.sleep(0)
        return sent, refused

    warm, warm_refused = await run_for(opts["warmup"])
    dgrams0 = datagrams() if datagrams else 0
    cpu0, t0 = time.process_time(), clock()
    sent, refused = await run_for(opts["duration"])
    elapsed, cpu = clock() - t0, time.process_time() - cpu0
    state.update(sent=sent, refused=refused + warm_refused, sent_in_all=sent + warm)
    result: dict[str, Any] = {
        **state, "elapsed_s": elapsed, "cpu_s": cpu,
        "messages_per_s": sent / elapsed, "cpu_us_per_message": cpu / max(1, sent) * 1e6,
    }
    if datagrams:
        result["datagrams"] = datagrams() - dgrams0
        result["messages_per_datagram"] = sent / max(1, result["datagrams"])
    await asyncio.sleep(0.05)
    r = close()
    if asyncio.iscoroutine(r):
        await r
    return result


# ---------------------------------------------------------------------- the run


def _receiver(framing: str | None, loop: str, cpu: int | None) -> tuple[subprocess.Popen[bytes],
                                                                         Any]:
    opts = {"role": "receiver", "framing": framing, "loop": loop, "cpu": cpu}
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", json.dumps(opts)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=harness._env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the receiver did not start")
    return proc, json.loads(line)


def measure(sender: str, loop: str, args: argparse.Namespace) -> dict[str, Any]:
    framing = sender.split("-")[1] if sender.startswith("aiodisp") else None
    recv_cpu = None if args.no_pin else common.server_core()
    send_cpu = None if args.no_pin else common.client_core()
    proc, target = _receiver(framing, loop, recv_cpu)
    try:
        opts = {"role": "sender", "sender": sender, "loop": loop, "target": target,
                "cpu": send_cpu, "batch": args.batch, "duration": args.duration,
                "warmup": args.warmup}
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--role",
                              json.dumps(opts)], capture_output=True, text=True,
                             env=harness._env(), timeout=args.duration + args.warmup + 60)
        if out.returncode:
            raise RuntimeError(f"sender {sender} failed: {out.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        tail = proc.stdout.read()
        proc.wait(30)
    received = json.loads(tail.splitlines()[-1])
    result["received_messages"] = received["messages"]
    result["received_datagrams"] = received["datagrams"]
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke: 0.3 s, 1 round")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per run (2)")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured seconds first (0.3)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (3)")
    p.add_argument("--batch", type=int, default=64,
                   help="messages sent per event-loop iteration (64)")
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument("--senders", default=",".join(SENDERS))
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--renice", type=int, default=None, metavar="N")
    p.add_argument("--json", metavar="PATH", help="write the results ('-': stdout)")
    p.add_argument("--role", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.duration = args.duration or (0.3 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.1 if args.quick else 0.3)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.loops = [x for x in args.loops.split(",") if x]
    args.senders = [x for x in args.senders.split(",") if x]
    for s in args.senders:
        if s not in SENDERS:
            p.error(f"unknown sender {s!r}")
    for loop in args.loops:
        if loop not in common.LOOPS:
            p.error(f"unknown loop {loop!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        opts = json.loads(args.role)
        common.pin(opts.get("cpu"))
        fn = _receive if opts["role"] == "receiver" else _send
        print(json.dumps(common.run_on(opts["loop"], fn(opts))))
        return 0
    common.renice(args.renice)
    common.exit_on_sigterm()
    cases = [(loop, s) for loop in args.loops for s in args.senders]
    log = sys.stderr
    print(f"{len(cases)} cases x {args.rounds} rounds x {args.duration:g} s; load average "
          f"before: {os.getloadavg()[0]:.2f}", file=log)
    started = time.time()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in cases}
    for rnd in range(args.rounds):
        for case in cases if rnd % 2 == 0 else list(reversed(cases)):
            r = measure(case[1], case[0], args)
            runs[case].append(r)
            print(f"round {rnd + 1}/{args.rounds} {case[0]}/{case[1]}: "
                  f"{r['messages_per_s']:,.0f} messages/s, {r['cpu_us_per_message']:.2f} µs "
                  f"CPU each, {r['refused']} refused, received {r['received_messages']:,}",
                  file=log)
    rows = []
    for (loop, sender), results in runs.items():
        rates = [r["messages_per_s"] for r in results]
        row: dict[str, Any] = {
            "loop": loop, "sender": sender, "messages_per_s": common.median(rates),
            "min": min(rates), "max": max(rates),
            "cpu_us_per_message": common.median([r["cpu_us_per_message"] for r in results]),
            "received_share": common.median(
                [r["received_messages"] / max(1, r["sent_in_all"]) for r in results]),
            "per_round": results,
        }
        if ("sendto" in args.senders) and sender != "sendto":
            ratios = [a["messages_per_s"] / b["messages_per_s"]
                      for a, b in zip(results, runs[(loop, "sendto")], strict=True)]
            row["vs_sendto"] = common.median(ratios)
            row["vs_sendto_min"], row["vs_sendto_max"] = min(ratios), max(ratios)
            cpu = [b["cpu_us_per_message"] / a["cpu_us_per_message"]
                   for a, b in zip(results, runs[(loop, "sendto")], strict=True)]
            row["cpu_vs_sendto"] = common.median(cpu)
            row["cpu_vs_sendto_min"], row["cpu_vs_sendto_max"] = min(cpu), max(cpu)
        rows.append(row)
    print("\n| loop | sender | messages/s (median) | range | vs sendto (range) "
          "| CPU µs/message | sendto's CPU / this (range) | received |", file=log)
    print("|---|---|---:|---:|---:|---:|---:|---:|", file=log)
    for row in rows:
        vs = cpu_vs = "1"
        if "vs_sendto" in row:
            vs = f"{row['vs_sendto']:.2f}x ({row['vs_sendto_min']:.2f}-{row['vs_sendto_max']:.2f})"
            cpu_vs = (f"{row['cpu_vs_sendto']:.2f}x ({row['cpu_vs_sendto_min']:.2f}-"
                      f"{row['cpu_vs_sendto_max']:.2f})")
        print(f"| {row['loop']} | {row['sender']} | {row['messages_per_s']:,.0f} | "
              f"{row['min']:,.0f}-{row['max']:,.0f} | {vs} | {row['cpu_us_per_message']:.2f} | "
              f"{cpu_vs} | {row['received_share']:.0%} |", file=log)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
            "python": platform.python_version(), "load_average_after": os.getloadavg(),
            "duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
            "batch": args.batch, "payload": common.PAYLOAD,
            "argv": sys.argv[1:] if argv is None else argv, **harness.source_version()}
    if args.json:
        text = json.dumps({"meta": meta, "results": rows}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
