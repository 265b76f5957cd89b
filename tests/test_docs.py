"""Every code block of README.md and docs/*.md runs, so the documentation cannot drift from the code.

The ```python blocks of a page run in order in one fresh interpreter (a page reads like a session: a
later block may use an earlier block's names), in a temporary working folder that links the
repository's ``examples/`` and ``benchmarks/``.  ```bash blocks run with ``bash -e`` there, with the
virtualenv's ``bin`` first on ``PATH`` (``.venv/bin/`` in a command means that folder).

What cannot run here is marked in the page itself, with a reason, and reported as a skipped test:

* ``# doc-test: skip (reason)`` as the first line of a block skips the block;
* the same comment at the end of a line skips that line (it becomes ``pass``, or ``:`` in bash), e.g. the ``.train()`` of a
  200-step run whose configuration is still checked.

Blocks in other languages (``yaml``, plain text) are not code.  The page's time limit is
:data:`PAGE_TIMEOUT_S`, or its entry in :data:`PAGE_TIMEOUTS_S`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PAGE_TIMEOUT_S = 240
# vllm.md starts three vLLM engines (SmolLM2: 20-60 s on a CPU, more on a loaded one).
PAGE_TIMEOUTS_S = {"vllm.md": 900}
SKIP = re.compile(r"#\s*doc-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    page: Path
    line: int  # line of the opening fence
    lang: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    def skip_reason(self) -> str | None:
        first = self.code.strip().splitlines()[0] if self.code.strip() else ""
        match = SKIP.search(first)
        if match and first.lstrip().startswith("#"):
            return match.group("reason") or ""
        return None

    def runnable_code(self) -> str:
        """The code with every line marked ``doc-test: skip`` replaced by ``pass`` (keeping its indentation)."""
        out = []
        for line in self.code.splitlines():
            if SKIP.search(line) and not line.lstrip().startswith("#"):
                indent = line[: len(line) - len(line.lstrip())]
                out.append(f"{indent}{'pass' if self.lang in ('python', 'py') else ':'}  # skipped by the doc test")
            else:
                out.append(line)
        return "\n".join(out) + "\n"


def code_blocks(page: Path) -> list[Block]:
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and lang is None:
            lang, start, body, indent = fence.group("lang") or "text", number, [], len(fence.group("indent"))
        elif fence and lang is not None:
            blocks.append(Block(page, start, lang, textwrap.dedent("\n".join(body))))
            lang = None
        elif lang is not None:
            body.append(line[indent:] if line[:indent].strip() == "" else line)
    return blocks


ALL = [b for page in PAGES for b in code_blocks(page) if b.lang in ("python", "py", "bash", "sh", "shell")]
SKIPPED = [b for b in ALL if b.skip_reason() is not None]
RUN_PAGES = sorted({b.page for b in ALL if b.skip_reason() is None})


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "benchmarks", "scripts"):
        (work / name).symlink_to(REPO / name)
    return work


def _environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("AGENTGYM_CACHE", str(REPO / ".cache" / "tests"))
    env["MPLBACKEND"] = "Agg"
    return env


def _runner(blocks: list[Block]) -> str:
    """A script that runs the page's Python blocks in one namespace, each compiled under its doc location."""
    # Under the main guard: worker processes that a block starts import this script again.
    lines = ["if __name__ == '__main__':", "    namespace = {'__name__': '__main__'}"]
    for block in blocks:
        lines.append(f"    print('--- running {block.name}', flush=True)")
        lines.append(f"    exec(compile({block.runnable_code()!r}, {block.name!r}, 'exec'), namespace)")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_code_blocks_of_a_page_run(page: Path, tmp_path: Path) -> None:
    blocks = [b for b in ALL if b.page == page and b.skip_reason() is None]
    work = _workdir(tmp_path)
    env = _environment(work)
    timeout_s = PAGE_TIMEOUTS_S.get(page.name, PAGE_TIMEOUT_S)
    python = [b for b in blocks if b.lang in ("python", "py")]
    if python:
        script = work / "doc_blocks.py"
        script.write_text(_runner(python))
        result = subprocess.run(
            [sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s
        )
        assert result.returncode == 0, f"{page.name}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    for block in (b for b in blocks if b.lang not in ("python", "py")):
        code = block.runnable_code().replace(".venv/bin/", "")
        result = subprocess.run(
            ["bash", "-e", "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s
        )
        assert result.returncode == 0, f"{block.name}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


@pytest.mark.parametrize("block", SKIPPED, ids=lambda b: b.name)
def test_blocks_marked_as_skipped_say_why(block: Block) -> None:
    reason = block.skip_reason()
    assert reason, f"{block.name}: '# doc-test: skip' needs a reason in parentheses"
    pytest.skip(f"{block.name}: {reason}")


def test_every_code_block_is_run_or_skipped_with_a_reason() -> None:
    unmarked_lines = [
        f"{b.name}: {line.strip()}"
        for b in ALL
        for line in b.code.splitlines()
        if "doc-test" in line and not SKIP.search(line)
    ]
    assert not unmarked_lines, f"malformed doc-test markers: {unmarked_lines}"
    assert len(ALL) > 20 and len(SKIPPED) < len(ALL) / 2
