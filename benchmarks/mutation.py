"""Mutation testing: how many plausible bugs planted in a module does a test selection catch?

A small, self-contained mutation tester (standard library only).  It parses the target module, plants one
mutation at a time (an operator, a comparison, a constant, a method name ...), runs the chosen pytest selection
against the mutant in a private copy of the checkout, and prints the mutation score and every surviving mutant.
A mutant is *killed* when the selection fails (or times out); it *survives* when the selection still passes.

Mutations (one per mutant):

* arithmetic ``+ - * / // % **`` and bitwise ``& | ^`` operators, also in ``x op= y``;
* comparisons ``< <= > >= == != in is`` (flipped at the boundary or negated), ``and`` <-> ``or``;
* dropping a unary ``-``, ``not`` or ``~``;
* constants: numbers ``n -> n + 1``, ``True`` <-> ``False``, strings ``"s" -> "XXsXX"``;
* method names ``mean/sum``, ``min/max``, ``minimum/maximum``, ``amin/amax``, ``argmin/argmax``,
  ``clamp_min/clamp_max``, ``softmax/log_softmax``; ``x.detach()`` -> ``x``;
* ``break`` <-> ``continue``.

Not mutated: docstrings, annotations, type unions (``X | None`` outside annotations), imports, ``raise``
statements (error messages), f-strings, ``__all__``, and every line marked ``# pragma: no mutate``.

The copy is made once per worker (tracked and untracked-but-not-ignored files of the git checkout), with a
``../shared`` link next to it when the checkout has one, so tests that read ``../shared`` still find it.  The
tests run with ``PYTHONPATH`` set to the copy, ``PYTHONDONTWRITEBYTECODE=1`` and pytest's cache off, so no stale
bytecode of an earlier mutant is ever imported.  Before any mutant, the unmutated module must pass the selection and
a module that raises on import must fail it (proof that the tests import the copy, not an installed version).
Doctests inside the target module are not part of the selection (pytest would import the module from its own path).

Usage::

    .venv/bin/python benchmarks/mutation.py trl_plugins/advantages.py tests/test_advantages.py
    .venv/bin/python benchmarks/mutation.py trl_plugins/hooks/epo.py "tests/test_hooks.py -k epo" --jobs 2
    .venv/bin/python benchmarks/mutation.py trl_plugins/entropy.py tests/test_entropy.py --list   # mutants only
    .venv/bin/python benchmarks/mutation.py trl_plugins/advantages.py tests/test_advantages.py --only 3,17 --show-diff
    .venv/bin/python benchmarks/mutation.py --suite loss --preload torch,transformers,trl,trl.trainer.grpo_trainer \\
        --json results/mutation

Exit status: 0 when the score reaches ``--min-score`` (default 0, i.e. report only), 1 below it, 2 on a setup error.

Example (the mutants of a tiny source, without running anything):

    >>> [m.describe() for m in enumerate_mutants("def f(a, b):\\n    return a + b if a < 1 else -b\\n")]
    ['2: a + b -> a - b', '2: a < 1 -> a <= 1', '2: 1 -> 2', '2: -b -> b']
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import difflib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Surviving mutants reviewed by hand: ``{module: [{"line", "before", "after", "why"}]}``.
SURVIVORS = Path(__file__).resolve().parent / "mutation_survivors.json"


def reviewed_survivors(path: Path, module: str) -> dict[tuple[int, str, str], str]:
    """``{(line, before, after): why}`` of ``module``'s reviewed survivors in ``path`` (empty if the file is missing).

    Example:
        >>> isinstance(reviewed_survivors(SURVIVORS, "trl_plugins/entropy.py"), dict)
        True
    """
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text()).get(module, [])
    return {(int(e["line"]), e["before"], e["after"]): e["why"] for e in entries}


AEPO_TESTS = "tests/test_aepo.py tests/test_aepo_rounds.py tests/test_hook_interface.py"
HOOK_TESTS = "tests/test_epo.py tests/test_hook_interface.py tests/test_erc.py tests/test_hooks.py tests/test_hooks_formulas.py"
#: Named sets of (module, pytest selection) run by ``--suite NAME``.  ``loss``: the modules issue 15 holds to at least
#: 90 % killed -- the advantage estimators, the loss hooks, the entropy path and the loss reduction -- each with the
#: fast test selection that guards it.
SUITES: dict[str, list[tuple[str, str]]] = {
    "loss": [
        ("trl_plugins/advantages.py", "tests/test_advantages.py"),
        ("trl_plugins/hooks/base.py", HOOK_TESTS),
        ("trl_plugins/hooks/epo.py", HOOK_TESTS),
        ("trl_plugins/hooks/erc.py", HOOK_TESTS),
        ("trl_plugins/aepo/loss.py", AEPO_TESTS),
        ("trl_plugins/aepo/config.py", AEPO_TESTS),
        ("trl_plugins/aepo/branching.py", AEPO_TESTS),
        ("trl_plugins/hooks/reductions.py", "tests/test_loss_reduction.py"),
        ("trl_plugins/hooks/compose.py", "tests/test_loss_reduction.py"),
        ("trl_plugins/entropy.py", "tests/test_entropy.py"),
    ],
}

BINOP_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Mult,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
METHOD_SWAPS = {
    "mean": "sum",
    "sum": "mean",
    "min": "max",
    "max": "min",
    "minimum": "maximum",
    "maximum": "minimum",
    "amin": "amax",
    "amax": "amin",
    "argmin": "argmax",
    "argmax": "argmin",
    "clamp_min": "clamp_max",
    "clamp_max": "clamp_min",
    "softmax": "log_softmax",
    "log_softmax": "softmax",
}
PRAGMA = "pragma: no mutate"


@dataclass
class Mutant:
    """One planted change: ``apply`` mutates the node found at ``node_index`` of a fresh copy of the tree."""

    index: int
    line: int
    before: str
    after: str
    node_index: int
    apply: Callable[[ast.AST], ast.AST] = field(repr=False)

    def describe(self) -> str:
        return f"{self.line}: {self.before} -> {self.after}"


def _skipped_nodes(tree: ast.Module, source_lines: list[str]) -> set[int]:
    """ids of nodes whose subtree is never mutated (docstrings, annotations, imports, raise, f-strings, pragma)."""
    skip: set[int] = set()

    def skip_tree(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skip_tree(body[0])  # docstring
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Raise | ast.JoinedStr):
            skip_tree(node)
        elif isinstance(node, ast.arg):
            skip_tree(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip_tree(node.returns)
        elif isinstance(node, ast.AnnAssign):
            skip_tree(node.annotation)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip_tree(node)
        lineno = getattr(node, "lineno", None)
        if lineno is not None and PRAGMA in source_lines[lineno - 1]:
            skip_tree(node)
    return skip


TYPE_NAMES = {"int", "float", "str", "bool", "bytes", "list", "tuple", "dict", "set", "frozenset", "type", "object"}


def _looks_like_type(node: ast.AST) -> bool:
    """``Sequence[float]``, ``torch.Tensor``, ``list``, ``None``: operands of a ``|`` that builds a type union."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):
        return _looks_like_type(node.value)
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES or node.id[:1].isupper()
    if isinstance(node, ast.Attribute):
        return node.attr[:1].isupper()
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _looks_like_type(node.left) and _looks_like_type(node.right)
    return False


