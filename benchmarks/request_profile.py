"""Where one request's user-space cost goes: callgrind by binary, cProfile by Python function.

    .venv/bin/python benchmarks/request_profile.py                  # clients, uvloop (~2 min)
    .venv/bin/python benchmarks/request_profile.py --side server
    .venv/bin/python benchmarks/request_profile.py --quick --json - # smoke (cProfile only)

Two exact counts, each the difference of a short and a long run (2,000 and
8,000 requests at 256 in flight, as ``client_instructions.py``) over the
requests between, so start-up and imports cancel out:

* **callgrind, by binary**: the instructions each shared object executed
  itself (self cost): the interpreter (``python3.11`` / ``libpython``: every
  line of Python, the library's, the loop's on the default loop, the
  driver's), ``uvloop`` (its C event loop), the C parts of ``_asyncio``
  (futures and tasks), ``_struct``, ``_socket``, ``libc`` (the system-call
  wrappers, ``malloc``) and the rest. The kernel is not counted by callgrind:
  ``syscalls.py`` gives its time and its calls.
* **cProfile, by Python function**: how many calls of each function (Python
  ones and the built-ins they call) one request makes, grouped as the library
  (``src/aiodisp``), asyncio's Python code, the benchmark's driver, and
  built-ins (socket methods, futures, the rest), with the time cProfile saw
  in each. The call counts are exact; the times are not (cProfile's own cost
  per call inflates call-heavy code, and a function's own time includes the
  C calls it makes that cProfile does not see, such as uvloop's send).

The client runs against the common echo server (uvloop, as in ``run.py``'s
client mode); with ``--side server`` the peer's own server is measured,
driven by an unprofiled client (the hand-rolled one for raw framing,
aiodisp's for ACK framing). Needs valgrind for the callgrind part.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402
import peers  # noqa: E402

CASES = ("handrolled/raw", "aiodisp/ack", "aiodisp/raw")
DRIVER = os.path.join(HERE, "client_instructions.py")


# ---------------------------------------------------------------------- callgrind


def _object_name(path: str) -> str:
    """The group of a shared object: its name, or the part of the stack it is."""
    if "uvloop" in path:
        return "uvloop (C event loop)"
    base = os.path.basename(path)
    if "libpython" in base or base.startswith("python3"):
        return "python (interpreter)"
    if base.startswith("libc.so") or base.startswith("libc-"):
        return "libc"
    if base.startswith("ld-linux"):
        return "ld.so"
    for key in ("_asyncio", "_struct", "_socket", "select", "_random", "math", "_heapq"):
        if base.startswith(key):
            return key
    if "vgpreload" in base or "valgrind" in path:
        return "valgrind preload"
    return base or "?"


def parse_callgrind(path: str) -> dict[str, int]:
    """Self instruction counts per shared object from a callgrind output file."""
    names: dict[str, str] = {}
    totals: collections.Counter[str] = collections.Counter()
    current = "?"
    skip_next = False
    ref = re.compile(r"\((\d+)\)(?: (.*))?")
    with open(path) as f:
        for line in f:
            if line.startswith("ob="):
                m = ref.match(line[3:].strip())
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    current = names.get(m.group(1), "?")
                else:
                    current = line[3:].strip()
                continue
            if line.startswith("cob="):
                m = ref.match(line[4:].strip())
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                continue
            if line.startswith("calls="):
                skip_next = True
                continue
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if skip_next:  # the inclusive cost of a call: not this function's own
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    totals[_object_name(current)] += int(parts[1])
    return dict(totals)


def _callgrind_client(loop: str, peer: str, variant: str, target: Any, count: int) -> dict[
        str, int]:
    out = tempfile.mktemp(suffix=".callgrind")
    opts = {"loop": loop, "peer": peer, "variant": variant, "target": target, "count": count}
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          sys.executable, DRIVER, "--run", json.dumps(opts)],
                         capture_output=True, text=True, env=harness._env(), check=False)
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])
    try:
        return parse_callgrind(out)
    finally:
        os.unlink(out)


def _plain_client(loop: str, peer: str, variant: str, target: Any, count: int,
                  prefix: list[str] | None = None) -> None:
    opts = {"loop": loop, "peer": peer, "variant": variant, "target": target, "count": count}
    run = subprocess.run([*(prefix or [sys.executable]), DRIVER, "--run", json.dumps(opts)],
                         capture_output=True, text=True, env=harness._env(), check=False)
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])


def _server_under(prefix: list[str], loop: str, peer: str, variant: str, count: int) -> None:
    opts = {"peer": peer, "variant": variant, "loop": loop, "cpu": None, "sockbuf": 4 << 20}
    proc = subprocess.Popen([*prefix, os.path.join(HERE, "server_main.py"), json.dumps(opts)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=harness._env())
    assert proc.stdout is not None and proc.stdin is not None
    try:
        target = json.loads(proc.stdout.readline())
        driver = ("aiodisp", "ack") if variant == "ack" else ("handrolled", "raw")
        _plain_client(loop, *driver, target, count)
    finally:
        proc.stdin.close()  # the server stops when its stdin closes
        proc.stdin = None
        proc.communicate(timeout=300)


def _callgrind_server(loop: str, peer: str, variant: str, count: int) -> dict[str, int]:
    out = tempfile.mktemp(suffix=".callgrind")
    _server_under(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                   sys.executable], loop, peer, variant, count)
    try:
        return parse_callgrind(out)
    finally:
        os.unlink(out)


# ---------------------------------------------------------------------- cProfile


def _group(path: str, name: str) -> str:
    if path == "~":
        if any(s in name for s in ("sendto", "recvfrom", "sendmsg", "recvmsg", "recv_into",
                                   "'recv'", "'send'")):
            return "built-ins: socket calls"
        if "Future" in name or "future" in name or "Task" in name:
            return "built-ins: futures and tasks"
        return "built-ins: other"
    if os.sep + "aiodisp" + os.sep in path:
        return "library (aiodisp)"
    if os.sep + "asyncio" + os.sep in path or "uvloop" in path:
        return "event loop (Python code)"
    if path.startswith(HERE):
        return "benchmark driver"
    return "other Python"


def parse_profile(path: str) -> dict[str, tuple[int, float, str]]:
    """(calls, self seconds, group) per function of a cProfile dump."""
    st = pstats.Stats(path)
    out: dict[str, tuple[int, float, str]] = {}
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in st.stats.items():  # type: ignore
        key = f"{name} ({os.path.basename(file)}:{line})" if file != "~" else name
        out[key] = (nc, tt, _group(file, name))
    return out


def _profile_client(loop: str, peer: str, variant: str, target: Any, count: int) -> dict[
        str, tuple[int, float, str]]:
    out = tempfile.mktemp(suffix=".prof")
    _plain_client(loop, peer, variant, target, count, [sys.executable, "-m", "cProfile", "-o",
                                                         out])
    try:
        return parse_profile(out)
    finally:
        os.unlink(out)


def _profile_server(loop: str, peer: str, variant: str, count: int) -> dict[
        str, tuple[int, float, str]]:
    out = tempfile.mktemp(suffix=".prof")
    _server_under([sys.executable, "-m", "cProfile", "-o", out], loop, peer, variant, count)
    try:
        return parse_profile(out)
    finally:
        os.unlink(out)


def profile_diff(small: dict[str, tuple[int, float, str]], large: dict[str, tuple[int, float,
                 str]], n: int, top: int) -> dict[str, Any]:
    """Calls per request of every function called at least once per 100 requests.

    Functions called less often (start-up, imports) are left out: their time
    differs between the two runs by chance, not by the requests between them.
    """
    rows = []
    for key, (calls, tt, group) in large.items():
        c0, t0, _ = small.get(key, (0, 0.0, group))
        per = (calls - c0) / n
        if per >= 0.01:
            rows.append((key, per, (tt - t0) / n * 1e6, group))
    groups: dict[str, dict[str, float]] = {}
    for _key, calls, us, group in rows:
        g = groups.setdefault(group, {"calls_per_request": 0.0, "us_per_request": 0.0})
        g["calls_per_request"] += calls
        g["us_per_request"] += us
    rows.sort(key=lambda r: -r[2])
    return {
        "calls_per_request": sum(r[1] for r in rows),
        "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["calls_per_request"])),
        "top": [{"function": k, "calls_per_request": round(c, 3),
                 "us_per_request_profiled": round(us, 3), "group": g}
                for k, c, us, g in rows[:top]],
    }


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=("client", "server"), default="client")
    p.add_argument("--loop", choices=common.LOOPS, default="uvloop")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--tools", default="callgrind,cprofile")
    p.add_argument("--top", type=int, default=12, help="functions listed per case")
    p.add_argument("--quick", action="store_true", help="cProfile only, 500 and 1,500 requests")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    small, large = (500, 1_500) if args.quick else (2_000, 8_000)
    tools = ["cprofile"] if args.quick else args.tools.split(",")
    if "callgrind" in tools and shutil.which("valgrind") is None:
        print("callgrind needs valgrind (apt-get install valgrind): skipped", file=sys.stderr)
        tools.remove("callgrind")
    n = large - small
    cases = [c.split("/") for c in args.cases.split(",")]
    results: dict[str, Any] = {}
    started = time.time()
    echo = None
    if args.side == "client":
        modes = sorted({peers.load(pn).ECHO_MODE[v] for pn, v in cases})
        echo = harness.Server(peer="echo", modes=modes, loop="uvloop", cpu=None)
    try:
        for peer, variant in cases:
            name = f"{peer}/{variant}"
            res: dict[str, Any] = {}
            target = echo.addr[peers.load(peer).ECHO_MODE[variant]] if echo else None
            if "callgrind" in tools:
                if echo:
                    a = _callgrind_client(args.loop, peer, variant, target, small)
                    b = _callgrind_client(args.loop, peer, variant, target, large)
                else:
                    a = _callgrind_server(args.loop, peer, variant, small)
                    b = _callgrind_server(args.loop, peer, variant, large)
                per = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in set(a) | set(b)}
                res["instructions_per_request"] = dict(sorted(per.items(), key=lambda kv: -kv[1]))
                res["instructions_total"] = sum(per.values())
                print(f"{name}: {res['instructions_total']:,.0f} instructions per request: "
                      + ", ".join(f"{k} {v:,.0f}" for k, v in
                                  res["instructions_per_request"].items() if abs(v) >= 50),
                      file=sys.stderr)
            if "cprofile" in tools:
                if echo:
                    pa = _profile_client(args.loop, peer, variant, target, small)
                    pb = _profile_client(args.loop, peer, variant, target, large)
                else:
                    pa = _profile_server(args.loop, peer, variant, small)
                    pb = _profile_server(args.loop, peer, variant, large)
                res["cprofile"] = prof = profile_diff(pa, pb, n, args.top)
                print(f"{name}: {prof['calls_per_request']:.1f} profiled calls per request; "
                      + "; ".join(f"{g} {v['calls_per_request']:.1f}"
                                  for g, v in prof["groups"].items()), file=sys.stderr)
                for row in prof["top"]:
                    print(f"    {row['calls_per_request']:6.2f} calls "
                          f"{row['us_per_request_profiled']:7.2f} µs (profiled)  "
                          f"{row['function']}", file=sys.stderr)
            results[name] = res
    finally:
        if echo is not None:
            echo.close()
    doc = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "side": args.side,
                    "loop": args.loop, "requests": [small, large], "tools": tools,
                    "seconds": round(time.time() - started, 1), **harness.source_version()},
           "results": results}
    if args.json:
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
