"""WebShop-style shopping tasks on a multi-page shop site (SQLite catalogue), in headless Chromium.

Description
-----------
The site (:mod:`agentgym_envs.families.web.shop_site`) has search, filters, product pages
with colour and size options, a cart and checkout.  Each environment starts its own
loopback server on reset and stops it on close; the catalogue (3000 products from
``catalogue_seed``) is built once into the cache.  Id: ``agentgym/WebShop-v0``.

Tasks and splits
----------------
Task ``i`` is a goal drawn deterministically from the catalogue: a product type, one or
two of its features, a colour, a size and a price limit, e.g. *"Buy lightweight
waterproof hiking boots in navy, size 9, for less than 120.00 dollars."*  The checker
does not look at which product the goal was drawn from: any purchase that matches the
goal is a success.  Test tasks 0-199, validation 200-399, train 400-9999.

Actions
-------
Tool calls on the listed elements, shared by every web family (see
:mod:`agentgym_envs.families.web.base`): search by ``type`` into the search box and ``click`` on Search,
choose options with ``select``, follow links and buttons with ``click``.

Observation
-----------
The goal, the page's URL and its listing of interactive elements, one ``[id] role
"name"`` line each.  ``info["goal"]`` holds the goal, ``info["purchased"]`` the items of
the order.

Rewards
-------
WebShop-style: placing an order ends the episode with score
``type_match * (matched features + matched options + price within limit) / (features + options + 1)``
of the best purchased item, where ``type_match`` is 1 for the right product type, 0.5 for
the right category and 0.1 otherwise.  ``won`` = score 1 (an exact purchase): so
``reward="dense"`` pays the partial match and ``reward="sparse"`` pays only exact
purchases.

Expert
------
Searches for the goal's source product by its title, opens it, chooses the colour and
size, adds it to the cart and checks out, through the same tool calls as the agent
(``expert_actions=True`` or ``env.expert_action()``).

Termination
-----------
Terminated by an order, or by ``stop(answer)`` (no purchase, score 0); truncated after 25
steps by default, past the episode's wall-clock limit or when the page stops answering
(``"time_limit"``), or when the browser dies (``"crash"``).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/WebShop-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                              # doctest: +SKIP
    >>> while True:                                                                # doctest: +SKIP
    ...     obs, r, term, trunc, info = env.step(info["expert_action"])
    ...     if term or trunc: break
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from agentgym_envs.core import TaskSplits, TaskStart
from agentgym_envs.errors import ExpertUnavailableError
from agentgym_envs.families.web.base import WebEnv
from agentgym_envs.families.web.shop_site import (
    CATEGORIES,
    CartItem,
    Product,
    ShopCatalogue,
    ShopState,
    catalogue_db,
    generate_catalogue,
    make_handler,
)
from agentgym_envs.parsing import ToolCall
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "webshop",
    extra="web",
    requires=("playwright",),
    description="Shopping tasks on a multi-page shop site backed by SQLite, in headless Chromium.",
    worker="process",  # a browser: a step costs far more than a trip through a pipe
)

TEST_TASKS = range(0, 200)
VALID_TASKS = range(200, 400)
TRAIN_TASKS = range(400, 10000)


@dataclass(frozen=True)
class ShopGoal:
    """What to buy: product type, features, options and a price limit (plus the source product).

    Example:
        >>> g = ShopGoal("bags", "backpack", ("canvas",), "black", "large", 50.0, 7)
        >>> g.instruction()
        'Buy a canvas backpack in black, size large, for less than 50.00 dollars.'
    """

    category: str
    noun: str
    features: tuple[str, ...]
    color: str
    size: str
    price_limit: float
    source_product: int

    def instruction(self) -> str:
        features = " ".join(self.features)
        article = "" if self.noun.endswith("s") or self.noun in ("jeans", "shorts") else "a "
        return (
            f"Buy {article}{features} {self.noun} in {self.color}, size {self.size}, "
            f"for less than {self.price_limit:.2f} dollars."
        )

    def score(self, item: CartItem, product: Product) -> float:
        """WebShop-style match of one purchased item against the goal, in [0, 1]."""
        type_match = 1.0 if product.noun == self.noun else 0.5 if product.category == self.category else 0.1
        hits = sum(f in product.features for f in self.features)
        hits += (item.color == self.color) + (item.size == self.size) + (item.price <= self.price_limit)
        return type_match * hits / (len(self.features) + 3)


@lru_cache(maxsize=4)
def _catalogue(seed: int, size: int) -> tuple[Product, ...]:
    return tuple(generate_catalogue(seed, size))


def make_goal(task: int, catalogue_seed: int = 0, catalogue_size: int = 3000) -> ShopGoal:
    """The goal of task ``task`` (deterministic).

    Example:
        >>> make_goal(3, catalogue_size=100) == make_goal(3, catalogue_size=100)
        True
    """
    products = _catalogue(catalogue_seed, catalogue_size)
    rng = random.Random(f"agentgym-shop-task-{catalogue_seed}-{task}")
    p = rng.choice(products)
    k = min(len(p.features), rng.randint(1, 2))
    features = tuple(sorted(rng.sample(p.features, k), key=p.features.index))
    limit = round(p.price * rng.uniform(1.1, 1.6) + 0.5, 0)
    return ShopGoal(p.category, p.noun, features, rng.choice(p.colors), rng.choice(p.sizes), float(limit), p.id)


class WebShopEnv(WebEnv):
    """Buy the product the instruction describes on a real multi-page shop site.

    Args:
        catalogue_seed: which generated catalogue to use.
        catalogue_size: number of products.
        **kwargs: see :class:`~agentgym_envs.families.web.base.WebEnv` and :class:`~agentgym_envs.core.TextEnv`.

    Example:
        >>> env = WebShopEnv(split="test", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": 0})           # doctest: +SKIP
    """

    family = "webshop"
    default_max_steps = 25

    def __init__(self, catalogue_seed: int = 0, catalogue_size: int = 3000, **kwargs: Any):
        if catalogue_size < 10:
            raise ValueError(f"catalogue_size must be >= 10, got {catalogue_size}")
        self.catalogue_seed = int(catalogue_seed)
        self.catalogue_size = int(catalogue_size)
        self.state = ShopState()
        self.goal: ShopGoal | None = None
        self._products: dict[int, Product] = {}
        super().__init__(**kwargs)

    def _task_splits(self) -> TaskSplits:
        return TaskSplits(train=TRAIN_TASKS, valid=VALID_TASKS, test=TEST_TASKS)

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [t for t in available if lo <= int(t) <= hi]  # type: ignore[call-overload]

    def _server_handler(self) -> Any:
        db = catalogue_db(self.catalogue_seed, self.catalogue_size)
        self._products = {p.id: p for p in _catalogue(self.catalogue_seed, self.catalogue_size)}
        return make_handler(ShopCatalogue(db), self.state)

    def _web_start(self, task_id: Hashable) -> TaskStart:
        assert self.session is not None and self.server is not None
        self.goal = make_goal(int(task_id), self.catalogue_seed, self.catalogue_size)  # type: ignore[call-overload]
        self.state.clear()
        self.session.goto(self.server.url("/"))
        return TaskStart(observation="", instruction=self.goal.instruction(), max_score=1.0, score=0.0)

    def _purchase_score(self) -> tuple[float, list[dict[str, Any]]]:
        assert self.goal is not None
        with self.state.lock:
            items = [it for order in self.state.orders for it in order]
        scores = [self.goal.score(it, self._products[it.product_id]) for it in items]
        return (max(scores) if scores else 0.0), [asdict(it) for it in items]

    def _web_outcome(self, state: Any, call: ToolCall | None) -> tuple[float, bool, bool]:
        if not self.state.orders:
            self._purchased: list[dict[str, Any]] = []
            return 0.0, False, False
        score, self._purchased = self._purchase_score()
        won = score >= 1.0 - 1e-9
        return score, won, not won

    def _stop(self, answer: str) -> tuple[float, bool, bool]:
        return self._score, False, True

    def _web_info(self) -> dict[str, Any]:
        info = super()._web_info()
        info["goal"] = asdict(self.goal) if self.goal else None
        info["purchased"] = list(getattr(self, "_purchased", []))
        return info

    # ---- expert -------------------------------------------------------------------------------
    def _expert(self) -> str | None:
        goal = self.goal
        if goal is None or self._done:
            return None
        target = self._products[goal.source_product]
        url = getattr(self, "_url", "") or ""
        with self.state.lock:
            in_cart = any(
                it.product_id == target.id and it.color == goal.color and it.size == goal.size for it in self.state.cart
            )
        if in_cart:
            if url.startswith("/checkout"):
                return self._click(role="button", name="Place order")
            if url.startswith("/cart"):
                return self._click(role="link", name="Proceed to checkout")
            return self._click(role="link", contains="Cart (")
        if url == f"/product/{target.id}":
            for select, wanted in (("Color", goal.color), ("Size", goal.size)):
                node = self.find_node(role="combobox", name=select)
                if node is None:
                    raise ExpertUnavailableError(f"no {select} drop-down on the product page")
                if node.value != wanted:
                    return f"select({node.id}, {wanted!r})"
            return self._click(role="button", name="Add to cart")
        if url.startswith("/search"):
            link = self.find_node(role="link", name=target.title)
            if link is not None:
                return f"click({link.id})"
        box = self.find_node(role="textbox", name="Search products")
        if box is None:
            raise ExpertUnavailableError("no search box on this page")
        if box.value != target.title:
            return f"type({box.id}, {target.title!r})"
        if url.startswith("/search"):
            nxt = self.find_node(role="link", name="Next page")
            if nxt is not None and "q=" in url:
                return f"click({nxt.id})"
        return self._click(role="button", name="Search")

    def _click(self, role: str, name: str | None = None, contains: str | None = None) -> str:
        node = self.find_node(role=role, name=name, contains=contains)
        if node is None:
            raise ExpertUnavailableError(f"no {role} {name or contains!r} on this page")
        return f"click({node.id})"


def registrations() -> list[Registration]:
    entry = "agentgym_envs.families.web.shop:WebShopEnv"
    return [
        Registration("WebShop", FAMILY, entry, {}, f"buy a product matching a goal; {len(CATEGORIES)} categories, "
                                                   "3000 products"),
    ]
