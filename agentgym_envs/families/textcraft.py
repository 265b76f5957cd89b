"""TextCraft: the Minecraft crafting game of ADaPT (Prasad et al., 2023), as used by AgentGym-RL.

Description
-----------
The world is a crafting graph built from Minecraft's recipe files, shipped with the package in
``agentgym_envs/data/textcraft/recipes.tar.gz`` (the 860 recipe files that ADaPT's and AgentGym's
TextCraft load; see the README next to it).  Only crafting recipes (shaped and shapeless) count.
Registered as ``agentgym/TextCraft-v0`` (every depth) and ``agentgym/TextCraft-d<k>-v0`` (goals
whose crafting tree has depth ``k``).

Tasks and splits
----------------
A task is a goal item.  Disjoint train / valid / test goal sets, stratified by crafting depth
(:func:`goal_splits`: within each depth, 20 % of the goals by a hash of their name go to test,
10 % to valid, the rest to train).

Actions
-------
* ``get <count> <item>``: fetch a base item (one that no recipe makes);
* ``craft <count> <item> using <count> <item>, <count> <item>, ...``: apply one recipe;
* ``inventory``.

A failing or malformed command changes nothing and its observation says why
(``info["command_error"]`` holds the reason).

Observation
-----------
The first observation lists the crafting commands of the goal's crafting tree plus up to 10
distractor recipes that share its ingredients, shuffled by the episode's seed, and ``Goal:
craft <item>.``; then the result of each command (``info["inventory"]`` holds the inventory).

Rewards
-------
1 when the goal item enters the inventory, else 0 (``score`` is 1 on success).

Expert
------
A plan from the current inventory that uses only the recipes shown (the easiest recipe of
every item, preferring tag members already held): it replans from any state.

Termination
-----------
Terminated when the goal item enters the inventory; truncated after 30 steps by default.
Episodes can be branched: :class:`~agentgym_envs.core.SupportsSnapshot` (``snapshot()`` /
``restore()``) and ``copy.deepcopy(env)``, sharing the read-only recipe book.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/TextCraft-d2-v0", split="test", expert_actions=True)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(info["expert_action"])
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import tarfile
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from agentgym_envs.core import StateSnapshots, TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.errors import CommandError, DataNotFoundError, ExpertUnavailableError, UnknownTaskError
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "textcraft",
    extra="textcraft",
    requires=(),
    description="TextCraft: craft a Minecraft item from the recipes shown (ADaPT / AgentGym-RL).",
)

#: Depths of goal crafting trees in the shipped recipes (checked by the tests against the data).
DEPTHS = (1, 2, 3, 4)
#: AgentGym-RL evaluates TextCraft with 30 turns.
DEFAULT_MAX_STEPS = 30
MAX_DISTRACTORS = 10
#: ``get`` refuses larger counts: no recipe needs more, and huge numbers only bloat the inventory text.
MAX_GET_COUNT = 1000

_CRAFTING_TYPES = ("minecraft:crafting_shaped", "minecraft:crafting_shapeless")


def item_name(identifier: str) -> str:
    """The game's name of a Minecraft id or of text the agent typed.

    Example:
        >>> item_name("minecraft:dark_oak_planks")
        'dark oak planks'
        >>> item_name("  Dark_Oak   Planks ")
        'dark oak planks'
    """
    text = identifier.strip().lower()
    if text.startswith("minecraft:"):
        text = text[len("minecraft:"):]
    return " ".join(text.replace("_", " ").split())


@dataclass(frozen=True)
class Ingredient:
    """One input slot of a recipe: an item, or a tag (a family such as ``planks``) with its members.

    Example:
        >>> Ingredient("planks", frozenset({"oak planks", "birch planks"})).accepts("oak planks")
        True
    """

    name: str
    members: frozenset[str]

    @property
    def is_tag(self) -> bool:
        return self.members != frozenset({self.name})

    def accepts(self, item: str) -> bool:
        return item in self.members


@dataclass(frozen=True)
class Recipe:
    """A crafting recipe: ``count`` of ``output`` from ``inputs`` (ingredient, count) pairs.

    Example:
        >>> oak = Ingredient("oak logs", frozenset({"oak logs"}))
        >>> Recipe("oak planks", 4, ((oak, 1),), "oak_planks.json").command
        'craft 4 oak planks using 1 oak logs'
    """

    output: str
    count: int
    inputs: tuple[tuple[Ingredient, int], ...]
    source: str = ""

    @functools.cached_property  # every reset compares and sorts hundreds of recipes by it
    def command(self) -> str:
        """The crafting command as the first observation shows it."""
        using = ", ".join(f"{n} {ing.name}" for ing, n in self.inputs)
        return f"craft {self.count} {self.output} using {using}"

    @property
    def units(self) -> int:
        """How many items one application consumes."""
        return sum(n for _, n in self.inputs)

    def match(self, given: Mapping[str, int]) -> dict[str, int] | None:
        """The items consumed if ``given`` (item -> count, as the agent wrote it) fits this recipe, else ``None``.

        Every ingredient must be matched by exactly one given item with exactly its count.
        """
        if len(given) != len(self.inputs):
            return None
        remaining = dict(given)
        for ing, n in self.inputs:
            hit = next((item for item, k in remaining.items() if k == n and ing.accepts(item)), None)
            if hit is None:
                return None
            del remaining[hit]
        return dict(given)


def _read_recipe_files(source: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """(file name, parsed JSON) of every recipe in a ``recipes.tar.gz`` or a folder of ``*.json``."""
    if source.is_dir():
        for path in sorted(source.rglob("*.json")):
            yield path.name, json.loads(path.read_text())
        return
    files: list[tuple[str, dict[str, Any]]] = []
    # Stream the archive in its own order (seeking back in a gzip stream decompresses it again).
    with tarfile.open(source, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".json"):
                handle = tar.extractfile(member)
                assert handle is not None
                files.append((Path(member.name).name, json.loads(handle.read().decode("utf-8"))))
    yield from sorted(files, key=lambda f: f[0])


def _slot_id(slot: Any) -> tuple[str, bool]:
    """(id, is_tag) of one ingredient slot; a list of alternatives counts as its first entry (as in ADaPT)."""
    if isinstance(slot, list):
        slot = slot[0]
    if "item" in slot:
        return slot["item"], False
    return slot["tag"], True


class RecipeBook:
    """The crafting graph: recipes per item, tags, base items and crafting depths.

    Build it with :func:`load_recipe_book` (the shipped data) or :meth:`from_source`.
    Cycles of the raw data (iron block <-> iron ingot <-> iron nugget, honey block <-> honey bottle)
    are broken as documented in ``docs/textcraft.md``: a recipe that unpacks a single ``*_block``
    is dropped (ADaPT's rule), then in each remaining cycle the recipe that consumes the most units.

    Example:
        >>> book = load_recipe_book()
        >>> book.is_base("oak logs"), book.depth("oak planks"), book.depth("crafting table")
        (True, 1, 2)
    """

    def __init__(self, raw: Iterable[tuple[str, dict[str, Any]]]):
        parsed: list[tuple[str, str, int, list[tuple[str, bool, int]], str | None]] = []
        for fname, data in raw:
            if data.get("type") not in _CRAFTING_TYPES:
                continue
            result = data["result"]
            out_id, out_count = (result, 1) if isinstance(result, str) else (result["item"], int(result.get("count", 1)))
            slots: dict[tuple[str, bool], int] = {}
            if data["type"].endswith("shaped"):
                for key, slot in data["key"].items():
                    n = sum(row.count(key) for row in data["pattern"])
                    if n:
                        ident = _slot_id(slot)
                        slots[ident] = slots.get(ident, 0) + n
            else:
                for slot in data["ingredients"]:
                    ident = _slot_id(slot)
                    slots[ident] = slots.get(ident, 0) + 1
            inputs = [(ident, is_tag, n) for (ident, is_tag), n in slots.items()]
            # ADaPT's rule: unpacking a storage block (iron block -> 9 iron ingots) is not crafting.
            if len(inputs) == 1 and inputs[0][2] == 1 and inputs[0][0].endswith("_block"):
                continue
            parsed.append((fname, out_id, out_count, inputs, data.get("group")))
        if not parsed:
            raise DataNotFoundError("no crafting recipes found in the TextCraft recipe data")
        parsed = self._break_cycles(parsed)

        members: dict[str, set[str]] = defaultdict(set)
        for _, out_id, _, _, group in parsed:
            if group and f"minecraft:{group}" != out_id:
                members[item_name(group)].add(item_name(out_id))
        self.tags: dict[str, frozenset[str]] = {t: frozenset(m) for t, m in sorted(members.items())}

        recipes: dict[str, list[Recipe]] = defaultdict(list)
        self.items: set[str] = set()
        for fname, out_id, out_count, inputs, _ in parsed:
            ings = []
            for ident, is_tag, n in inputs:
                name = item_name(ident)
                # A tag without a craftable member is a plain base item (e.g. "oak logs").
                member_set = self.tags.get(name) if is_tag else None
                ings.append((Ingredient(name, member_set or frozenset({name})), n))
                self.items.add(name)
            out = item_name(out_id)
            self.items.add(out)
            recipes[out].append(Recipe(out, out_count, tuple(ings), fname))
        self.recipes: dict[str, tuple[Recipe, ...]] = {k: tuple(v) for k, v in sorted(recipes.items())}
        self.items -= set(self.tags)  # tags with craftable members are kinds of items, not items
        uses: dict[str, list[Recipe]] = defaultdict(list)
        for rs in self.recipes.values():
            for r in rs:
                for ing, _ in r.inputs:
                    uses[ing.name].append(r)
        self._uses = {k: tuple(v) for k, v in uses.items()}
        self._depth: dict[str, int] = {}
        for name in sorted(self.items | set(self.tags)):
            self.depth(name)

    @classmethod
    def from_source(cls, source: str | Path) -> RecipeBook:
        """Read recipes from a ``recipes.tar.gz`` or a folder of Minecraft recipe JSON files."""
        path = Path(source)
        if not path.exists():
            raise DataNotFoundError(f"TextCraft recipe data not found at {path}")
        return cls(_read_recipe_files(path))

    @staticmethod
    def _break_cycles(parsed: list) -> list:
        while True:
            makes: dict[str, list[int]] = defaultdict(list)
            for i, (_, out_id, _, _, _) in enumerate(parsed):
                makes[out_id].append(i)
            cycle = _find_cycle(parsed, makes)
            if cycle is None:
                return parsed
            # Drop the recipe of the cycle that consumes the most units (9 nuggets -> 1 ingot, not the reverse).
            worst = max(cycle, key=lambda i: (sum(n for _, _, n in parsed[i][3]), parsed[i][0]))
            parsed = [p for i, p in enumerate(parsed) if i != worst]

    # ---- queries -------------------------------------------------------------------
    def is_tag(self, name: str) -> bool:
        return name in self.tags

    def is_base(self, name: str) -> bool:
        """Base items have no recipe and can be fetched with ``get``."""
        return name in self.items and name not in self.recipes

    @functools.cached_property
    def base_items(self) -> tuple[str, ...]:
        """Every base item, sorted."""
        return tuple(sorted(name for name in self.items if self.is_base(name)))

    def depth(self, name: str) -> int:
        """The crafting depth: 0 for base items, else the easiest recipe's longest chain of crafts."""
        if name in self._depth:
            return self._depth[name]
        if name in self.tags:
            d = min(self.depth(m) for m in self.tags[name])
        elif name in self.recipes:
            d = min(self.recipe_depth(r) for r in self.recipes[name])
        else:
            d = 0
        self._depth[name] = d
        return d

    def recipe_depth(self, recipe: Recipe) -> int:
        return 1 + max(self.depth(ing.name) for ing, _ in recipe.inputs)

    def goals(self) -> list[str]:
        """Every craftable item (crafting depth >= 1), sorted."""
        return sorted(self.recipes)

    def easiest_recipe(self, item: str) -> Recipe:
        """The recipe with the smallest depth (ties: fewest units, then the command text)."""
        return min(self.recipes[item], key=lambda r: (self.recipe_depth(r), r.units, r.command))

    def tree(self, goal: str) -> list[Recipe]:
        """Every recipe that can take part in crafting ``goal``: its recipes, those of their ingredients
        and of every member of their tags, recursively (what the first observation shows)."""
        seen: set[str] = set()
        out: list[Recipe] = []
        stack = [goal]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for member in sorted(self.tags.get(name, ())):
                stack.append(member)
            for r in self.recipes.get(name, ()):
                out.append(r)
                stack.extend(ing.name for ing, _ in r.inputs)
        return out

    def uses(self, ingredient: str) -> tuple[Recipe, ...]:
        """Recipes with ``ingredient`` (an item or tag name) among their inputs."""
        return self._uses.get(ingredient, ())


def _find_cycle(parsed: list, makes: Mapping[str, list[int]]) -> list[int] | None:
    """Indices of the recipes on one cycle of the item graph, or ``None`` (iterative DFS)."""
    state: dict[str, int] = {}
    for root in sorted(makes):
        if root in state:
            continue
        stack: list[tuple[str, Iterable[tuple[int, str]]]] = []
        path: list[tuple[str, int]] = []  # (item, recipe index used to reach the next item)

        def edges(item: str) -> Iterable[tuple[int, str]]:
            return iter([(i, ident) for i in makes.get(item, ()) for ident, _, _ in parsed[i][3]])

        state[root] = 1
        stack.append((root, edges(root)))
        while stack:
            item, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[item] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            i, child = nxt
            if state.get(child) == 1:
                items = [s[0] for s in stack]
                start = items.index(child)
                return [r for _, r in path[start:]] + [i]
            if child not in state:
                state[child] = 1
                path.append((item, i))
                stack.append((child, edges(child)))
    return None


def default_recipes_path() -> Path:
    """The shipped ``recipes.tar.gz``."""
    return Path(str(resources.files("agentgym_envs") / "data" / "textcraft" / "recipes.tar.gz"))


@functools.lru_cache(maxsize=4)
def load_recipe_book(source: str | None = None) -> RecipeBook:
    """The :class:`RecipeBook` of ``source`` (default: the shipped recipes).

    Cached per process because the book is read-only after construction and every environment of a
    vector shares it.

    Example:
        >>> "crafting table" in load_recipe_book().goals()
        True
    """
    return RecipeBook.from_source(source or default_recipes_path())


def goal_splits(book: RecipeBook) -> dict[str, list[str]]:
    """Disjoint train / valid / test goals, stratified by depth.

    Within each depth, goals are ordered by a hash of their name; the first 20% go to test, the next
    10% to valid, the rest to train, so a goal's split never depends on the other goals' order.
    """
    by_depth: dict[int, list[str]] = defaultdict(list)
    for goal in book.goals():
        by_depth[book.depth(goal)].append(goal)
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for depth in sorted(by_depth):
        goals = sorted(by_depth[depth], key=lambda g: hashlib.sha256(f"textcraft:{g}".encode()).hexdigest())
        n_test = max(1, round(0.2 * len(goals))) if len(goals) >= 3 else 0
        n_valid = max(1, round(0.1 * len(goals))) if len(goals) >= 5 else 0
        splits["test"] += goals[:n_test]
        splits["valid"] += goals[n_test:n_test + n_valid]
        splits["train"] += goals[n_test + n_valid:]
    return {k: sorted(v) for k, v in splits.items()}


# ---- commands -----------------------------------------------------------------------
_GET = re.compile(r"^get\s+(?:(\S+)\s+)?(.+)$", re.I)
_CRAFT = re.compile(r"^craft\s+(.+?)\s+using\s+(.+)$", re.I)
_COUNTED = re.compile(r"^(\d+)\s+(.+)$")
_USAGE = (
    "Use 'get <count> <item>', 'craft <count> <item> using <count> <item>, <count> <item>, ...' or 'inventory'."
)


def _counted(text: str, what: str) -> tuple[int, str]:
    m = _COUNTED.match(text.strip())
    if not m:
        raise CommandError(f"Could not understand {what} {text.strip()!r}: write it as '<count> <item>', e.g. '2 stick'.")
    return int(m.group(1)), item_name(m.group(2))


@dataclass
class CraftState:
    """The mutable state of one TextCraft episode (what :meth:`TextCraftEnv.snapshot` saves)."""

    goal: str = ""
    inventory: Counter = field(default_factory=Counter)
    shown: tuple[Recipe, ...] = ()


class TextCraftEnv(StateSnapshots, TextEnv):
    """TextCraft as a :class:`~agentgym_envs.core.TextEnv`.

    Args:
        depth: only goals whose crafting tree has this depth (``None``: every depth).
        recipes: a ``recipes.tar.gz`` or a folder of recipe JSON files (default: the shipped data).
        max_distractors: how many distractor recipes the first observation adds.
        **kwargs: see :class:`~agentgym_envs.core.TextEnv` (``max_steps`` defaults to 30).

    ``snapshot()`` / ``restore()`` save and reload the episode (for branching rollouts), and
    ``copy.deepcopy(env)`` copies the episode while sharing the read-only recipe book.

    Example:
        >>> env = TextCraftEnv(depth=1, split="test", expert_actions=True)
        >>> obs, info = env.reset(seed=0)
        >>> while True:
        ...     obs, r, term, trunc, info = env.step(info["expert_action"])
        ...     if term or trunc:
        ...         break
        >>> info["won"]
        True
    """

    family = "textcraft"
    default_max_steps = DEFAULT_MAX_STEPS
    _SHARED = ("book", "parser", "observation_space", "action_space", "_splits")

    def __init__(
        self,
        depth: int | None = None,
        recipes: str | Path | None = None,
        max_distractors: int = MAX_DISTRACTORS,
        **kwargs: Any,
    ):
        self.book = load_recipe_book(str(recipes) if recipes is not None else None)
        self.depth_filter = depth
        if max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {max_distractors}")
        self.max_distractors = int(max_distractors)
        self.state = CraftState()
        splits = goal_splits(self.book)
        if depth is not None:
            splits = {k: [g for g in v if self.book.depth(g) == depth] for k, v in splits.items()}
            if not splits["train"] and not splits["test"]:
                raise UnknownTaskError(f"no TextCraft goal has depth {depth}; depths are {sorted(self.depths())}")
        self._splits = splits
        super().__init__(**kwargs)

    def depths(self) -> set[int]:
        return {self.book.depth(g) for g in self.book.goals()}

    # ---- hooks -----------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        return TaskSplits(train=self._splits["train"], valid=self._splits["valid"], test=self._splits["test"])

    def _start(self, task_id: Hashable) -> TaskStart:
        goal = str(task_id)
        tree = self.book.tree(goal)
        shown = {r.command: r for r in tree}
        ingredients = {ing.name for r in tree for ing, _ in r.inputs}
        candidates = sorted(
            {r.command: r for name in ingredients for r in self.book.uses(name) if r.command not in shown}.values(),
            key=lambda r: r.command,
        )
        rng = self.np_random
        k = min(self.max_distractors, len(candidates))
        picked = [candidates[int(i)] for i in rng.choice(len(candidates), size=k, replace=False)] if k else []
        listing = list(shown.values()) + picked
        order = rng.permutation(len(listing))
        listing = [listing[int(i)] for i in order]
        self.state = CraftState(goal=goal, inventory=Counter(), shown=tuple(listing))
        commands = "\n".join(r.command for r in listing)
        return TaskStart(
            observation=f"Crafting commands:\n{commands}\n\nGoal: craft {goal}.",
            instruction=f"Craft {goal}.",
        )

    def _execute(self, command: str) -> Transition:
        text = command.strip().rstrip(".").strip()
        try:
            observation = self._run(text)
            error = None
        except CommandError as exc:
            observation, error = str(exc), str(exc)
        won = self.state.inventory[self.state.goal] > 0
        return Transition(
            observation=observation,
            score=1.0 if won else 0.0,
            won=won,
            extra={"command_error": error, "inventory": dict(self.state.inventory)},
        )

    def _run(self, text: str) -> str:
        lowered = text.lower()
        if lowered in ("inventory", "inv", "check inventory"):
            return self._inventory_text()
        if m := _GET.match(text):
            return self._get(m.group(1), item_name(m.group(2)))
        if m := _CRAFT.match(text):
            return self._craft(m.group(1), m.group(2))
        raise CommandError(f"Unknown command {text[:80]!r}. {_USAGE}")

    def _inventory_text(self) -> str:
        inv = self.state.inventory
        if not inv:
            return "Inventory: You are not carrying anything."
        return "Inventory: " + " ".join(f"[{item}] ({n})" for item, n in sorted(inv.items()))

    def _get(self, count_text: str | None, item: str) -> str:
        if count_text is not None and not count_text.isdigit():
            known = self.book.items | set(self.book.tags)
            joined = item_name(f"{count_text} {item}")
            if joined in known:  # "get oak logs": no count, the first word is part of the name
                item, count_text = joined, None
        if count_text is None:
            raise CommandError(f"Could not get {item}: say how many, as in 'get 1 {item}'.")
        if not count_text.isdigit() or int(count_text) < 1:
            raise CommandError(f"Could not get {item}: the count must be a positive whole number, not {count_text!r}.")
        count = int(count_text)
        if count > MAX_GET_COUNT:
            raise CommandError(f"Could not get {count} {item}: you can get at most {MAX_GET_COUNT} at a time.")
        if self.book.is_tag(item):
            example = sorted(self.book.tags[item])[0]
            raise CommandError(f"Could not get {item}: it is a kind of item; name a specific one such as {example}.")
        if item not in self.book.items:
            raise CommandError(f"Could not find {item}: there is no such item.")
        if not self.book.is_base(item):
            raise CommandError(f"Could not get {item}: it is not a base item, so it has to be crafted.")
        self.state.inventory[item] += count
        return f"Got {count} {item}"

    def _craft(self, target_text: str, using_text: str) -> str:
        m = _COUNTED.match(target_text.strip())
        target = item_name(m.group(2) if m else target_text)
        if self.book.is_tag(target):
            example = sorted(self.book.tags[target])[0]
            raise CommandError(f"Could not craft {target}: it is a kind of item; craft a specific one such as {example}.")
        if target not in self.book.items:
            raise CommandError(f"Could not craft {target}: there is no such item.")
        if self.book.is_base(target):
            raise CommandError(f"Could not craft {target}: it is a base item; get it instead.")
        given: dict[str, int] = {}
        for part in using_text.split(","):
            if not part.strip():
                continue
            n, item = _counted(part, "the ingredient")
            if n < 1:
                raise CommandError(f"Could not craft {target}: ingredient counts must be positive ({part.strip()!r}).")
            given[item] = given.get(item, 0) + n
        if not given:
            raise CommandError(f"Could not craft {target}: name the ingredients after 'using'.")
        recipe = next((r for r in self.book.recipes[target] if r.match(given) is not None), None)
        if recipe is None:
            wrote = ", ".join(f"{n} {item}" for item, n in given.items())
            raise CommandError(
                f"Could not craft {target}: no recipe makes {target} from {wrote}. Check the crafting commands."
            )
        missing = [(item, n) for item, n in given.items() if self.state.inventory[item] < n]
        if missing:
            item, n = missing[0]
            raise CommandError(
                f"Could not craft {target}: you need {n} {item} but have {self.state.inventory[item]}."
            )
        for item, n in given.items():
            self.state.inventory[item] -= n
            if self.state.inventory[item] == 0:
                del self.state.inventory[item]
        self.state.inventory[target] += recipe.count
        return f"Crafted {recipe.count} {target}"

    # ---- expert and admissible actions --------------------------------------------
    def plan(self) -> list[str]:
        """A complete list of commands that crafts the goal from the current inventory.

        Uses only the recipes shown (the goal's tree), the easiest recipe of every item, and prefers
        tag members already in the inventory.  Empty once the goal is in the inventory.
        """
        book, goal = self.book, self.state.goal
        if not goal:
            raise ExpertUnavailableError("reset() the environment before asking for the expert")
        sim = Counter(self.state.inventory)
        if sim[goal] > 0:
            return []
        shown = {r.output: r for r in sorted(self.state.shown, key=lambda r: r.command)}
        actions: list[str] = []

        def choose(ing: Ingredient, n: int) -> str:
            if not ing.is_tag:
                return ing.name
            ready = sorted(m for m in ing.members if sim[m] >= n)
            if ready:
                return ready[0]
            return min(ing.members, key=lambda m: (book.depth(m), m))

        def obtain(item: str, n: int, depth: int = 0) -> None:
            if sim[item] >= n:
                return
            if depth > 64 or (not book.is_base(item) and item not in shown):
                raise ExpertUnavailableError(f"cannot obtain {item} from the recipes shown")
            if book.is_base(item):
                actions.append(f"get {n - sim[item]} {item}")
                sim[item] = n
                return
            recipe = book.easiest_recipe(item)
            times = math.ceil((n - sim[item]) / recipe.count)
            used: list[tuple[str, int]] = []
            for ing, k in recipe.inputs:
                member = choose(ing, k * times)
                obtain(member, k * times, depth + 1)
                sim[member] -= k * times  # reserve, so that later ingredients do not consume it
                used.append((member, k))
            command = f"craft {recipe.count} {item} using " + ", ".join(f"{k} {m}" for m, k in used)
            actions.extend([command] * times)
            sim[item] += recipe.count * times

        obtain(goal, 1)
        return actions

    def _expert(self) -> str | None:
        steps = self.plan()
        return steps[0] if steps else None

    def _admissible(self) -> list[str]:
        """Commands valid now, none of them chosen by the plan (the original game lists none at all).

        ``inventory``; ``get 1 <item>`` for every base item of the recipe book, and ``get <n> <item>``
        for the counts the shown recipes ask of their base ingredients (tree and distractors alike);
        one application of every shown recipe whose ingredients are held.  Nothing singles out the
        goal's next step, so a policy that picks from the list at random stays a weak baseline.
        """
        inv = self.state.inventory
        actions = ["inventory", *(f"get 1 {item}" for item in self.book.base_items)]
        for r in self.state.shown:
            for ing, n in r.inputs:
                actions += [f"get {n} {member}" for member in sorted(ing.members) if self.book.is_base(member)]
            parts = []
            for ing, n in r.inputs:
                have = sorted(m for m in ing.members if inv[m] >= n)
                if not have:
                    break
                parts.append(f"{n} {have[0]}")
            else:
                actions.append(f"craft {r.count} {r.output} using " + ", ".join(parts))
        return list(dict.fromkeys(actions))


def registrations() -> list[Registration]:
    entry = "agentgym_envs.families.textcraft:TextCraftEnv"
    regs = [Registration("TextCraft", FAMILY, entry, {}, "TextCraft goals of every depth; 30 steps")]
    regs += [
        Registration(f"TextCraft-d{d}", FAMILY, entry, {"depth": d}, f"TextCraft goals of crafting depth {d}; 30 steps")
        for d in DEPTHS
    ]
    return regs
