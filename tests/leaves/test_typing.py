"""mypy --strict on small user programs: the message type flows from the adapter to every call.

The programs live in ``typing_cases/`` (see its README): ``ok_*.py`` must pass with
no error and run; ``bad_*.py`` must fail with exactly the errors marked on their
lines (``# E: <code> <text>``). One mypy run checks them all, with a fresh cache.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("typing_cases")
OK = sorted(CASES.glob("ok_*.py"))
BAD = sorted(CASES.glob("bad_*.py"))
TIMEOUT = 110

MARK = re.compile(r"#\s*E:\s*(?P<code>[a-z0-9-]+)\b\s*(?P<text>.*?)\s*$")
REPORT = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+): (?P<severity>error|note|warning): "
    r"(?P<message>.*?)(?:  \[(?P<code>[a-z0-9-]+)\])?$"
)
SUMMARY = re.compile(r"\bchecked (\d+) source files?\)$|^Success: no issues found in (\d+) source")


@dataclass(frozen=True)
class Expected:
    line: int
    code: str
    text: str  # pieces separated by "..." must appear in the message in this order

    def matches(self, message: str) -> bool:
        at = 0
        for piece in (p.strip() for p in self.text.split("...")):
            found = message.find(piece, at)
            if found < 0:
                return False
            at = found + len(piece)
        return True


@dataclass(frozen=True)
class Error:
    line: int
    code: str
    message: str


def expected_errors(source: str) -> list[Expected]:
    """The ``# E:`` markers of a program: trailing ones mark their own line, a
    marker alone on its line marks the next line of code."""
    out: list[Expected] = []
    pending: list[tuple[str, str]] = []
    for number, line in enumerate(source.splitlines(), start=1):
        mark = MARK.search(line)
        code_part = line[: mark.start()] if mark else line
        if mark:
            pending.append((mark["code"], mark["text"]))
        if code_part.strip() and not code_part.lstrip().startswith("#"):
            out.extend(Expected(number, code, text) for code, text in pending)
            pending = []
    assert not pending, f"a marker at the end of the file marks no line: {pending}"
    return out


@dataclass(frozen=True)
class MypyRun:
    returncode: int
    stdout: str
    stderr: str
    errors: dict[str, list[Error]]  # by case file name
    checked: int | None


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    cache = tmp_path_factory.mktemp("mypy-cache")
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}  # this tree's aiodisp, not another
    cmd = [
        sys.executable, "-m", "mypy",
        "--config-file", str(ROOT / "pyproject.toml"),
        "--strict", "--cache-dir", str(cache),
        "--no-pretty", "--no-color-output", "--show-error-codes",
    ]  # fmt: skip
    cases = [str(p.relative_to(ROOT)) for p in OK + BAD]
    proc = subprocess.run(
        [*cmd, *cases], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    errors: dict[str, list[Error]] = {p.name: [] for p in OK + BAD}
    checked = None
    for line in proc.stdout.splitlines():
        summary = SUMMARY.search(line)
        if summary:
            checked = int(summary[1] or summary[2])
            continue
        report = REPORT.match(line)
        if report is None or report["severity"] != "error":
            continue
        name = Path(report["file"]).name
        if Path(report["file"]).parent.name == CASES.name and name in errors:
            errors[name].append(Error(int(report["line"]), report["code"] or "", report["message"]))
    return MypyRun(proc.returncode, proc.stdout, proc.stderr, errors, checked)


def test_the_cases_exist() -> None:
    assert [p.name for p in OK] == ["ok_id_prefix.py", "ok_json.py", "ok_own_adapter.py"]
    assert [p.name for p in BAD] == ["bad_adapter.py", "bad_async.py", "bad_sync.py"]


def test_markers_are_read_as_written() -> None:
    source = (
        "x = 1  # E: arg-type one ... two\n"
        "# E: assignment first\n"
        "# E: misc second\n"
        "\n"
        "# a plain comment\n"
        "y = 2\n"
        "z = 3\n"
    )
    assert expected_errors(source) == [
        Expected(1, "arg-type", "one ... two"),
        Expected(6, "assignment", "first"),
        Expected(6, "misc", "second"),
    ]
    assert Expected(1, "c", "one ... two").matches("one, then two")
    assert not Expected(1, "c", "one ... two").matches("two, then one")
    with pytest.raises(AssertionError):
        expected_errors("x = 1\n# E: misc dangling\n")


def test_mypy_checked_every_case(mypy_run: MypyRun) -> None:
    # 1: errors found (the bad cases); 2 would be a crash or a usage error
    assert mypy_run.returncode == 1, mypy_run.stdout + mypy_run.stderr
    assert mypy_run.checked == len(OK) + len(BAD), mypy_run.stdout[-2000:]


@pytest.mark.parametrize("case", OK, ids=lambda p: p.name)
def test_correct_program_type_checks(case: Path, mypy_run: MypyRun) -> None:
    assert mypy_run.errors[case.name] == []


@pytest.mark.parametrize("case", BAD, ids=lambda p: p.name)
def test_wrong_program_fails_exactly_where_marked(case: Path, mypy_run: MypyRun) -> None:
    expected = expected_errors(case.read_text(encoding="utf-8"))
    assert expected, f"{case.name} marks no error"
    got = mypy_run.errors[case.name]
    listing = "\n".join(f"  {e.line}: [{e.code}] {e.message}" for e in got)
    assert Counter((e.line, e.code) for e in got) == Counter(
        (x.line, x.code) for x in expected
    ), f"{case.name}: mypy reported\n{listing}"
    for x in expected:
        assert any(e.line == x.line and e.code == x.code and x.matches(e.message) for e in got), (
            f"{case.name}:{x.line}: no [{x.code}] error containing {x.text!r}; mypy said\n{listing}"
        )


@pytest.mark.parametrize("case", OK, ids=lambda p: p.name)
def test_correct_program_runs(case: Path) -> None:
    # what the types claim is what happens (a memory pair, async and blocking)
    runpy.run_path(str(case), run_name="__main__")