def _mutations(node: ast.AST) -> Iterator[tuple[str, Callable[[ast.AST], ast.AST]]]:
    """(description of the mutated node, function that mutates a copy of ``node``) for every mutation of ``node``."""

    def replace_op(op_type: type) -> Callable[[ast.AST], ast.AST]:
        def apply(n: ast.AST) -> ast.AST:
            n.op = op_type()  # type: ignore[attr-defined]
            return n

        return apply

    if isinstance(node, ast.BinOp) and _looks_like_type(node):
        return  # a type union (``X | None``, ``list | tuple``): mutating it only breaks the import or isinstance
    if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in BINOP_SWAPS:
        yield "", replace_op(BINOP_SWAPS[type(node.op)])
    elif isinstance(node, ast.BoolOp):
        yield "", replace_op(ast.Or if isinstance(node.op, ast.And) else ast.And)
    elif isinstance(node, ast.Compare):
        for k, op in enumerate(node.ops):
            new_op = COMPARE_SWAPS.get(type(op))
            if new_op is not None:

                def apply(n: ast.AST, k: int = k, new: type = new_op) -> ast.AST:
                    n.ops[k] = new()  # type: ignore[attr-defined]
                    return n

                yield "", apply
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not | ast.Invert):
        yield "", lambda n: n.operand  # type: ignore[attr-defined]
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield "", lambda n: ast.Constant(not n.value)  # type: ignore[attr-defined]
        elif isinstance(value, int | float):
            yield "", lambda n: ast.Constant(n.value + 1)  # type: ignore[attr-defined]
        elif isinstance(value, str):
            yield "", lambda n: ast.Constant(f"XX{n.value}XX")  # type: ignore[attr-defined]
    elif isinstance(node, ast.Attribute) and node.attr in METHOD_SWAPS:

        def swap(n: ast.AST) -> ast.AST:
            n.attr = METHOD_SWAPS[n.attr]  # type: ignore[attr-defined]
            return n

        yield "", swap
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "detach"
        and not node.args
        and not node.keywords
    ):
        yield "", lambda n: n.func.value  # type: ignore[attr-defined]
    elif isinstance(node, ast.Break):
        yield "", lambda n: ast.Continue()
    elif isinstance(node, ast.Continue):
        yield "", lambda n: ast.Break()


