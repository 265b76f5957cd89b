"""The package layout's promises: layers import downward only, and the environments package never imports the trainer.

The layers of ``agentgym_envs`` (a subpackage, or a top-level module of the contract layer, is one unit),
lowest first; a unit imports only from lower layers (contract modules also from one another):

1. contract: the package root, ``core``, ``errors``, ``parsing``, ``wrappers``, ``registry``, ``checker``,
   ``cache``, ``prompts``, ``models``;
2. ``families``, ``generation``, ``remote`` (transport);
3. ``workers``;
4. ``engine``;
5. ``eval`` and the trainer (``trl_plugins``), which do not import each other;
6. ``cli``, the command line over all of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentgym_envs

PACKAGE = Path(agentgym_envs.__file__).resolve().parent
REPO = PACKAGE.parent

# Imports every module of agentgym_envs (and plays an episode through the evaluation package) with
# trl_plugins made unimportable; any import of it, however indirect, fails the run.
BLOCKED_RUN = r"""
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "trl_plugins" or name.startswith("trl_plugins."):
            raise ImportError(f"agentgym_envs imported {name}")

sys.meta_path.insert(0, Block())
import agentgym_envs
from agentgym_envs import cli

skipped = []
for info in pkgutil.walk_packages(agentgym_envs.__path__, "agentgym_envs."):
    try:
        importlib.import_module(info.name)
    except agentgym_envs.MissingDependencyError:
        skipped.append(info.name)
cli.build_parser()
from agentgym_envs.eval import make_policy, play_episodes
from agentgym_envs.models import smollm2_gguf
(result,) = play_episodes("agentgym/TextCraft-v0", make_policy("expert"), episodes=1, progress=False)
assert result.won, result
assert smollm2_gguf().name.endswith(".gguf")
assert not [m for m in sys.modules if m.startswith("trl_plugins")]
print("ok", len(sys.modules), skipped)
"""


def test_agentgym_envs_runs_with_trl_plugins_unimportable() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED_RUN], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_no_source_file_of_agentgym_envs_imports_trl_plugins() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__",
                "import_module",
            ):
                names = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] == "trl_plugins"]
    assert offenders == []


def test_the_trainer_reuses_the_one_smollm2_lookup() -> None:
    from agentgym_envs import models
    from trl_plugins import models as trainer_models

    assert trainer_models.smollm2_dir is models.smollm2_dir
    assert trainer_models.smollm2_tokenizer is models.smollm2_tokenizer


def test_every_family_module_follows_the_docstring_template() -> None:
    from agentgym_envs.registry import family_modules

    sections = ("Description", "Tasks and splits", "Actions", "Observation", "Rewards", "Expert", "Termination")
    for module in family_modules():
        doc = module.__doc__ or ""
        headings = _headings_with_rules(doc)
        assert [heading for heading, _ in headings] == list(sections), module.__name__
        assert all(len(rule) == len(heading) for heading, rule in headings), module.__name__
        assert "Example:" in doc, module.__name__


def _headings_with_rules(doc: str) -> list[tuple[str, str]]:
    lines = doc.splitlines()
    return [(a, b) for a, b in zip(lines, lines[1:], strict=False) if set(b) == {"-"}]


def test_the_old_smollm2_path_is_a_deprecated_alias() -> None:
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from agentgym_envs.eval import models as old\n"
        "from agentgym_envs import models\n"
        "assert old.smollm2_dir is models.smollm2_dir\n"
        "print([str(w.message) for w in caught if w.category is DeprecationWarning])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "agentgym_envs.eval.models moved to agentgym_envs.models" in result.stdout


def test_pyproject_declares_the_builtin_families_as_entry_points() -> None:
    from agentgym_envs.registry import BUILTIN_FAMILIES, ENTRY_POINT_GROUP

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][ENTRY_POINT_GROUP] == BUILTIN_FAMILIES
    declared = {module.__name__ for module in _family_modules_in_the_package()}
    assert declared == set(BUILTIN_FAMILIES.values())


def _family_modules_in_the_package() -> Iterator[object]:
    """Every module under ``families/`` that declares ``registrations()`` (the list must not miss one)."""
    import importlib
    import pkgutil

    from agentgym_envs import families

    for info in pkgutil.walk_packages(families.__path__, "agentgym_envs.families."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            module = importlib.import_module(info.name)
            if hasattr(module, "registrations"):
                yield module


# ---- the import graph ------------------------------------------------------------------------------------------
CONTRACT = {
    "__init__", "core", "errors", "parsing", "wrappers", "registry", "checker", "cache", "prompts", "models", "stats",
}
LAYERS: dict[str, int] = {
    **dict.fromkeys(CONTRACT, 0),
    **dict.fromkeys(("families", "generation", "remote", "runs"), 1),
    "workers": 2,
    "engine": 3,
    **dict.fromkeys(("eval", "trainer"), 4),
    "cli": 5,
}


def _unit(module: str) -> str | None:
    """The layer unit of a dotted module name: ``trainer`` for ``trl_plugins``, else the name under agentgym_envs."""
    parts = module.split(".")
    if parts[0] == "trl_plugins":
        return "trainer"
    if parts[0] != "agentgym_envs":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module ``path`` imports (at module level or inside a function), as a dotted name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` is a module of this repository (``from agentgym_envs import models`` imports one)."""
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _import_edges() -> dict[tuple[str, str], list[str]]:
    """``(importing unit, imported unit) -> [file: module]`` over agentgym_envs and trl_plugins."""
    edges: dict[tuple[str, str], list[str]] = {}
    for root in (PACKAGE, REPO / "trl_plugins"):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            source = _unit(module)
            for imported in _imports(path, module):
                target = _unit(imported)
                if target not in (None, source):
                    edges.setdefault((source, target), []).append(f"{path.relative_to(REPO)}: {imported}")
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {unit for edge in _import_edges() for unit in edge}
    units |= {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
    }
    assert sorted(units - set(LAYERS)) == []


def test_imports_run_down_the_layers_only() -> None:
    upward = []
    for (source, target), where in sorted(_import_edges().items()):
        both_contract = source in CONTRACT and target in CONTRACT
        if not both_contract and LAYERS[target] >= LAYERS[source]:
            upward.append(f"{source} -> {target} ({where[0]})")
    assert upward == []


def test_no_import_cycle_between_units() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in _import_edges():
        graph.setdefault(source, set()).add(target)
    cycles = []

    def visit(unit: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(unit, ())):
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest unit
                visit(nxt, [*path, nxt])

    for unit in sorted(graph):
        visit(unit, [unit])
    assert cycles == []


MAX_FUNCTION_LINES = 100


def test_no_function_is_over_100_lines() -> None:
    long = []
    for root in (PACKAGE, REPO / "trl_plugins"):
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.name}")
    assert long == []
