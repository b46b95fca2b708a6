"""Congestion control at a kernel bottleneck: four senders, one 20 Mbit/s link.

Three fresh network namespaces in a row, joined by veth pairs: the senders',
a router's and the receiver's. On the router's link to the receiver, a token
bucket (``tc qdisc ... tbf rate 20mbit``) with a small queue (``limit 32kb``:
about 30 datagrams) is the bottleneck. (Not on the senders' own interface: a
qdisc there drops inside the sender's ``sendto``, which with IP_RECVERR
reports ENOBUFS, and the transport then queues the datagram itself: local
back-pressure, not loss in the network.) In the senders' namespace, one process
runs ``--senders`` dispatchers (4), each keeping ``--in-flight`` (256)
notifies of ``--payload`` (1,000) bytes in flight to one receiver in the other
namespace for ``--duration`` seconds; the receiver's application records
every message it gets. The run is made with ``congestion=True`` (the default)
and again with ``congestion=False``, every other option at its default
(adaptive retransmission, the retry budget).

Reported for each run, over the measured interval (from ``--warmup`` to the
end of ``--duration``, when the senders stop making new calls):

* goodput: the UDP payload of *distinct* notifies delivered, as a share of the
  link rate (the rest is framing below UDP and what was sent twice);
* the retransmitted share: retransmissions / datagrams sent;
* Jain's fairness index over the senders' goodputs (1.0: equal shares);
* exactly once: no notify delivered twice to the receiving application, and
  every notify whose ``notify()`` returned was delivered;

and a plot (``--plot``, matplotlib from the ``bench`` extra) of goodput,
window and retransmissions over time, both runs side by side. The JSON goes
to ``benchmarks/results/YYYY-MM-DD-<sha>-congestion.json``.

    sudo .venv/bin/python benchmarks/congestion.py [--duration 10] [--plot docs/congestion.png]

Needs root, ``ip`` and ``tc`` (iproute2). ``--smoke`` runs a short, small
version and checks only what must hold however loaded the machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import aiodisp  # noqa: E402
from aiodisp.adapters import IdMessage, IdPrefixAdapter  # noqa: E402

RECEIVER_IP = "10.232.0.1"
ROUTER_TO_RECEIVER = "10.232.0.2"
SENDER_IP = "10.232.1.2"
ROUTER_TO_SENDER = "10.232.1.1"
PORT = 40100
RATE_MBIT = 20
QUEUE_BYTES = 32 * 1024
BURST_BYTES = 8 * 1024
BIN = 0.1  # seconds per sample
#: Bytes below the UDP payload on the wire (Ethernet 14, IPv4 20, UDP 8).
BELOW_UDP = 42
#: IdPrefixAdapter's header and ACK framing's: the UDP payload is the payload + 16.
HEADERS = 16


# --------------------------------------------------------------------------- the lab


class LabError(RuntimeError):
    pass


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def unavailable_reason() -> str | None:
    """Why the bottleneck cannot be built here, or None (tried for real)."""
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and a tc qdisc"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command (iproute2)"
    try:
        with Bottleneck():
            pass
    except LabError as exc:
        return f"cannot build the bottleneck here: {exc}"
    return None


class Bottleneck:
    """Senders, router and receiver namespaces in a row; the router's link to the
    receiver shaped by tbf at ``rate_mbit`` with a ``queue_bytes`` queue."""

    def __init__(self, rate_mbit: int = RATE_MBIT, queue_bytes: int = QUEUE_BYTES) -> None:
        tag = f"aiodisp-cc{os.getpid()}"
        self.receiver_ns = f"{tag}-rcv"
        self.router_ns = f"{tag}-rtr"
        self.sender_ns = f"{tag}-snd"
        self.rate_mbit = rate_mbit
        self.queue_bytes = queue_bytes
        self._made: list[str] = []

    def __enter__(self) -> Bottleneck:
        snd, rtr, rcv = self.sender_ns, self.router_ns, self.receiver_ns
        try:
            for ns in (rcv, rtr, snd):
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", snd, "link", "add", "veth0", "type", "veth",
                 "peer", "name", "tosnd", "netns", rtr)
            _run("ip", "-n", rcv, "link", "add", "veth0", "type", "veth",
                 "peer", "name", "torcv", "netns", rtr)
            for ns, dev, ip in ((snd, "veth0", SENDER_IP), (rtr, "tosnd", ROUTER_TO_SENDER),
                                (rtr, "torcv", ROUTER_TO_RECEIVER), (rcv, "veth0", RECEIVER_IP)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", snd, "route", "add", "default", "via", ROUTER_TO_SENDER)
            _run("ip", "-n", rcv, "route", "add", "default", "via", ROUTER_TO_RECEIVER)
            _run("ip", "netns", "exec", rtr, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            _run("ip", "netns", "exec", rtr, "tc", "qdisc", "add", "dev", "torcv",
                 "root", "tbf", "rate", f"{self.rate_mbit}mbit", "burst", str(BURST_BYTES),
                 "limit", str(self.queue_bytes))
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    def destroy(self) -> None:
        while self._made:
            subprocess.run(("ip", "netns", "del", self._made.pop()), capture_output=True,
                           check=False)

    def qdisc_stats(self) -> dict[str, int]:
        """What the bottleneck's queue sent and dropped (``tc -s -j qdisc``)."""
        out = _run("ip", "netns", "exec", self.router_ns, "tc", "-s", "-j", "qdisc", "show",
                   "dev", "torcv")
        for q in json.loads(out):
            if q.get("kind") == "tbf":
                return {"sent_packets": q.get("packets", 0), "sent_bytes": q.get("bytes", 0),
                        "dropped": q.get("drops", 0), "overlimits": q.get("overlimits", 0)}
        return {}

    def popen(self, ns: str, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
        return subprocess.Popen(
            ("ip", "netns", "exec", ns, sys.executable, "-u", __file__, *args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env,
        )


# --------------------------------------------------------------------------- the peers


async def _receiver(bind: tuple[str, int]) -> dict[str, Any]:
    """Record every message: per sender, the ids (and copies) and the bytes per bin."""
    d = await aiodisp.open_udp(IdPrefixAdapter(), bind, max_queue=4096)
    loop = asyncio.get_running_loop()
    seen: dict[str, set[int]] = defaultdict(set)
    copies: dict[str, int] = defaultdict(int)
    arrivals: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    async def app() -> None:
        async for msg, size, addr in d:
            sender = f"{addr[0]}:{addr[1]}"
            if msg.id in seen[sender]:
                copies[sender] += 1
                continue
            seen[sender].add(msg.id)
            arrivals[sender][int(loop.time() / BIN)] += size + 8  # + ACK framing's header

    task = asyncio.create_task(app())
    print(json.dumps({"ready": list(d.local_addr)}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await d.close()
    await task
    return {
        "seen": {s: sorted(ids) for s, ids in seen.items()},
        "copies": dict(copies),
        "arrivals": {s: {str(k): v for k, v in bins.items()} for s, bins in arrivals.items()},
        "stats": d.stats.as_dict(),
    }


async def _senders(server: tuple[str, int], *, senders: int, in_flight: int, payload: int,
                   duration: float, congestion: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ds = [await aiodisp.open_udp(IdPrefixAdapter(), (SENDER_IP, 0), congestion=congestion)
          for _ in range(senders)]
    body = b"x" * payload
    start = loop.time()
    stop_at = start + duration
    completed: list[list[int]] = [[] for _ in ds]
    errors: list[int] = [0 for _ in ds]
    samples: list[dict[str, Any]] = []

    async def worker(k: int, first: int) -> None:
        d = ds[k]
        i = first
        while loop.time() < stop_at:
            try:
                await d.notify(IdMessage(i, body), server, timeout=30.0)
            except aiodisp.DispatchError:
                errors[k] += 1
            else:
                completed[k].append(i)
            i += in_flight

    async def sampler() -> None:
        while True:
            samples.append({
                "t": loop.time(),
                "acked": [d.stats.acks_received for d in ds],
                "sent": [d.stats.notifies for d in ds],
                "retransmissions": [d.stats.retransmissions for d in ds],
                "window": [d.window(server) for d in ds],
                "pending": [d.pending for d in ds],
            })
            await asyncio.sleep(BIN)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(worker(k, n + 1) for k in range(len(ds)) for n in range(in_flight)))
    sampling.cancel()
    out = {
        "senders": [f"{d.local_addr[0]}:{d.local_addr[1]}" for d in ds],
        "duration": duration,
        "start": start,
        "end": loop.time(),
        "completed": completed,
        "errors": errors,
        "stats": [d.stats.as_dict() for d in ds],
        "samples": samples,
    }
    for d in ds:
        await d.close()
    return out


# --------------------------------------------------------------------------- one run


def run_once(lab: Bottleneck, *, congestion: bool, senders: int, in_flight: int, payload: int,
             duration: float, warmup: float) -> dict[str, Any]:
    receiver = lab.popen(lab.receiver_ns, "--role", "receiver")
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        line = receiver.stdout.readline()
        if not line:
            raise LabError(f"the receiver did not start: {receiver.communicate()[1]}")
        before = lab.qdisc_stats()
        sender = lab.popen(lab.sender_ns, "--role", "senders", "--senders", str(senders),
                           "--in-flight", str(in_flight), "--payload", str(payload),
                           "--duration", str(duration),
                           "--congestion", "on" if congestion else "off")
        out, err = sender.communicate(timeout=duration + 120)
        if sender.returncode != 0:
            raise LabError(f"the senders failed: {err}")
        sent = json.loads(out)
        after = lab.qdisc_stats()
        rout, rerr = receiver.communicate("stop\n", timeout=60)
        if receiver.returncode != 0:
            raise LabError(f"the receiver failed: {rerr}")
        received = json.loads(rout)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    return summarize(sent, received, congestion=congestion, payload=payload, warmup=warmup,
                     qdisc={k: after.get(k, 0) - before.get(k, 0) for k in after})


def jain(xs: list[float]) -> float:
    total = sum(xs)
    squares = sum(x * x for x in xs)
    return total * total / (len(xs) * squares) if squares else 1.0


def summarize(sent: dict[str, Any], received: dict[str, Any], *, congestion: bool, payload: int,
              warmup: float, qdisc: dict[str, int]) -> dict[str, Any]:
    rate = RATE_MBIT * 1e6
    # the interval measured: from the warm-up's end to the last new notify (what the
    # calls still in flight then did is in the series, not in the goodput)
    t0 = sent["start"] + warmup
    t1 = sent["start"] + sent["duration"]
    first_bin, last_bin = int(t0 / BIN), int(t1 / BIN)
    per_sender: list[float] = []
    for name in sent["senders"]:
        bins = received["arrivals"].get(name, {})
        got = sum(v for k, v in bins.items() if first_bin <= int(k) < last_bin)
        per_sender.append(got * 8 / ((last_bin - first_bin) * BIN))
    goodput = sum(per_sender)
    stats = sent["stats"]
    first_sends = sum(s["notifies"] for s in stats)
    retransmissions = sum(s["retransmissions"] for s in stats)
    delivered_twice = sum(received["copies"].values())
    lost_acked = 0
    for name, done in zip(sent["senders"], sent["completed"], strict=True):
        seen = set(received["seen"].get(name, []))
        lost_acked += sum(1 for i in done if i not in seen)
    # the time series, per BIN: goodput per sender (receiver), window and retransmissions
    series: dict[str, Any] = {"t": [], "goodput_mbit": [], "window": [], "retransmissions": []}
    samples = sent["samples"]
    for a, b in itertools.pairwise(samples):
        k = int(a["t"] / BIN)
        series["t"].append(round(a["t"] - sent["start"], 3))
        series["goodput_mbit"].append(
            [received["arrivals"].get(n, {}).get(str(k), 0) * 8 / BIN / 1e6
             for n in sent["senders"]])
        series["window"].append(a["window"])
        series["retransmissions"].append(
            [y - x for x, y in zip(a["retransmissions"], b["retransmissions"], strict=True)])
    return {
        "congestion": congestion,
        "goodput_mbit": goodput / 1e6,
        "goodput_share": goodput / rate,
        "per_sender_mbit": [x / 1e6 for x in per_sender],
        "jain": jain(per_sender),
        "first_sends": first_sends,
        "retransmissions": retransmissions,
        "retransmitted_share": retransmissions / max(1, first_sends + retransmissions),
        "budget_denied": sum(s["budget_denied"] for s in stats),
        "timeouts": sum(s["timeouts"] for s in stats),
        "errors": sum(sent["errors"]),
        "completed": sum(len(c) for c in sent["completed"]),
        "delivered_twice": delivered_twice,
        "acked_not_delivered": lost_acked,
        "exactly_once": delivered_twice == 0 and lost_acked == 0,
        "receiver_duplicates_dropped": received["stats"]["duplicates"],
        "receiver_queue_drops": received["stats"]["queue_drops"],
        "qdisc": qdisc,
        "series": series,
    }


# --------------------------------------------------------------------------- the report


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(results), figsize=(6 * len(results), 8), sharex="col",
                             squeeze=False)
    for col, r in enumerate(results):
        s = r["series"]
        t = s["t"]
        title = "congestion=True" if r["congestion"] else "congestion=False"
        n = len(r["per_sender_mbit"])
        ax = axes[0][col]
        for k in range(n):
            ax.plot(t, [row[k] for row in s["goodput_mbit"]], lw=0.8, label=f"sender {k + 1}")
        ax.plot(t, [sum(row) for row in s["goodput_mbit"]], color="black", lw=1.2, label="all")
        ax.axhline(RATE_MBIT * payload_share(r), color="grey", ls=":", lw=0.8)
        ax.set_title(f"{title}: goodput {r['goodput_share']:.0%}, Jain {r['jain']:.2f}")
        ax.set_ylabel("goodput (Mbit/s)")
        ax.legend(fontsize=7, ncol=5, loc="lower right")
        ax = axes[1][col]
        for k in range(n):
            ax.plot(t, [row[k] if row[k] is not None else float("nan") for row in s["window"]],
                    lw=0.8)
        ax.set_ylabel("window (calls)")
        if not r["congestion"]:
            ax.text(0.5, 0.5, "no window", transform=ax.transAxes, ha="center")
        ax = axes[2][col]
        ax.plot(t, [sum(row) for row in s["retransmissions"]], color="tab:red", lw=0.8)
        ax.set_ylabel(f"retransmissions / {BIN * 1000:.0f} ms")
        ax.set_xlabel("time (s)")
        ax.set_title(f"retransmitted {r['retransmitted_share']:.1%} of datagrams sent",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def payload_share(r: dict[str, Any]) -> float:
    """The most goodput can be, as a share of the rate: UDP payload over wire bytes."""
    udp = r.get("payload", 1000) + HEADERS
    return udp / (udp + BELOW_UDP)


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["receiver", "senders"], help=argparse.SUPPRESS)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--payload", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--congestion", choices=["on", "off", "both"], default="both")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    parser.add_argument("--json", help="write the results here (default: "
                        "benchmarks/results/YYYY-MM-DD-<sha>-congestion.json)")
    parser.add_argument("--no-save", action="store_true", help="write no JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help="2 senders x 32 in flight for 2 s; no file written but --json")
    args = parser.parse_args(argv)
    if args.role == "receiver":
        print(json.dumps(asyncio.run(_receiver((RECEIVER_IP, PORT)))), flush=True)
        return 0
    if args.role == "senders":
        result = asyncio.run(_senders(
            (RECEIVER_IP, PORT), senders=args.senders, in_flight=args.in_flight,
            payload=args.payload, duration=args.duration, congestion=args.congestion != "off"))
        print(json.dumps(result), flush=True)
        return 0
    if args.smoke:
        args.senders, args.in_flight, args.duration, args.warmup = 2, 32, 2.0, 0.5
        args.no_save = args.json is None
    reason = unavailable_reason()
    if reason is not None:
        print(f"congestion benchmark skipped: {reason}", file=sys.stderr)
        return 2
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.congestion]
    results = []
    with Bottleneck() as lab:
        for congestion in modes:
            r = run_once(lab, congestion=congestion, senders=args.senders,
                         in_flight=args.in_flight, payload=args.payload,
                         duration=args.duration, warmup=args.warmup)
            r["payload"] = args.payload
            results.append(r)
            print(f"congestion={congestion!s:5}  goodput {r['goodput_mbit']:5.2f} Mbit/s "
                  f"({r['goodput_share']:.1%} of {RATE_MBIT} Mbit/s; at most "
                  f"{payload_share(r):.1%} is UDP payload)  retransmitted "
                  f"{r['retransmitted_share']:.1%}  Jain {r['jain']:.3f}  "
                  f"exactly once {r['exactly_once']}  budget denied {r['budget_denied']}  "
                  f"queue drops {r['qdisc'].get('dropped', 0)}  timeouts {r['timeouts']}",
                  flush=True)
    meta = {
        "commit": _commit(),
        "date": datetime.date.today().isoformat(),
        "rate_mbit": RATE_MBIT, "queue_bytes": QUEUE_BYTES, "burst_bytes": BURST_BYTES,
        "senders": args.senders, "in_flight": args.in_flight, "payload": args.payload,
        "duration": args.duration, "warmup": args.warmup,
        "python": sys.version.split()[0], "aiodisp": aiodisp.__version__,
        "command": " ".join(["benchmarks/congestion.py", *(argv or sys.argv[1:])]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if not args.no_save:
        path = args.json or str(ROOT / "benchmarks" / "results" /
                                f"{meta['date']}-{meta['commit']}-congestion.json")
        with open(path, "w") as f:
            json.dump({"meta": meta, "runs": results}, f, indent=1)
        print(f"wrote {path}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