def _replace(tree: ast.AST, target: ast.AST, new: ast.AST) -> None:
    """Put ``new`` where ``target`` is in ``tree`` (no-op when ``new`` is ``target``, i.e. mutated in place)."""
    if new is target:
        return
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, name, new)
                return
            if isinstance(value, list):
                for k, item in enumerate(value):
                    if item is target:
                        value[k] = new
                        return
    raise RuntimeError("mutation target not found in its tree")


def _unparse(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 80 else text[:77] + "..."


def enumerate_mutants(source: str) -> list[Mutant]:
    """Every mutant of ``source``, in source order (line, then position).

    Example:
        >>> [m.describe() for m in enumerate_mutants("x = not ready")]
        ['1: not ready -> ready']
    """
    tree = ast.parse(source)
    skip = _skipped_nodes(tree, source.splitlines())
    nodes = list(ast.walk(tree))
    found = []
    for node_index, node in enumerate(nodes):
        if id(node) in skip:
            continue
        for _, apply in _mutations(node):
            before = _unparse(node)
            mutated = apply(copy.deepcopy(node))
            after = _unparse(mutated)
            if before == after:
                continue
            found.append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0), node_index, before, after, apply))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    return [
        Mutant(index=k + 1, line=line, before=before, after=after, node_index=node_index, apply=apply)
        for k, (line, _, node_index, before, after, apply) in enumerate(found)
    ]


def mutant_source(source: str, mutant: Mutant) -> str:
    """The module text with ``mutant`` applied (unparsed from the AST; comments and formatting are not kept)."""
    tree = ast.parse(source)
    target = list(ast.walk(tree))[mutant.node_index]
    _replace(tree, target, mutant.apply(target))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Running


