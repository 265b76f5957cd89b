"""Procedural bugs: small AST-guided edits of one source line (SWE-smith's procedural modifiers, Docker-free).

``swesmith``'s generators need libcst and tree-sitter grammars for ten languages; these four cover its
Python operation / control-flow modifiers with the standard library's :mod:`ast`, and edit the source
text at the node's position so that the rest of the file (comments, formatting) is untouched and the
gold patch is a one-line diff.

* ``operator_change``: ``+``/``-``, ``*``/``//``, ``==``/``!=``, ``<``/``<=``, ``and``/``or``, ``in``/``not in``, ...
* ``off_by_one``: an integer literal ``n`` becomes ``n + 1`` or ``n - 1``;
* ``removed_condition``: one operand of an ``and``/``or`` in an ``if``/``while`` test is dropped, or the test negated;
* ``swapped_arguments``: the first two positional arguments of a call are swapped.

Example:
    >>> source = "def f(a, b):\\n    return a - b\\n"
    >>> [m.kind for m in candidate_mutations(source)]
    ['operator_change']
    >>> candidate_mutations(source)[0].apply(source)
    'def f(a, b):\\n    return a + b\\n'
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

KINDS = ("operator_change", "off_by_one", "removed_condition", "swapped_arguments")

_BINARY = {"+": "-", "-": "+", "*": "//", "//": "*", "%": "//", "<<": ">>", ">>": "<<", "&": "|", "|": "&"}
_COMPARE = {
    "==": "!=",
    "!=": "==",
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    " in ": " not in ",
    " not in ": " in ",
    " is ": " is not ",
    " is not ": " is ",
}
_BOOL = {" and ": " or ", " or ": " and "}


@dataclass(frozen=True)
class Mutation:
    """One edit of one line: the line's text ``before`` and ``after`` (1-based ``line``)."""

    kind: str
    line: int
    before: str
    after: str

    def apply(self, source: str) -> str:
        """``source`` with the edit made (the line must still read ``before``)."""
        lines = source.splitlines(True)
        current = lines[self.line - 1]
        ending = current[len(current.rstrip("\r\n")) :]
        if current.rstrip("\r\n") != self.before:
            raise ValueError(f"line {self.line} no longer reads {self.before!r}")
        lines[self.line - 1] = self.after + ending
        return "".join(lines)

    def describe(self) -> str:
        return f"{self.kind} at line {self.line}: {self.before.strip()!r} -> {self.after.strip()!r}"


def candidate_mutations(source: str) -> list[Mutation]:
    """Every mutation of ``source`` these modifiers can make, in source order (deterministic)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[Mutation] = []
    docstrings = _docstring_nodes(tree)
    # Only lines inside functions: a bug in module-level code breaks the import, and with it every test.
    in_functions = {
        line
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for line in range(node.body[0].lineno, node.end_lineno + 1)  # type: ignore[operator]
    }
    for node in ast.walk(tree):
        # An if/while statement spans its body; only its test has to fit on one line.
        span = node.test if isinstance(node, (ast.If, ast.While)) else node
        if id(node) in docstrings or not hasattr(span, "lineno") or span.lineno != getattr(span, "end_lineno", None):
            continue
        text = lines[node.lineno - 1]
        if (
            node.lineno not in in_functions or not text.isascii()
        ):  # ast offsets count UTF-8 bytes; on ASCII lines they are character offsets
            continue
        for kind, after in _edits(node, text):
            if after != text and _parses(source, node.lineno, after):
                found.append(Mutation(kind, node.lineno, text, after))
    unique = {(m.line, m.after): m for m in found}
    return sorted(unique.values(), key=lambda m: (m.line, m.kind, m.after))


def _docstring_nodes(tree: ast.AST) -> set[int]:
    nodes = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            nodes.add(id(body[0].value))
    return nodes


def _segment(node: ast.AST, text: str) -> tuple[int, int]:
    return node.col_offset, node.end_col_offset  # type: ignore[attr-defined]


def _edits(node: ast.AST, text: str) -> list[tuple[str, str]]:
    edits: list[tuple[str, str]] = []
    if isinstance(node, (ast.BinOp, ast.Compare, ast.BoolOp)):
        start, end = _segment(node, text)
        segment = text[start:end]
        table = _BINARY if isinstance(node, ast.BinOp) else _COMPARE if isinstance(node, ast.Compare) else _BOOL
        for old, new in table.items():
            op = f" {old.strip()} " if isinstance(node, ast.BinOp) else old
            if segment.count(op) == 1 and (
                isinstance(node, ast.BinOp)
                or old.strip() not in ("in", "is")
                or f" not{op}" not in segment
                and f"{op.rstrip()} not " not in segment
            ):
                new_op = f" {new.strip()} " if isinstance(node, ast.BinOp) else new
                edits.append(("operator_change", text[:start] + segment.replace(op, new_op) + text[end:]))
                break
    if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value <= 16:
        start, end = _segment(node, text)
        if text[start:end] == str(node.value):
            for value in (node.value + 1, node.value - 1):
                if value >= 0:
                    edits.append(("off_by_one", text[:start] + str(value) + text[end:]))
                    break
    if isinstance(node, (ast.If, ast.While)) and node.test.lineno == node.lineno == node.test.end_lineno:
        start, end = _segment(node.test, text)
        test = node.test
        if isinstance(test, ast.BoolOp) and len(test.values) == 2:
            first = test.values[0]
            edits.append(
                ("removed_condition", text[:start] + text[first.col_offset : first.end_col_offset] + text[end:])
            )
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            operand = test.operand
            edits.append(
                ("removed_condition", text[:start] + text[operand.col_offset : operand.end_col_offset] + text[end:])
            )
        else:
            edits.append(("removed_condition", text[:start] + f"not ({text[start:end]})" + text[end:]))
    if (
        isinstance(node, ast.Call)
        and len(node.args) >= 2
        and not any(isinstance(a, ast.Starred) for a in node.args[:2])
    ):
        a, b = node.args[0], node.args[1]
        if a.lineno == b.end_lineno == node.lineno:
            left, right = text[a.col_offset : a.end_col_offset], text[b.col_offset : b.end_col_offset]
            if left != right:
                swapped = (
                    text[: a.col_offset]
                    + right
                    + text[a.end_col_offset : b.col_offset]
                    + left
                    + text[b.end_col_offset :]
                )
                edits.append(("swapped_arguments", swapped))
    return edits


def _parses(source: str, line: int, after: str) -> bool:
    lines = source.splitlines()
    lines[line - 1] = after
    try:
        ast.parse("\n".join(lines))
    except SyntaxError:
        return False
    return True
