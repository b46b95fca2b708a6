"""``aiodisp bench`` against ``aiodisp serve``, and what its counts mean.

bench and serve speak the same framing and message format by default; when
they do not, bench says so before measuring (exit status 2). Its table and
its JSON come from one result, which counts only the measured requests.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.leaves.test_cli import CLI, Server, run_cli

COUNT = 400


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*args: str) -> Server:
        server = Server([*CLI, "serve", *args])
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate()


def _bench_json(*args: str) -> Any:
    done = run_cli("bench", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---------------------------------------------------------------------- bench meets serve


def test_bench_measures_a_default_serve(serve: Callable[..., Server]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    doc = _bench_json("--target", server.address, "--count", "200", "--in-flight", "8")
    assert doc["completed"] == 200 and doc["timeouts"] == 0 and doc["mismatched"] == 0
    assert (doc["framing"], doc["format"]) == ("ack", "json")
    _status, out, _err = server.stop()
    # the probe, the warm-up and the 200 measured requests all reached the server
    assert sum(server.echoed(out).values()) > 200


@pytest.mark.parametrize(
    ("serve_args", "bench_args", "says"),
    [
        (["--format", "idprefix"], [], "the message format differs; run it with --format idprefix"),
        ([], ["--format", "idprefix"], "the message format differs; run it with --format json"),
        (["--framing", "raw"], [], "the framing differs; run it with --framing raw"),
        (["--framing", "raw", "--format", "idprefix"], [],
         "the framing and message format differ; run it with --framing raw --format idprefix"),
        (["--key-field", "seq"], ["--key-field", "seq", "--format", "idprefix"],
         "the message format differs; run it with --format json --key-field seq"),
    ],
)
def test_bench_names_the_mismatch_with_its_target(
    serve: Callable[..., Server], serve_args: list[str], bench_args: list[str], says: str
) -> None:
    server = serve("--listen", "127.0.0.1:0", *serve_args)
    done = run_cli("bench", "--target", server.address, "--count", "10", *bench_args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    # the suggested options work
    fixed = says.rpartition("run it with ")[2].split()
    doc = _bench_json("--target", server.address, "--count", "10", *bench_args, *fixed)
    assert doc["completed"] == 10


def test_bench_without_an_echo_server_says_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        done = run_cli("bench", "--target", f"127.0.0.1:{port}", "--count", "10")
    assert done.returncode == 1
    assert f"no echo from udp://127.0.0.1:{port}" in done.stderr
    assert "aiodisp serve" in done.stderr and "Traceback" not in done.stderr


def test_bench_cannot_guess_another_key_field_and_says_what_to_check(
    serve: Callable[..., Server],
) -> None:
    server = serve("--listen", "127.0.0.1:0", "--key-field", "seq")
    done = run_cli("bench", "--target", server.address, "--count", "10")
    assert done.returncode == 1
    assert "the same --key-field and --reply-field" in done.stderr


def test_bench_target_must_be_udp() -> None:
    done = run_cli("bench", "--target", "unix:/tmp/x")
    assert done.returncode == 2
    assert "UDP only" in done.stderr


# ---------------------------------------------------------------------- what is counted


_LOSSY = ("--count", str(COUNT), "--in-flight", "16", "--loss", "0.2", "--seed", "5",
          "--timeout", "0.05", "--warmup", "0.5", "--format", "idprefix")


def test_bench_json_counts_the_measured_requests_only() -> None:
    doc = _bench_json(*_LOSSY)
    stats = doc["stats"]
    assert doc["timeouts"] > 0  # 20 % loss each way, 50 ms to answer: some run out of time
    # every measured request ended once, and the dispatcher's counters say the same:
    # half a second of warm-up load is in neither
    assert doc["completed"] + doc["timeouts"] == COUNT == stats["requests"]
    assert doc["timeouts"] == stats["timeouts"]
    assert doc["completed"] == stats["replies_matched"]
    assert doc["retransmissions"] == stats["retransmissions"]
    assert doc["dropped_by_loss"] > 0


def test_bench_table_counts_the_measured_requests_only() -> None:
    done = run_cli("bench", *_LOSSY)
    assert done.returncode == 0, done.stderr
    completed = re.search(r"completed\W+([\d,]+) in", done.stdout)
    timeouts = re.search(r"timeouts\W+([\d,]+)", done.stdout)
    assert completed is not None and timeouts is not None, done.stdout
    assert int(completed[1].replace(",", "")) + int(timeouts[1].replace(",", "")) == COUNT