def _checkout_files(root: Path) -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        return [Path(p) for p in out.decode().split("\0") if p and (root / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        ignored = {".git", ".venv", "__pycache__", ".cache", ".pytest_cache", "node_modules"}
        return [
            p.relative_to(root)
            for p in root.rglob("*")
            if p.is_file() and not ignored.intersection(p.relative_to(root).parts)
        ]


def make_copy(root: Path, workdir: Path, files: list[Path]) -> Path:
    """A private copy of the checkout in ``workdir/repo`` (and ``workdir/shared`` -> ``root/../shared`` if present)."""
    dest = workdir / "repo"
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    shared = root.parent / "shared"
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared)
    return dest


@dataclass
class Outcome:
    status: str  # "killed", "survived", "timeout"
    seconds: float
    tail: str = ""


def run_selection(copy_root: Path, selection: list[str], python: str, timeout: float) -> Outcome:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy_root), *filter(None, [env.get("PYTHONPATH", "")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *selection]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy_root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome("timeout", time.monotonic() - start)
    seconds = time.monotonic() - start
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return _outcome(proc.returncode, seconds, tail, selection)


# A fork server: imports the heavy third-party modules once, then forks one pytest run per mutant.  It must not
# import anything from the copy (the forked child imports the mutant fresh); it checks that after preloading.
_SERVER = r"""
import importlib, io, json, os, signal, sys, time
sys.dont_write_bytecode = True
root = os.path.realpath(sys.argv[1])
for name in filter(None, sys.argv[2].split(",")):
    importlib.import_module(name)
import pytest
# torch.ops / torch.classes carry a relative __file__: only absolute paths can point into the copy
files = {m: getattr(mod, "__file__", None) for m, mod in list(sys.modules.items())}
leaked = sorted(m for m, f in files.items()
                if isinstance(f, str) and os.path.isabs(f) and os.path.realpath(f).startswith(root + os.sep))
if leaked:
    print(json.dumps({"error": "preloading imported modules of the checkout: " + ", ".join(leaked[:5])}), flush=True)
    sys.exit(2)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    log = request["log"]
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.chdir(root)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1); os.dup2(fd, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0), write_through=True)
        sys.stderr = sys.stdout
        try:
            code = pytest.main(request["args"])
        except BaseException:
            code = 3
        sys.stdout.flush()
        os._exit(int(code))
    deadline = start + request["timeout"]
    status = None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        elif time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.02)
    print(json.dumps({"code": status, "seconds": time.monotonic() - start}), flush=True)
"""


class ForkServer:
    """One interpreter per copy that has imported ``preload`` once and forks a pytest run per mutant."""

    def __init__(self, copy_root: Path, python: str, preload: str):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(copy_root), *filter(None, [env.get("PYTHONPATH", "")])])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.copy_root = copy_root
        self.log = copy_root.parent / "pytest.log"
        self.process = subprocess.Popen(
            [python, "-c", _SERVER, str(copy_root), preload], cwd=copy_root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        hello = json.loads(self.process.stdout.readline() or '{"error": "the fork server exited"}')  # type: ignore[union-attr]
        if "error" in hello:
            self.close()
            raise SystemExit(f"--preload: {hello['error']}")

    def run(self, selection: list[str], timeout: float) -> Outcome:
        args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *selection]
        request = {"args": args, "timeout": timeout, "log": str(self.log)}
        self.process.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        reply = json.loads(self.process.stdout.readline())  # type: ignore[union-attr]
        tail = "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-15:]) if self.log.exists() else ""
        if reply["code"] == "timeout":
            return Outcome("timeout", reply["seconds"], tail)
        return _outcome(reply["code"], reply["seconds"], tail, selection)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _outcome(code: int, seconds: float, tail: str, selection: list[str]) -> Outcome:
    if code == 0:
        return Outcome("survived", seconds, tail)
    if code == 5:
        raise SystemExit(f"the selection {selection} collected no tests")
    # 1-3: tests failed / interrupted (e.g. import error) / internal error; anything else: a crashed interpreter
    return Outcome("killed", seconds, tail)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a SIGTERM unwinds like Ctrl-C, so the temporary copies are removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("module", nargs="?", help="path of the module to mutate, relative to the checkout (e.g. "
                        "trl_plugins/hooks/epo.py)")
    parser.add_argument("selection", nargs="?", help='pytest arguments as one string (e.g. "tests/test_hooks.py -k epo")')
    parser.add_argument("--suite", choices=sorted(SUITES), help="run every (module, selection) of this suite and print "
                        "a summary; --json is then a folder (one file per module)")
    parser.add_argument("--root", type=Path, default=REPO, help="checkout to copy (default: this repository)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel, one copy each (default 1)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per mutant (default 3 x baseline + 10)")
    parser.add_argument("--only", default="", help="comma-separated mutant numbers to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--show-diff", action="store_true", help="print the unified diff of every surviving mutant")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file")
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 below this mutation score in %% (default 0)")
    parser.add_argument("--survivors", type=Path, default=SURVIVORS,
                        help=f"reviewed survivors with the reason each is equivalent or harmless (default {SURVIVORS.name})")
    parser.add_argument("--preload", default="", help="comma-separated third-party modules a fork server imports once "
                        "(e.g. torch,transformers,trl); each mutant's pytest then runs in a fork of it")
    args = parser.parse_args(argv)
    if args.suite:
        if args.module or args.selection or args.only or args.list:
            parser.error("--suite runs its own modules and selections: give no module, selection, --only or --list")
        return run_suite(args, list(sys.argv[1:] if argv is None else argv))
    if not args.module or not args.selection:
        parser.error("give a module and a selection, or --suite NAME")

    root = args.root.resolve()
    module_path = root / args.module
    if not module_path.is_file():
        print(f"no such module: {module_path}", file=sys.stderr)
        return 2
    source = module_path.read_text()
    mutants = enumerate_mutants(source)
    if args.only:
        wanted = {int(x) for x in args.only.split(",") if x.strip()}
        mutants = [m for m in mutants if m.index in wanted]
    if args.list:
        for m in mutants:
            print(f"#{m.index:<4} {m.describe()}")
        print(f"{len(mutants)} mutants")
        return 0
    selection = shlex.split(args.selection)
    rel = module_path.relative_to(root).as_posix()
    if any(Path(s).as_posix() == rel for s in selection):
        print("the selection must not name the target module itself (pytest would import the original)", file=sys.stderr)
        return 2

    files = _checkout_files(root)
    if Path(rel) not in files:
        files.append(Path(rel))
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp, contextlib.ExitStack() as stack:
        jobs = max(1, args.jobs)
        copies = [make_copy(root, Path(tmp) / f"w{k}", files) for k in range(jobs)]
        target = [c / rel for c in copies]
        servers = [ForkServer(c, args.python, args.preload) for c in copies] if args.preload else []
        for server in servers:
            stack.callback(server.close)

        def run_selection_in(slot: int, timeout: float) -> Outcome:
            if servers:
                return servers[slot].run(selection, timeout)
            return run_selection(copies[slot], selection, args.python, timeout)

        # 1. the unmutated module (as the tool writes it: unparsed) must pass; 2. a module that raises must fail
        target[0].write_text(ast.unparse(ast.parse(source)) + "\n")
        baseline = run_selection_in(0, timeout=args.timeout or 1800)
        if baseline.status != "survived":
            print(f"the selection does not pass on the unmutated module ({baseline.status}):\n{baseline.tail}")
            return 2
        target[0].write_text("raise RuntimeError('mutation.py import probe')\n")
        probe = run_selection_in(0, timeout=args.timeout or 1800)
        if probe.status == "survived":
            print(f"the selection passes without importing {rel} from the copy (an installed copy wins?)")
            return 2
        timeout = args.timeout or 3 * baseline.seconds + 10
        print(f"{rel}: {len(mutants)} mutants; selection {args.selection!r} takes {baseline.seconds:.1f}s "
              f"(timeout {timeout:.0f}s per mutant, {jobs} job(s))", flush=True)  # fmt: skip

        free = list(range(jobs))
        results: dict[int, Outcome] = {}

        def run_one(m: Mutant) -> tuple[Mutant, Outcome]:
            slot = free.pop()
            try:
                target[slot].write_text(mutant_source(source, m))
                return m, run_selection_in(slot, timeout)
            finally:
                free.append(slot)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for done, (m, outcome) in enumerate(pool.map(run_one, mutants), 1):
                results[m.index] = outcome
                mark = {"killed": "killed  ", "timeout": "timeout ", "survived": "SURVIVED"}[outcome.status]
                print(f"[{done}/{len(mutants)}] {mark} #{m.index:<4} {m.describe()}  ({outcome.seconds:.1f}s)", flush=True)

    survivors = [m for m in mutants if results[m.index].status == "survived"]
    killed = len(mutants) - len(survivors)
    score = 100.0 * killed / len(mutants) if mutants else 100.0
    timeouts = sum(1 for o in results.values() if o.status == "timeout")
    print(f"\nmutation score {rel}: {score:.1f}% ({killed}/{len(mutants)} killed, {timeouts} by timeout) "
          f"in {time.monotonic() - started:.0f}s")  # fmt: skip
    reviewed = reviewed_survivors(args.survivors, rel)
    why = {m.index: reviewed.get((m.line, m.before, m.after)) for m in survivors}
    unexplained = [m for m in survivors if why[m.index] is None]
    if survivors:
        print(f"surviving mutants ({len(survivors) - len(unexplained)} reviewed in {args.survivors.name}, "
              f"{len(unexplained)} not):")
        for m in survivors:
            print(f"  #{m.index:<4} line {m.describe()}  -- {why[m.index] or 'NOT REVIEWED: add a test or an entry'}")
            if args.show_diff:
                diff = difflib.unified_diff(
                    ast.unparse(ast.parse(source)).splitlines(),
                    mutant_source(source, m).splitlines(),
                    lineterm="",
                    n=1,
                )
                print("\n".join("      " + d for d in list(diff)[2:]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "module": rel,
                    "selection": args.selection,
                    "score": score,
                    "killed": killed,
                    "total": len(mutants),
                    "unexplained": len(unexplained),
                    "mutants": [
                        {"index": m.index, "line": m.line, "before": m.before, "after": m.after,
                         "status": results[m.index].status, "why": why.get(m.index)}  # fmt: skip
                        for m in mutants
                    ],
                },
                indent=1,
            )
        )
    return 0 if score >= args.min_score else 1


