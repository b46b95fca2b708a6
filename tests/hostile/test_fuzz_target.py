"""The atheris fuzz target (fuzz/fuzz_receive.py) runs without atheris and finds nothing.

Coverage-guided fuzzing is optional (see fuzz/README.md); this keeps its
target working: the seed inputs reach the branches they are named after, and
random inputs raise nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp._core import endpoint as endpoint_module

TARGET = Path(__file__).parent.parent.parent / "fuzz" / "fuzz_receive.py"


def load_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiodisp_fuzz_receive", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


target = load_target()


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every Endpoint the target makes, to look at its counters."""
    made: list[Any] = []
    original = endpoint_module.Endpoint

    class Recorded(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(target, "Endpoint", Recorded)
    return made


EXPECTED = {
    "request-then-reply": "replies_matched",
    "forged-reply": "wrong_source",
    "raw-reply-without-is-reply": "replies_matched",
    "raw-stranger-with-our-key": "delivered",
    "notify-acked": "acks_received",
    "notify-forged-ack": "unknown_acks",
    "garbage": "header_errors",
    "retransmit-timeout": "timeouts",
    "duplicate": "duplicates",
    "adapter-raises": "decode_errors",
    "queue-full": "queue_drops",
    "bundle": "bundles_received",
    "truncated-bundle": "header_errors",
}


def test_each_seed_reaches_the_branch_it_is_named_after(endpoints: list[Any]) -> None:
    seeds = dict(target.seeds())
    assert set(seeds) == set(EXPECTED)
    for name, data in seeds.items():
        endpoints.clear()
        target.TestOneInput(data)
        assert getattr(endpoints[0].counters, EXPECTED[name]) >= 1, name


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_inputs_find_nothing(data: bytes) -> None:
    target.TestOneInput(data)


def test_the_script_writes_seeds_and_replays_them(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert target.main(["--seeds", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXPECTED)
    assert target.main([str(p) for p in tmp_path.iterdir()]) == 0
    assert f"{2 * len(EXPECTED)} inputs replayed: no finding" in capsys.readouterr().out
    assert target.main(["--random", "200", "1"]) == 0


def test_a_broken_invariant_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    # The target must be able to fail: hide one outcome counter from its check.
    monkeypatch.setattr(target, "OUTCOMES", tuple(o for o in target.OUTCOMES
                                                  if o != "header_errors"))
    with pytest.raises(AssertionError, match="unaccounted"):
        target.TestOneInput(dict(target.seeds())["garbage"])
