"""ALFWorld: the household text games of Shridhar et al. (2021) on TextWorld's PDDL backend.

Description
-----------
Ids: ``agentgym/ALFWorld-v0`` (all six task types) and one id per task type:
``agentgym/ALFWorld-<TaskType>-v0`` with ``<TaskType>`` a key of :data:`TASK_TYPES`
(``PickAndPlace``, ``LookAtObjInLight``, ``PickCleanThenPlace``, ``PickHeatThenPlace``,
``PickCoolThenPlace``, ``PickTwoObjAndPlace``).  ``task_types=[...]`` selects several.

Game data (the official ``json_2.1.1`` games) is looked up, first found wins:

1. the ``data=`` argument: a folder (``json_2.1.1/`` itself or a folder holding it) or a
   ``.tar.xz`` / ``.tar.gz`` archive of it;
2. ``$ALFWORLD_DATA`` as alfworld's own ``alfworld-download`` lays it out (``$ALFWORLD_DATA/json_2.1.1``),
   or an archive path;
3. ``~/.cache/alfworld``, where ``alfworld-download`` puts the games by default;
4. the archive shipped in the package (``agentgym_envs/data/alfworld/``, 4.6 MB, sha256-checked);
5. ``../shared/data/alfworld/alfworld-json_2.1.1-full.tar.xz`` next to the repository.

Archives are unpacked into ``<cache>/alfworld/`` under a file lock, one split at a time: the
evaluation splits on first use, ``train`` (330 MB of the 360) only when a training game is opened.

Tasks and splits
----------------
``train`` = ALFWorld's ``train`` (3553 games), ``valid`` = ``valid_seen`` (140,
in-distribution), ``test`` = ``valid_unseen`` (134, out-of-distribution); the names
``"valid_seen"`` and ``"valid_unseen"`` are accepted too.  A task id is the game's folder
relative to ``json_2.1.1``, e.g. ``"valid_unseen/pick_two_obj_and_place-.../trial_T2019..."``.

Actions
-------
ALFWorld's commands (``go to countertop 1``, ``take apple 1 from countertop 1``, ``heat
apple 1 with microwave 1``, ...), through the ``act`` tool.  Commands that are not
admissible do nothing ("Nothing happens.") and set ``info["invalid_action"]``.

Observation
-----------
The room and the task at reset, then the game's reply to each command.

Rewards
-------
Success is TextWorld's ``won`` (ALFWorld has no score: ``score`` is 1 when won, so
``reward="dense"`` equals ``reward="sparse"``).

Expert
------
The game's stored walkthrough while the episode follows it, else TextWorld's planner
(``policy_commands``), which works from any state; a plan is reused while the agent
follows it.

Termination
-----------
Terminated when the task is done; truncated after 50 steps by default.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/ALFWorld-PickAndPlace-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                   # doctest: +SKIP
    >>> obs, r, term, trunc, info = env.step(info["expert_action"])     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym_envs.cache import cache_root, file_lock
from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.errors import DataNotFoundError
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "alfworld",
    extra="alfworld",
    requires=("alfworld", "textworld", "fast_downward"),
    description="ALFWorld household tasks (json_2.1.1 games, TextWorld PDDL backend).",
    worker="process",  # slow PDDL planning steps: 2.2x the episodes/s in worker processes (docs/workers.md)
)

#: Our task-type names -> ALFWorld's folder prefixes.
TASK_TYPES: dict[str, str] = {
    "PickAndPlace": "pick_and_place_simple",
    "LookAtObjInLight": "look_at_obj_in_light",
    "PickCleanThenPlace": "pick_clean_then_place_in_recep",
    "PickHeatThenPlace": "pick_heat_then_place_in_recep",
    "PickCoolThenPlace": "pick_cool_then_place_in_recep",
    "PickTwoObjAndPlace": "pick_two_obj_and_place",
}

#: Our split names -> ALFWorld's split folders.
SPLIT_DIRS = {"train": "train", "valid": "valid_seen", "test": "valid_unseen"}
SPLIT_ALIASES = {"valid_seen": "valid", "valid_unseen": "test"}

DATA_ENV = "ALFWORLD_DATA"
#: The official json_2.1.1 games, shipped in the package (see ``agentgym_envs/data/alfworld/README.md``).
BUNDLED_ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "alfworld" / "alfworld-json_2.1.1-full.tar.xz"
BUNDLED_SHA256 = "7fa36229c274585a9c2d232d228185128931e7a0a1d1f9599840753c19b188eb"
#: Where alfworld's ``alfworld-download`` puts the games when ``$ALFWORLD_DATA`` is not set.
ALFWORLD_DEFAULT_DIR = Path("~/.cache/alfworld")
SHARED_ARCHIVE = Path("..") / "shared" / "data" / "alfworld" / BUNDLED_ARCHIVE.name
GAME_FILE = "game.tw-pddl"


# ---- data ---------------------------------------------------------------------------------
def _games_root(folder: Path) -> Path | None:
    """The ``json_2.1.1``-like folder (holding ``train/``, ``valid_seen/``...) in or at ``folder``."""
    for candidate in (folder, folder / "json_2.1.1"):
        if any((candidate / d).is_dir() for d in SPLIT_DIRS.values()):
            return candidate
    return None


def _is_archive(path: Path) -> bool:
    return path.is_file() and any(path.name.endswith(ext) for ext in (".tar.xz", ".tar.gz", ".tgz", ".tar", ".tar.bz2"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_games(root: Path, split_dir: str, task_types: Sequence[str] | None = None) -> list[str]:
    """Sorted task ids (``<split_dir>/<task>/<trial>``) of one split folder, optionally by task type."""
    folder = root / split_dir
    if not folder.is_dir():
        return []
    games = [
        f"{split_dir}/{task}/{trial}"
        for task in sorted(os.listdir(folder))
        for trial in sorted(os.listdir(folder / task))
        if (folder / task / trial / GAME_FILE).is_file()
    ]
    return _of_types(games, task_types)


def _of_types(games: list[str], task_types: Sequence[str] | None) -> list[str]:
    if not task_types:
        return games
    prefixes = tuple(f"{TASK_TYPES[t]}-" for t in task_types)
    return [g for g in games if g.split("/")[1].startswith(prefixes)]


@dataclass(frozen=True)
class GameData:
    """Where the ALFWorld games are: a folder that holds them all, or an archive unpacked one split at a time.

    ``root`` is the folder holding ``train/``, ``valid_seen/``, ``valid_unseen/``.  For an archive it lies in
    the cache (``<cache>/alfworld/<archive>-<key>/json_2.1.1``) and a split's games appear there the first
    time one of them is opened (:meth:`game_file`); the list of games comes from an index of the archive.

    Example:
        >>> data = locate_data()                                              # doctest: +SKIP
        >>> len(data.games("valid_unseen"))                                   # doctest: +SKIP
        134
        >>> data.game_file(data.games("valid_unseen")[0]).name              # doctest: +SKIP
        'game.tw-pddl'
    """

    root: Path
    archive: Path | None = None

    def games(self, split_dir: str, task_types: Sequence[str] | None = None) -> list[str]:
        """Sorted task ids (``<split_dir>/<task>/<trial>``) of one ALFWorld split folder."""
        if self.archive is None:
            return list_games(self.root, split_dir, task_types)
        return _of_types(_archive_index(self.archive)["games"].get(split_dir, []), task_types)

    def game_file(self, task_id: Hashable) -> Path:
        """The ``game.tw-pddl`` of a task, unpacking its split from the archive on first use."""
        if self.archive is not None:
            _extract_splits(self.archive, {str(task_id).split("/")[0]})
        return self.root / str(task_id) / GAME_FILE


# What the archive's `full` variant extracts on its first use besides the split asked for: the
# evaluation splits are small (30 MB together); `train` (330 MB) waits until a training game is opened.
_EAGER_SPLITS = frozenset({"valid_seen", "valid_unseen"})


def _archive_folder(archive: Path) -> Path:
    """The archive's cache folder, keyed by content (known archives) or by name, size and time."""
    stem = archive.name.split(".")[0]
    if archive.name == BUNDLED_ARCHIVE.name:
        return cache_root() / "alfworld" / f"{stem}-{BUNDLED_SHA256[:12]}"
    stat = archive.stat()
    key = hashlib.sha1(f"{archive.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "alfworld" / f"{stem}-{key}"


def _archive_index(archive: Path) -> dict[str, Any]:
    """``{"prefix": "json_2.1.1", "games": {split_dir: [task ids]}}`` of an archive (read once, then cached)."""
    index = _archive_folder(archive) / ".index.json"
    if not index.exists():
        _extract_splits(archive, set())
    return json.loads(index.read_text())


def _extract_splits(archive: Path, splits: set[str]) -> None:
    """Unpack the given split folders of ``archive`` into its cache folder, once, under a file lock.

    One pass over the (compressed, sequential) archive writes the index of every game if it is
    missing and unpacks the requested splits plus the small evaluation splits not yet there.  A
    ``.complete-<split>`` marker written last makes an interrupted extraction start over.
    """
    folder = _archive_folder(archive)

    def pending() -> set[str]:
        return {s for s in splits if not (folder / f".complete-{s}").exists()}

    if (folder / ".index.json").exists() and not pending():
        return
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        have_index = (folder / ".index.json").exists()
        todo = pending()
        if have_index and not todo:
            return
        if archive.name == BUNDLED_ARCHIVE.name and _sha256(archive) != BUNDLED_SHA256:
            raise DataNotFoundError(
                f"{archive} is damaged or not the official ALFWorld json_2.1.1 archive (sha256 differs from "
                f"{BUNDLED_SHA256}); reinstall agentgym-envs or point $ALFWORLD_DATA at the games"
            )
        todo |= {s for s in _EAGER_SPLITS if not (folder / f".complete-{s}").exists()}
        games: dict[str, list[str]] = {}
        prefix: str | None = None
        found: set[str] = set()
        with tarfile.open(archive, "r|*") as tar:  # streamed: one sequential pass over the archive

            def wanted() -> Iterator[tarfile.TarInfo]:
                nonlocal prefix
                for member in tar:
                    parts = member.name.split("/")
                    if member.isfile() and parts[-1] == GAME_FILE and len(parts) >= 4:
                        prefix = "/".join(parts[:-4])
                        games.setdefault(parts[-4], []).append("/".join(parts[-4:-1]))
                    split = next((p for p in parts if p in todo), None)
                    if split is not None:
                        found.add(split)
                        yield member

            # filter="data" refuses absolute paths, links out of the folder and devices.
            tar.extractall(folder, members=wanted(), filter="data")
        if not games:
            raise DataNotFoundError(f"{archive} holds no ALFWorld games (no {GAME_FILE} under train/ or valid_seen/)")
        for split in found:
            (folder / f".complete-{split}").write_text(str(archive))
        if not have_index:
            index = {"prefix": prefix or "", "games": {s: sorted(g) for s, g in games.items()}}
            (folder / ".index.json").write_text(json.dumps(index))


def extract_archive(archive: Path, splits: Sequence[str] | None = None) -> Path:
    """Unpack an ALFWorld game archive into the cache (once) and return its games root.

    Args:
        archive: a ``.tar.xz`` / ``.tar.gz`` of ``json_2.1.1``.
        splits: the ALFWorld split folders to unpack (``"train"``, ``"valid_seen"``, ...); default all.

    Example:
        >>> root = extract_archive(BUNDLED_ARCHIVE, ["valid_unseen"])  # doctest: +SKIP
        >>> len(list((root / "valid_unseen").iterdir()))              # doctest: +SKIP
        132
    """
    index = _archive_index(archive)
    _extract_splits(archive, set(splits if splits is not None else index["games"]))
    return _archive_folder(archive) / index["prefix"]


def _resolve(path: Path) -> GameData | None:
    path = path.expanduser()
    if _is_archive(path):
        return GameData(_archive_folder(path) / _archive_index(path)["prefix"], archive=path)
    if path.is_dir():
        root = _games_root(path)
        return GameData(root) if root is not None else None
    return None


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def locate_data(data: str | os.PathLike | None = None) -> GameData:
    """Where the ALFWorld games are (a :class:`GameData`); the first source that holds games wins.

    Looks at ``data``, then ``$ALFWORLD_DATA``, then alfworld's default download folder
    ``~/.cache/alfworld``, then the archive shipped in the package, then the archive in
    ``../shared`` next to a checkout.  Raises :class:`~agentgym_envs.errors.DataNotFoundError`
    saying what was tried and how to get the games.

    Example:
        >>> locate_data("/data/alfworld").root.name  # doctest: +SKIP
        'json_2.1.1'
    """
    tried = []
    candidates: list[tuple[str, Path]] = []
    if data is not None:
        candidates.append(("data argument", Path(data)))
    if os.environ.get(DATA_ENV):
        candidates.append((f"${DATA_ENV}", Path(os.environ[DATA_ENV])))
    candidates += [
        ("alfworld-download's default", ALFWORLD_DEFAULT_DIR),
        ("archive in the package", BUNDLED_ARCHIVE),
        ("shared archive", _repo_root() / SHARED_ARCHIVE),
    ]
    for label, path in candidates:
        found = _resolve(path)
        if found is not None:
            return found
        tried.append(f"{label}: {path}")
        if label == "data argument":
            raise DataNotFoundError(f"no ALFWorld games at {path} (expected json_2.1.1/ or a .tar.xz of it)")
    raise DataNotFoundError(
        "ALFWorld game data not found (tried " + "; ".join(tried) + "). Reinstall agentgym-envs (its wheel ships "
        "the games), or get them with alfworld's own tool: `pip install alfworld && alfworld-download` (it fills "
        "$ALFWORLD_DATA, default ~/.cache/alfworld); or pass data='path/to/json_2.1.1 or a .tar.xz of it'."
    )


# ---- a faster TextWorld PDDL backend -----------------------------------------------------
def fast_pddl_env(infos: Any) -> Any:
    """TextWorld's ``PddlEnv`` with the same game logic and text, minus repeated work.

    Where the native backend spends its time (measured, see docs/alfworld.md):

    * every ``derive`` of the text grammar re-parses its template with tatsu, and every
      conditional rule re-parses its condition; here both parses are cached per game
      (the parsed symbols are deep-copied before use, as TextWorld itself does);
    * ``load`` and ``reset`` each translate the PDDL problem with fast-downward
      (``pddl2sas``, twice per state: once to play, once for the planner); here the
      game is translated once per load, the planner's translation is made on the
      first expert request, and a reset only reloads the kept translation.

    Returns an instance of a ``PddlEnv`` subclass built on first use (the classes live in
    this function so that importing the module does not import TextWorld).
    """
    return _fast_classes()[0](infos)


_NONE = object()


def _fresh_context(context: dict) -> dict:
    # TextWorld deep-copies `variables` and `mapping`; derivation only adds keys to these dicts
    # and never mutates their values (entity infos, variables), so copying the dicts suffices.
    return {"state": context["state"], "facts": context["facts"], "variables": dict(context["variables"]),
            "mapping": dict(context["mapping"]), "entity_infos": context["entity_infos"]}


def _fresh(symbols: list, context: dict) -> list:
    import copy

    out = []
    for symbol in symbols:
        clone = copy.copy(symbol)  # nested symbols stay shared: they are cloned again before use
        clone.context = _fresh_context(context)
        out.append(clone)
    return out


def _translate(domain: str, problem: str, optimize: bool) -> tuple:
    import fast_downward

    # fast-downward's pddl2sas overwrites sys.argv for its option parser and leaves it so.
    argv = sys.argv
    try:
        return fast_downward.pddl2sas(domain, problem, verbose=False, optimize=optimize)
    finally:
        sys.argv = argv


def _cached_grammar_class() -> Any:
    """TextWorld's ``ContextSensitiveGrammar`` with parses cached per game (defined on first use)."""
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    class CachedGrammar(textgen.ContextSensitiveGrammar):
        """``ContextSensitiveGrammar`` that parses each template and condition once and copies less."""

        def _symbols(self, start: str) -> list:
            cache = self.__dict__.setdefault("_symbol_cache", {})
            if start not in cache:
                cache[start] = textgen._parse_and_convert(start, rule_name="symbols")
            return cache[start]

        def _rule(self, expr: str) -> Any:
            cache = self.__dict__.setdefault("_rule_cache", {})
            if expr not in cache:
                cache[expr] = Rule.parse_conjunctive_query(expr)
            return cache[expr]

        def replace(self, start: Any) -> list:
            rules = self._rules.get(str(start))
            if not rules:
                raise textgen.CSGUnknownSymbolError(start)
            state, mapping = start.context["state"], start.context["mapping"]
            for rule in rules:  # the first applicable rule, as TextWorld does
                if not rule.condition or next(iter(state.all_assignments(self._rule(rule.condition), mapping)), _NONE)\
                        is not _NONE:
                    break
            else:
                raise IndexError("no applicable production rule")  # TextWorld fails the same way
            return _fresh(rule.rhs, start.context)

        def _conditional(self, symbol: Any) -> list:
            context = _fresh_context(symbol.context)
            contexts = [context]
            if symbol.given:
                contexts = []
                for mapping in context["state"].all_assignments(self._rule(symbol.given), context["mapping"]):
                    new = _fresh_context(context)
                    new["variables"].update({ph.name: new["entity_infos"][var.name] for ph, var in mapping.items()})
                    new["mapping"].update(mapping)
                    contexts.append(new)
            return [_fresh([symbol.expression], c)[0] for c in contexts]

        def _expand(self, symbol: Any) -> list:
            if isinstance(symbol, textgen.NonterminalSymbol):
                return self.replace(symbol)
            if isinstance(symbol, textgen.ConditionalSymbol):
                return self._conditional(symbol)
            if isinstance(symbol, textgen.ListSymbol):
                inner = _fresh([symbol.symbol], symbol.context)[0]
                return textgen.display_list(self._expand(inner), symbol.context)
            if isinstance(symbol, textgen.EvalSymbol):
                return symbol.derive()
            raise NotImplementedError(f"Unknown symbol: {type(symbol)}")

        def derive(self, start: str, context: dict | None = None) -> str:
            derivation = _fresh(self._symbols(start), context or {})[::-1]
            derived = []
            while derivation:
                symbol = derivation.pop()
                if isinstance(symbol, textgen.TerminalSymbol):
                    derived.append(symbol)
                else:
                    derivation += self._expand(symbol)[::-1]
            return "".join(map(str, derived))

    return CachedGrammar


def _reused_state_class() -> Any:
    """TextWorld's ``PddlState`` built from a kept fast-downward translation (defined on first use)."""
    import fast_downward
    from textworld.envs.pddl import logic as pddl_logic
    from textworld.logic import Proposition, Variable
    from textworld.logic import Type as TwType

    class ReusedState(pddl_logic.PddlState):
        """``PddlState`` built from a kept fast-downward translation of the same problem.

        ``translation`` is a list ``[task, sas, sas_replan]``, shared by the states of one loaded
        game; ``sas_replan`` (the planner's own translation, as costly as the first) is made on
        the first ``replan`` and then kept.
        """

        def __init__(self, downward_lib: Any, pddl_problem: str, logic: Any, translation: list) -> None:
            # Same steps as PddlState.__init__ (textworld 1.7.0), with pddl2sas replaced by `translation`.
            from collections import Counter, defaultdict

            self._facts = defaultdict(set)
            self._vars_by_name = {}
            self._vars_by_type = defaultdict(set)
            self._var_counts = Counter()
            self._logic = logic
            self.downward_lib = downward_lib
            self.pddl_problem = pddl_problem
            self._translation = translation
            self.task, self.sas, self.sas_replan = translation
            self._actions = {a.name: a for a in self.task.actions}
            for type_ in self.task.types:
                with contextlib.suppress(ValueError):
                    self._logic.types.add(TwType(type_.name, type_.supertype_names))
            self.downward_lib.load_sas(self.sas.encode("utf-8"))
            self._replan_loaded = False
            if self.sas_replan is not None:
                self.downward_lib.load_sas_replan(self.sas_replan.encode("utf-8"))
                self._replan_loaded = True
            self.name2type = {o.name: o.type_name for o in self.task.objects}
            facts = []
            for atom in self.task.init:
                if isinstance(atom, fast_downward.translate.pddl.conditions.Atom):
                    if atom.predicate != "=":
                        facts.append(Proposition(atom.predicate, [Variable(a, self.name2type[a]) for a in atom.args]))
                elif isinstance(atom, fast_downward.translate.pddl.f_expression.Assign):
                    name = f"{atom.expression.value}"
                    if atom.fluent.symbol != "total-cost" and not str.isdigit(name):
                        facts.append(Proposition(name, [Variable(a, self.name2type[a]) for a in atom.fluent.args]))
            self.add_facts(facts)
            atoms = (pddl_logic.Atom * self.downward_lib.get_state_size())()
            self.downward_lib.get_state(atoms)
            facts = [atom.get_fact(self.name2type) for atom in atoms]
            self.add_facts([f for f in facts if not f.is_negation])

        def replan(self, infos: Any) -> list:
            if not self._replan_loaded:
                if self._translation[2] is None:
                    _, self._translation[2] = _translate(self._logic.domain, self.pddl_problem, optimize=True)
                self.sas_replan = self._translation[2]
                self.downward_lib.load_sas_replan(self.sas_replan.encode("utf-8"))
                self._replan_loaded = True
            return super().replan(infos)

    return ReusedState


@functools.cache  # the classes are defined once, on first use, so that importing this module stays light
def _fast_classes() -> tuple[Any, ...]:
    import weakref

    import fast_downward
    import textworld
    from textworld.core import GameState
    from textworld.envs.pddl import logic as pddl_logic
    from textworld.envs.pddl import pddl as pddl_module

    CachedGrammar = _cached_grammar_class()  # noqa: N806 - a class
    ReusedState = _reused_state_class()  # noqa: N806 - a class

    # Copies of fast-downward's library released by closed environments, for the next ones.  TextWorld
    # loads a fresh copy of libdownward.so per environment (the planner keeps its state in globals), and
    # the dynamic loader never unloads it (the library has unique symbols): ~2 MB of native memory were
    # lost with every environment.  A copy serves one environment at a time, as before.
    free_libraries: list[Any] = []

    class FastPddlEnv(pddl_module.PddlEnv):
        def __init__(self, infos: Any = None) -> None:
            # PddlEnv.__init__ (textworld 1.7.0) with the library taken from the free copies first.
            textworld.Environment.__init__(self, infos)
            self.downward_lib = free_libraries.pop() if free_libraries else fast_downward.load_lib()
            # Returned on close(), or when the environment is collected without being closed.
            self._release_library = weakref.finalize(self, free_libraries.append, self.downward_lib)

        def close(self) -> None:
            super().close()
            self._release_library()

        def load(self, filename_or_data: Any) -> None:
            # PddlEnv.load (textworld 1.7.0), translating the problem once and without the planner's part.
            if isinstance(filename_or_data, (str, os.PathLike)):
                with open(filename_or_data) as handle:
                    data = json.load(handle)
                self._game_file = filename_or_data
            else:
                data, self._game_file = filename_or_data, None
            self._game_data = data
            self.walkthrough = data.get("walkthrough", None)
            self._logic = pddl_logic.GameLogic(domain=data["pddl_domain"], grammar=data["grammar"])
            self._logic.grammar.__class__ = CachedGrammar  # same rules; parses cached per game
            task, sas = _translate(self._logic.domain, data["pddl_problem"], optimize=False)
            self._translation = [task, sas, None]
            self._pddl_state = ReusedState(self.downward_lib, data["pddl_problem"], self._logic, self._translation)
            self._entity_infos = self._get_entity_infos()

        def reset(self) -> Any:
            # PddlEnv.reset (textworld 1.7.0) with the problem's translation reused.
            self._pddl_state = ReusedState(self.downward_lib, self._game_data["pddl_problem"], self._logic,
                                           self._translation)
            self.prev_state = None
            self.state = GameState()
            self._last_action = None
            self._moves = 0
            context = {"state": self._pddl_state, "facts": list(self._pddl_state.facts), "variables": {},
                       "mapping": {}, "entity_infos": self._entity_infos}
            self.state.feedback = self._logic.grammar.derive("#intro#", context)
            self.state.raw = self.state.feedback
            self._gather_infos()
            if "walkthrough" in self.request_infos.extras:
                self.state["extra.walkthrough"] = self.walkthrough or self._pddl_state.replan(self._entity_infos)
            return self.state

    return FastPddlEnv, CachedGrammar, ReusedState


# ---- environment -------------------------------------------------------------------------
_INTRO_BANNER = re.compile(r"^-= Welcome to TextWorld, ALFRED! =-\s*", re.M)
_TASK_LINE = re.compile(r"Your task is to:\s*(.+)")


def normalize_command(text: str) -> str:
    """ALFWorld's spelling of a command: lower case, single spaces, no final full stop.

    Example:
        >>> normalize_command("  Go to  Desk 1. ")
        'go to desk 1'
    """
    return " ".join(text.lower().split()).rstrip(".!").strip()


@dataclass(frozen=True)
class ALFWorldConfig:
    """Which games an :class:`ALFWorldEnv` plays.

    Example:
        >>> ALFWorldConfig(task_types=("PickAndPlace",)).name
        'PickAndPlace'
    """

    task_types: tuple[str, ...] = tuple(TASK_TYPES)

    def __post_init__(self) -> None:
        unknown = [t for t in self.task_types if t not in TASK_TYPES]
        if unknown or not self.task_types:
            raise ValueError(f"unknown ALFWorld task type(s) {unknown}; choose from {', '.join(TASK_TYPES)}")

    @property
    def name(self) -> str:
        return "all" if set(self.task_types) == set(TASK_TYPES) else "+".join(self.task_types)


class ALFWorldEnv(TextEnv):
    """One ALFWorld game per task.

    Args:
        task_types: task-type names (keys of :data:`TASK_TYPES`); ``None`` = all six.
        data: where the games are (see :func:`locate_data`).
        fast: use :func:`fast_pddl_env` (same games and text, cached parsing); ``False`` plays on
            TextWorld's own ``PddlEnv``.
        **kwargs: see :class:`~agentgym_envs.core.TextEnv`; ``split`` also accepts
            ``"valid_seen"`` / ``"valid_unseen"``.

    Example:
        >>> env = ALFWorldEnv(task_types=["PickHeatThenPlace"], split="valid", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(seed=1)                                                         # doctest: +SKIP
        >>> info["instruction"]                                                                   # doctest: +SKIP
        'heat some egg and put it in countertop.'
    """

    family = "alfworld"
    default_max_steps = 50

    def __init__(
        self,
        task_types: Sequence[str] | str | None = None,
        data: str | os.PathLike | None = None,
        split: str = "train",
        fast: bool = True,
        **kwargs: Any,
    ):
        if isinstance(task_types, str):
            task_types = [task_types]
        self.config = ALFWorldConfig(tuple(task_types) if task_types else tuple(TASK_TYPES))
        self.data = locate_data(data)
        self.data_root = self.data.root
        self.fast = fast
        self._tw: Any = None
        self._loaded: Path | None = None
        self._state: Any = None
        self._plan: list[str] | None = None
        super().__init__(split=SPLIT_ALIASES.get(split, split), **kwargs)

    # ---- splits -------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        games = {name: self.data.games(d, self.config.task_types) for name, d in SPLIT_DIRS.items()}
        return TaskSplits(**games)

    def game_file(self, task_id: Hashable) -> Path:
        """The ``game.tw-pddl`` file of a task (its split is unpacked from an archive on first use)."""
        return self.data.game_file(task_id)

    # ---- simulator ----------------------------------------------------------------
    def _open(self, path: Path) -> Any:
        if self._tw is None:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

            infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["walkthrough"])
            backend = fast_pddl_env(infos) if self.fast else textworld.envs.PddlEnv(infos)
            self._tw = AlfredDemangler(backend)
            self._loaded = None
        if self._loaded != path:  # resetting the same game again skips the load
            self._tw.load(str(path))
            self._loaded = path
        return self._tw

    def _start(self, task_id: Hashable) -> TaskStart:
        game = self._open(self.game_file(task_id))
        with contextlib.redirect_stdout(io.StringIO()):
            self._state = game.reset()
        # The stored walkthrough is the expert's plan until the agent leaves it.
        self._plan = list(self._state.get("extra.walkthrough") or []) or None
        text = _INTRO_BANNER.sub("", self._state.feedback).strip()
        match = _TASK_LINE.search(text)
        instruction = match.group(1).strip() if match else text.splitlines()[-1]
        return TaskStart(observation=text, instruction=instruction, max_score=1.0, score=0.0)

    def _execute(self, command: str) -> Transition:
        command = normalize_command(command)
        admissible = set(self._state.admissible_commands or [])
        self._state, _, _ = self._tw.step(command)
        won = bool(self._state.won)
        invalid = command not in admissible
        if not invalid:  # an invalid command changes nothing, so the plan still holds
            if self._plan and self._plan[0] == command:
                self._plan.pop(0)
            else:
                self._plan = None
        return Transition(
            observation=self._state.feedback.strip(),
            score=1.0 if won else 0.0,
            won=won,
            extra={"invalid_action": invalid},
        )

    def _admissible(self) -> list[str]:
        # TextWorld's PDDL backend computes these on every step anyway (it needs them to parse commands).
        return list(self._state.admissible_commands or []) if self._state is not None else []

    def _expert(self) -> str | None:
        if self._state is None or self._state.won:
            return None
        if not self._plan:
            # The game is deterministic: a plan stays valid while the agent follows it, so the
            # planner (the costly part) runs once per deviation, not once per step.
            self._plan = list(self._tw._pddl_state.replan(self._tw._entity_infos) or []) or None
        return self._plan[0] if self._plan else None

    def close(self) -> None:
        if self._tw is not None:
            self._tw.close()
            self._tw = None
        super().close()


def registrations() -> list[Registration]:
    regs = [
        Registration(
            name="ALFWorld",
            family=FAMILY,
            entry_point="agentgym_envs.families.alfworld:ALFWorldEnv",
            kwargs={},
            description="all six ALFWorld task types; 50 steps",
        )
    ]
    regs += [
        Registration(
            name=f"ALFWorld-{name}",
            family=FAMILY,
            entry_point="agentgym_envs.families.alfworld:ALFWorldEnv",
            kwargs={"task_types": [name]},
            description=f"ALFWorld {folder} tasks; 50 steps",
        )
        for name, folder in TASK_TYPES.items()
    ]
    return regs