def run_suite(args: argparse.Namespace, argv: list[str]) -> int:
    """Every module of ``args.suite`` against its selection, one after another, then a table of the scores."""
    passthrough, skip = [], False
    for arg in argv:  # this run's options minus --suite and --json (set per module below)
        if skip:
            skip = False
        elif arg in ("--suite", "--json"):
            skip = True
        elif not arg.startswith(("--suite=", "--json=")):
            passthrough.append(arg)
    folder = args.json or Path(tempfile.mkdtemp(prefix="mutation-suite-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, worst = [], 0
    for module, selection in SUITES[args.suite]:
        out = folder / (Path(module).stem + ".json")
        print(f"\n=== {module}  [{selection}]", flush=True)
        code = main([module, selection, *passthrough, "--json", str(out)])
        if code == 2 or not out.exists():
            rows.append((module, selection, None, 0, 0, 0, 0))
            worst = 2
            continue
        result = json.loads(out.read_text())
        survivors = sum(m["status"] == "survived" for m in result["mutants"])
        rows.append((module, selection, result["score"], result["killed"], result["total"], survivors,
                     result.get("unexplained", survivors)))
        worst = max(worst, code)
    print(f"\nmutation suite {args.suite!r}:\n")
    print("| module | selection | score | killed/total | survivors (not reviewed) |")
    print("|---|---|---|---|---|")
    for module, selection, score, killed, total, survivors, unexplained in rows:
        shown = "setup error" if score is None else f"{score:.1f}%"
        print(f"| {module} | {selection} | {shown} | {killed}/{total} | {survivors} ({unexplained}) |")
    killed_all, total_all = sum(r[3] for r in rows), sum(r[4] for r in rows)
    if total_all:
        print(f"\nall modules: {100.0 * killed_all / total_all:.1f}% ({killed_all}/{total_all}); per-module JSON in {folder}")
    return worst


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
