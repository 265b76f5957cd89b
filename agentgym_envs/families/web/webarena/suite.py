"""The embedded task suite: WebArena-format task configs generated from the embedded sites' data.

Each template (an ``intent_template`` with its evaluator and a scripted solution) is instantiated on
entities drawn from the sites' seeded databases: 24 single-site templates x 5 entities and 2 multi-site
templates x 4 entities = 128 tasks.  Entity 0 of each template is in ``test``, entity 1 in ``valid``,
the others in ``train`` (``agentgym_split``).  The suite is stored in
``agentgym_envs/data/webarena/suite.json``; :func:`build_suite` regenerates it (a test checks that the
file is current).

The solution (``reference_action_sequence`` with ``action_set_tag: "agentgym_plan"``) is a list of
steps on named elements (``{"do": "click", "role": "link", "name": "Forums"}``), resolved to element
ids on the live page by the environment's expert.

Example:
    >>> tasks = build_suite()           # doctest: +SKIP
    >>> len(tasks), tasks[0]["sites"]   # doctest: +SKIP
    (128, ['shopping'])
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentgym_envs.families.web.shop_site import ShopCatalogue, catalogue_db
from agentgym_envs.families.web.webarena.sites.common import slug
from agentgym_envs.families.web.webarena.sites.reddit import ForumApp
from agentgym_envs.families.web.webarena.sites.shopping import ShoppingApp
from agentgym_envs.families.web.webarena.sites.shopping_admin import AdminApp, order_number

SUITE_PATH = Path(__file__).resolve().parents[3] / "data" / "webarena" / "suite.json"
ENTITIES = 5
MULTI_ENTITIES = 4


def click(name: str, role: str = "link") -> dict[str, Any]:
    return {"do": "click", "role": role, "name": name}


def type_(name: str, text: str, enter: bool = False) -> dict[str, Any]:
    return {"do": "type", "role": "textbox", "name": name, "text": text, "enter": enter}


def choose(select: str, option: str) -> dict[str, Any]:
    return {"do": "choose", "select": select, "option": option}


def goto(url: str) -> dict[str, Any]:
    return {"do": "goto", "url": url}


def stop(answer: str = "") -> dict[str, Any]:
    return {"do": "stop", "answer": answer}


def must(*contents: str) -> dict[str, Any]:
    return {"must_include": list(contents)}


def html_check(url: str, locator: str, required: dict[str, Any]) -> dict[str, Any]:
    return {"url": url, "locator": locator, "required_contents": required}


class _Data:
    """The seeded site data the templates draw from."""

    def __init__(self) -> None:
        self.catalogue = ShopCatalogue(catalogue_db(0, 3000))
        self.shopping, self.admin, self.forum = ShoppingApp(), AdminApp(), ForumApp()
        products = self.catalogue._con().execute("SELECT id, title, brand, price, category FROM products").fetchall()
        titles: dict[str, int] = {}
        for row in products:
            titles[row["title"]] = titles.get(row["title"], 0) + 1
        # Products whose title is unique and finds the product on the first page of a search for it.
        self.products = []
        for row in products[:400]:
            if titles[row["title"]] == 1:
                hits, _ = self.catalogue.search(row["title"])
                if any(h["id"] == row["id"] for h in hits):
                    self.products.append(dict(row))

    def product_options(self, pid: int) -> tuple[list[str], list[str]]:
        p = self.catalogue.product(pid)
        assert p is not None
        return p["colors"], p["sizes"]

    def posts(self) -> list[dict[str, Any]]:
        rows = self.forum.db.rows("SELECT * FROM submissions ORDER BY id")
        return [{**dict(r), "url": f"__REDDIT__/f/{r['forum']}/{r['id']}/{slug(r['title'])}",
                 "comments": self.forum.comment_count(r["id"])} for r in rows]


def _find_product(title: str) -> list[dict[str, Any]]:
    return [type_("Search products", title, enter=True), click(title)]


Template = tuple[str, list[str], Callable[[random.Random], Iterator[dict[str, Any]]]]


def _templates(d: _Data) -> Iterator[Template]:
    """(template id, sites, generator of task bodies for a seeded rng), site by site."""
    yield from _shop_templates(d)
    yield from _admin_templates(d)
    yield from _reddit_templates(d)
    yield from _multi_site_templates(d)


def _shop_templates(d: _Data) -> Iterator[Template]:
    shop_login = "./.auth/shopping_state.json"

    def product_tasks(make: Callable[[dict[str, Any], random.Random], dict[str, Any]]) -> Callable:
        def gen(rng: random.Random) -> Iterator[dict[str, Any]]:
            for p in rng.sample(d.products, ENTITIES):
                yield make(p, rng)
        return gen

    yield "shop_price", ["shopping"], product_tasks(lambda p, rng: {
        "intent": f"What is the price of the {p['title']}?", "start_url": "__SHOPPING__/",
        "eval": {"eval_types": ["string_match"], "reference_answers": must(f"{p['price']:.2f}")},
        "plan": [*_find_product(p["title"]), stop(f"${p['price']:.2f}")]})
    yield "shop_brand", ["shopping"], product_tasks(lambda p, rng: {
        "intent": f"Which brand makes the {p['title']}?", "start_url": "__SHOPPING__/",
        "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": p["brand"]}},
        "plan": [*_find_product(p["title"]), stop(p["brand"])]})
    yield "shop_product_page", ["shopping"], product_tasks(lambda p, rng: {
        "intent": f"Open the product page of the {p['title']}.", "start_url": "__SHOPPING__/",
        "eval": {"eval_types": ["url_match"], "reference_url": f"__SHOPPING__/product/{p['id']}"},
        "plan": [*_find_product(p["title"]), stop()]})

    def add_to_cart(p: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        colors, sizes = d.product_options(p["id"])
        color, size = rng.choice(colors), rng.choice(sizes)
        return {"intent": f"Add the {p['title']} in {color}, size {size}, to my cart.", "start_url": "__SHOPPING__/",
                "require_reset": True,
                "eval": {"eval_types": ["program_html"], "program_html": [
                    html_check("__SHOPPING__/cart", "", must(p["title"], f"color {color}, size {size}"))]},
                "plan": [*_find_product(p["title"]), choose("Color", color), choose("Size", size),
                         click("Add to cart", "button"), stop()]}
    yield "shop_add_to_cart", ["shopping"], product_tasks(add_to_cart)

    def color_count(rng: random.Random, navigate: bool) -> Iterator[dict[str, Any]]:
        pairs = rng.sample([(c, col) for c in ("bags", "beauty", "clothing", "electronics", "home", "shoes")
                            for col in ("black", "white", "red", "blue", "green", "navy")], ENTITIES)
        for category, color in pairs:
            _, total = d.catalogue.search("", category, color)
            # The last link of that name: the shop's navigation also has a "Home" link.
            plan = [{**click(category.title()), "index": -1}, choose("Color", color), click("Apply filters", "button")]
            if navigate:
                yield {"intent": f"Show me the {category} products that come in {color}.", "start_url": "__SHOPPING__/",
                       "eval": {"eval_types": ["url_match"],
                                "reference_url": f"__SHOPPING__/search?category={category}&color={color}"},
                       "plan": [*plan, stop()]}
            else:
                yield {"intent": f"How many {category} products are available in {color}?",
                       "start_url": "__SHOPPING__/",
                       "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": str(total)}},
                       "plan": [*plan, stop(str(total))]}
    yield "shop_color_count", ["shopping"], lambda rng: color_count(rng, navigate=False)
    yield "shop_color_filter", ["shopping"], lambda rng: color_count(rng, navigate=True)

    orders = [dict(r) for r in d.shopping.db.rows("SELECT * FROM orders ORDER BY id")]

    def order_total(rng: random.Random) -> Iterator[dict[str, Any]]:
        for o in rng.sample(orders, ENTITIES):
            yield {"intent": f"What was the grand total of my order number {o['id']:09d}?",
                   "start_url": "__SHOPPING__/customer/account", "storage_state": shop_login,
                   "eval": {"eval_types": ["string_match"], "reference_answers": must(o["total"])},
                   "plan": [click(f"View order {o['id']:09d}"), stop(f"${o['total']}")]}
    yield "shop_order_total", ["shopping"], order_total

    def order_status_count(rng: random.Random) -> Iterator[dict[str, Any]]:
        for status in ("pending", "processing", "complete", "canceled", ""):
            count = sum(o["status"] == status or not status for o in orders)
            intent = f"How many of my orders are {status}?" if status else "How many orders have I placed in total?"
            yield {"intent": intent, "start_url": "__SHOPPING__/customer/account", "storage_state": shop_login,
                   "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": str(count)}},
                   "plan": [stop(str(count))]}
    yield "shop_order_status_count", ["shopping"], order_status_count


def _admin_templates(d: _Data) -> Iterator[Template]:
    # ---- shopping_admin ----------------------------------------------------------------------
    admin_orders = [dict(r) for r in d.admin.db.rows("SELECT * FROM orders ORDER BY id")]
    admin_products = [dict(r) for r in d.admin.db.rows("SELECT * FROM products ORDER BY id")]

    def admin_order_tasks(kind: str) -> Callable:
        def gen(rng: random.Random) -> Iterator[dict[str, Any]]:
            pool = [o for o in admin_orders if o["status"] == "pending"] if kind == "cancel" else admin_orders
            for o in rng.sample(pool, ENTITIES):
                number = order_number(o["id"])
                view = [click("Orders"), click(f"View order {number}")]
                if kind == "status":
                    yield {"intent": f"What is the status of order #{number}?",
                           "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": o["status"]}},
                           "plan": [*view, stop(o["status"])]}
                elif kind == "customer":
                    yield {"intent": f"Who placed order #{number}?",
                           "eval": {"eval_types": ["string_match"], "reference_answers": must(o["customer"])},
                           "plan": [*view, stop(o["customer"])]}
                else:
                    yield {"intent": f"Cancel order #{number}.", "require_reset": True,
                           "eval": {"eval_types": ["program_html"], "program_html": [html_check(
                               f"__SHOPPING_ADMIN__/admin/sales/order/view/order_id/{o['id']}",
                               "document.querySelector('#order-status').outerText", {"exact_match": "canceled"})]},
                           "plan": [*view, click("Cancel", "button"), stop()]}
        return gen
    yield "admin_order_status", ["shopping_admin"], admin_order_tasks("status")
    yield "admin_order_customer", ["shopping_admin"], admin_order_tasks("customer")
    yield "admin_cancel_order", ["shopping_admin"], admin_order_tasks("cancel")

    def admin_product_tasks(kind: str) -> Callable:
        def gen(rng: random.Random) -> Iterator[dict[str, Any]]:
            for p in rng.sample(admin_products, ENTITIES):
                find = [click("Products"), type_("Search by keyword", p["name"], enter=True)]
                edit_url = f"__SHOPPING_ADMIN__/admin/catalog/product/edit/id/{p['id']}"
                if kind == "qty":
                    yield {"intent": f"How many units of the {p['name']} are in stock?",
                           "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": str(p["qty"])}},
                           "plan": [*find, stop(str(p["qty"]))]}
                elif kind == "edit_page":
                    yield {"intent": f"Open the edit page of the product {p['name']}.",
                           "eval": {"eval_types": ["url_match"], "reference_url": edit_url},
                           "plan": [*find, click(f"Edit {p['name']}"), stop()]}
                elif kind == "price":
                    price = f"{round(float(p['price']) * rng.choice((0.8, 0.9, 1.1, 1.25)), 2):.2f}"
                    yield {"intent": f"Change the price of the {p['name']} to ${price}.", "require_reset": True,
                           "eval": {"eval_types": ["program_html"], "program_html": [html_check(
                               edit_url, "document.querySelector('[name=\"price\"]').value", {"exact_match": price})]},
                           "plan": [*find, click(f"Edit {p['name']}"), type_("Price", price), click("Save", "button"),
                                    stop()]}
                else:
                    qty = str(rng.choice((0, 5, 25, 100, 300)))
                    yield {"intent": f"Set the stock quantity of the {p['name']} to {qty}.", "require_reset": True,
                           "eval": {"eval_types": ["program_html"], "program_html": [html_check(
                               edit_url, "document.querySelector('[name=\"qty\"]').value", {"exact_match": qty})]},
                           "plan": [*find, click(f"Edit {p['name']}"), type_("Quantity", qty), click("Save", "button"),
                                    stop()]}
        return gen
    yield "admin_product_qty", ["shopping_admin"], admin_product_tasks("qty")
    yield "admin_product_edit_page", ["shopping_admin"], admin_product_tasks("edit_page")
    yield "admin_set_price", ["shopping_admin"], admin_product_tasks("price")
    yield "admin_set_qty", ["shopping_admin"], admin_product_tasks("qty_set")

    def admin_status_filter(rng: random.Random) -> Iterator[dict[str, Any]]:
        for status in ("pending", "processing", "complete", "canceled", "pending"):
            yield {"intent": f"Show me all {status} orders.",
                   "eval": {"eval_types": ["url_match"],
                            "reference_url": f"__SHOPPING_ADMIN__/admin/sales/order?status={status}"},
                   "plan": [click("Orders"), choose("Status", status), click("Filter", "button"), stop()]}
    yield "admin_status_filter", ["shopping_admin"], admin_status_filter


def _reddit_templates(d: _Data) -> Iterator[Template]:
    # ---- reddit ----------------------------------------------------------------------------------
    posts = d.posts()

    def post_tasks(kind: str) -> Callable:
        def gen(rng: random.Random) -> Iterator[dict[str, Any]]:
            for p in rng.sample(posts, ENTITIES):
                forum = [click("Forums"), click(p["forum"])]
                title = p["title"]
                if kind == "author":
                    yield {"intent": f"Who submitted the post \"{title}\" in f/{p['forum']}?",
                           "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": p["user"]}},
                           "plan": [*forum, stop(p["user"])]}
                elif kind == "comments":
                    yield {"intent": f"How many comments does the post \"{title}\" in f/{p['forum']} have?",
                           "eval": {"eval_types": ["string_match"],
                                    "reference_answers": {"exact_match": str(p["comments"])}},
                           "plan": [*forum, stop(str(p["comments"]))]}
                elif kind == "profile":
                    yield {"intent": f"Open the profile page of the user who submitted \"{title}\" in f/{p['forum']}.",
                           "eval": {"eval_types": ["url_match"], "reference_url": f"__REDDIT__/user/{p['user']}"},
                           "plan": [*forum, click(p["user"]), stop()]}
                elif kind == "upvote":
                    yield {"intent": f"Upvote the post \"{title}\" in f/{p['forum']}.", "require_reset": True,
                           "eval": {"eval_types": ["program_html"], "program_html": [html_check(
                               p["url"], "document.querySelector('.submission').dataset.myVote", {"exact_match": "1"})]},
                           "plan": [*forum, click(title), click("Upvote", "button"), stop()]}
                else:
                    text = f"Adding this to my list, thanks u/{p['user']}!"
                    yield {"intent": f"Reply to the post \"{title}\" in f/{p['forum']} with the comment \"{text}\".",
                           "require_reset": True,
                           "eval": {"eval_types": ["program_html"], "program_html": [html_check(
                               p["url"], "document.querySelector('.comments').outerText", must(text))]},
                           "plan": [*forum, click(title), type_("Comment", text), click("Post comment", "button"),
                                    stop()]}
        return gen
    for kind in ("author", "comments", "profile", "upvote", "comment"):
        yield f"reddit_{kind}", ["reddit"], post_tasks(kind)

    forums = sorted({p["forum"] for p in posts})

    def forum_tasks(kind: str) -> Callable:
        def gen(rng: random.Random) -> Iterator[dict[str, Any]]:
            for n, name in enumerate(rng.sample(forums, ENTITIES)):
                if kind == "count":
                    count = sum(p["forum"] == name for p in posts)
                    yield {"intent": f"How many posts are there in the forum f/{name}?",
                           "eval": {"eval_types": ["string_match"], "reference_answers": {"exact_match": str(count)}},
                           "plan": [click("Forums"), click(name), stop(str(count))]}
                elif kind == "open":
                    yield {"intent": f"Take me to the forum f/{name}.",
                           "eval": {"eval_types": ["url_match"], "reference_url": f"__REDDIT__/f/{name}"},
                           "plan": [click("Forums"), click(name), stop()]}
                else:
                    title, body = f"Weekly f/{name} thread #{n + 1}", f"Share what you found this week in {name}."
                    yield {"intent": f"Create a post in f/{name} titled \"{title}\" with the body \"{body}\".",
                           "require_reset": True,
                           "eval": {"eval_types": ["program_html"], "program_html": [
                               html_check("func:reddit_get_post_url('__last_url__')",
                                          "document.querySelector('.submission__title').outerText",
                                          {"exact_match": title}),
                               html_check("func:reddit_get_post_url('__last_url__')",
                                          "document.querySelector('.submission__body').outerText", must(body))]},
                           "plan": [click("Forums"), click(name), click("Submit a post"), type_("Title", title),
                                    type_("Body", body), click("Create submission", "button"), stop()]}
        return gen
    yield "reddit_forum_count", ["reddit"], forum_tasks("count")
    yield "reddit_open_forum", ["reddit"], forum_tasks("open")
    yield "reddit_create_post", ["reddit"], forum_tasks("create")


def _multi_site_templates(d: _Data) -> Iterator[Template]:
    posts = d.posts()
    forums = sorted({p["forum"] for p in posts})
    admin_orders = [dict(r) for r in d.admin.db.rows("SELECT * FROM orders ORDER BY id")]

    # ---- multi-site --------------------------------------------------------------------------------
    def price_comment(rng: random.Random) -> Iterator[dict[str, Any]]:
        for p, post in zip(rng.sample(d.products, MULTI_ENTITIES), rng.sample(posts, MULTI_ENTITIES), strict=True):
            price = f"${p['price']:.2f}"
            yield {"intent": f"Find the price of the {p['title']} in the shop and reply to the post \"{post['title']}\""
                             f" in f/{post['forum']} with a comment that states it (like $12.34).",
                   "start_url": "__SHOPPING__/", "require_reset": True,
                   "eval": {"eval_types": ["program_html"], "program_html": [html_check(
                       post["url"], "document.querySelector('.comments').outerText", must(price))]},
                   "plan": [*_find_product(p["title"]), goto(post["url"]), type_("Comment", price),
                            click("Post comment", "button"), stop()]}
    yield "multi_price_comment", ["shopping", "reddit"], price_comment

    def status_post(rng: random.Random) -> Iterator[dict[str, Any]]:
        for o, forum in zip(rng.sample(admin_orders, MULTI_ENTITIES), rng.sample(forums, MULTI_ENTITIES), strict=True):
            number = order_number(o["id"])
            title = f"Order {number} update"
            yield {"intent": f"Look up the status of order #{number} in the shop admin, then create a post in "
                             f"f/{forum} titled \"{title}\" whose body is that status.",
                   "start_url": "__SHOPPING_ADMIN__/admin", "require_reset": True,
                   "eval": {"eval_types": ["program_html"], "program_html": [
                       html_check("func:reddit_get_post_url('__last_url__')",
                                  "document.querySelector('.submission__title').outerText", {"exact_match": title}),
                       html_check("func:reddit_get_post_url('__last_url__')",
                                  "document.querySelector('.submission__body').outerText", must(o["status"]))]},
                   "plan": [click("Orders"), click(f"View order {number}"), goto(f"__REDDIT__/submit/{forum}"),
                            type_("Title", title), type_("Body", o["status"]), click("Create submission", "button"),
                            stop()]}
    yield "multi_status_post", ["shopping_admin", "reddit"], status_post


_START = {"shopping": "__SHOPPING__/", "shopping_admin": "__SHOPPING_ADMIN__/admin", "reddit": "__REDDIT__/"}
_PLACEHOLDERS = {"shopping": "__SHOPPING__", "shopping_admin": "__SHOPPING_ADMIN__", "reddit": "__REDDIT__"}


def build_suite() -> list[dict[str, Any]]:
    """Every task config of the embedded suite (deterministic)."""
    data = _Data()
    tasks: list[dict[str, Any]] = []
    for template_id, (name, sites, generate) in enumerate(_templates(data)):
        rng = random.Random(f"agentgym-webarena-suite-{name}")
        for index, body in enumerate(generate(rng)):
            plan = body.pop("plan")
            evaluation = {"eval_types": [], "reference_answers": None, "reference_url": "", "program_html": [],
                          "string_note": "", **body.pop("eval")}
            storage = body.pop("storage_state", None)
            if storage is None:
                storage = f"./.auth/{'.'.join(sites)}_state.json" if sites != ["shopping"] else None
            tasks.append({
                "sites": sites,
                "task_id": len(tasks),
                "require_login": storage is not None,
                "storage_state": storage,
                "start_url": body.pop("start_url", _START[sites[0]]),
                "geolocation": None,
                "intent_template": name,
                "instantiation_dict": {},
                "intent": body.pop("intent"),
                "require_reset": body.pop("require_reset", False),
                "eval": evaluation,
                "intent_template_id": template_id,
                "agentgym_split": "test" if index == 0 else "valid" if index == 1 else "train",
                "reference_action_sequence": {"action_set_tag": "agentgym_plan", "action_sequence": plan},
            })
            assert not body, body
    return tasks


def write_suite(path: Path = SUITE_PATH) -> Path:
    """Regenerate the stored suite file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_suite(), indent=1, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    print(write_suite())
