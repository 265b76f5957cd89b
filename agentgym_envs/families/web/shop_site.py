"""A small multi-page web shop: a seeded catalogue in SQLite and server-rendered pages.

In the spirit of WebShop and WebArena's shopping site: search (SQLite FTS5, BM25
ranking), category / colour / feature / price filters, product pages with colour and
size options, a cart, checkout and an order confirmation.  Pages are plain HTML forms
and links (no JavaScript), served by :class:`~agentgym_envs.families.web.server.LoopbackServer`.

The catalogue is generated deterministically from a seed (:func:`generate_catalogue`)
and stored once in the cache (:func:`catalogue_db`); every environment opens it
read-only.  Carts and orders live in a :class:`ShopState` that belongs to one
environment's server and is cleared at each reset.

Example:
    >>> products = generate_catalogue(seed=0, size=50)
    >>> products[0].title  # doctest: +SKIP
    'Norvik waterproof leather hiking boots'
    >>> len({p.id for p in products})
    50
"""

from __future__ import annotations

import html
import random
import sqlite3
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from agentgym_envs.cache import build_once, cache_dir

#: Category -> product nouns, features and option sizes.
CATEGORIES: dict[str, dict[str, tuple[str, ...]]] = {
    "shoes": {
        "nouns": ("running shoes", "sneakers", "hiking boots", "sandals", "loafers", "slippers"),
        "features": ("waterproof", "leather", "lightweight", "slip-on", "breathable", "non-slip", "memory foam", "vegan"),
        "sizes": ("6", "7", "8", "9", "10", "11", "12"),
    },
    "clothing": {
        "nouns": ("t-shirt", "hoodie", "rain jacket", "jeans", "summer dress", "sweater", "shorts"),
        "features": ("cotton", "organic", "slim fit", "relaxed fit", "machine washable", "wrinkle-free",
                     "fleece-lined", "stretch"),
        "sizes": ("XS", "S", "M", "L", "XL", "XXL"),
    },
    "bags": {
        "nouns": ("backpack", "tote bag", "messenger bag", "duffel bag", "laptop sleeve", "belt bag"),
        "features": ("water-resistant", "canvas", "leather", "anti-theft", "padded", "foldable", "lightweight"),
        "sizes": ("small", "medium", "large"),
    },
    "electronics": {
        "nouns": ("wireless earbuds", "headphones", "bluetooth speaker", "phone charger", "usb-c cable", "smart watch"),
        "features": ("noise cancelling", "fast charging", "waterproof", "long battery life", "portable", "compact",
                     "bluetooth 5.3"),
        "sizes": ("1 pack", "2 pack", "3 pack"),
    },
    "home": {
        "nouns": ("desk lamp", "throw pillow", "coffee mug", "scented candle", "wall clock", "storage basket"),
        "features": ("dimmable", "ceramic", "handmade", "eco-friendly", "dishwasher safe", "minimalist", "rechargeable"),
        "sizes": ("small", "medium", "large"),
    },
    "beauty": {
        "nouns": ("face moisturizer", "shampoo", "lip balm", "sunscreen", "hand cream", "body wash"),
        "features": ("fragrance free", "paraben free", "organic", "vegan", "cruelty free", "spf 50", "sensitive skin"),
        "sizes": ("1 oz", "2 oz", "4 oz", "8 oz"),
    },
}
COLORS = ("black", "white", "red", "blue", "green", "navy", "grey", "brown", "pink", "beige", "yellow", "purple")
_BRAND_A = ("Nor", "Vel", "Kas", "Lum", "Tor", "Bri", "Zen", "Ora", "Fel", "Mar", "Sol", "Ast")
_BRAND_B = ("vik", "ora", "dex", "ina", "ton", "ley", "ix", "and", "mo", "ra")
PRICE_RANGES = {"shoes": (25, 180), "clothing": (9, 120), "bags": (15, 150), "electronics": (8, 250),
                "home": (6, 90), "beauty": (4, 45)}
PAGE_SIZE = 10
CATALOGUE_VERSION = 1


@dataclass(frozen=True)
class Product:
    """One catalogue entry.

    Example:
        >>> p = Product(1, "bags", "backpack", "Norvik", ("canvas",), ("black",), ("large",), 30.0, 4.5)
        >>> p.title
        'Norvik canvas backpack'
    """

    id: int
    category: str
    noun: str
    brand: str
    features: tuple[str, ...]
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    price: float
    rating: float

    @property
    def title(self) -> str:
        return " ".join([self.brand, *self.features, self.noun])

    @property
    def description(self) -> str:
        return (
            f"A {', '.join(self.features)} {self.noun} by {self.brand}. "
            f"Available in {', '.join(self.colors)}; sizes {', '.join(self.sizes)}."
        )


def generate_catalogue(seed: int = 0, size: int = 3000) -> list[Product]:
    """``size`` products drawn deterministically from ``seed`` (same seed, same catalogue).

    Example:
        >>> generate_catalogue(1, 5) == generate_catalogue(1, 5)
        True
    """
    rng = random.Random(f"agentgym-shop-{seed}")
    brands = [a + b for a in _BRAND_A for b in _BRAND_B]
    categories = sorted(CATEGORIES)
    products = []
    for pid in range(1, size + 1):
        category = rng.choice(categories)
        spec = CATEGORIES[category]
        features = tuple(sorted(rng.sample(spec["features"], rng.randint(1, 3)), key=spec["features"].index))
        colors = tuple(sorted(rng.sample(COLORS, rng.randint(2, 5)), key=COLORS.index))
        k = rng.randint(2, len(spec["sizes"]))
        start = rng.randint(0, len(spec["sizes"]) - k)
        sizes = spec["sizes"][start:start + k]
        lo, hi = PRICE_RANGES[category]
        price = round(rng.uniform(lo, hi), 2)
        products.append(
            Product(pid, category, rng.choice(spec["nouns"]), rng.choice(brands), features, colors, sizes, price,
                    round(rng.uniform(2.5, 5.0), 1))
        )
    return products


def catalogue_db(seed: int = 0, size: int = 3000) -> Path:
    """Build (once, under a file lock) and return the SQLite file of a catalogue."""
    path = cache_dir("webshop") / f"catalogue-v{CATALOGUE_VERSION}-s{seed}-n{size}.sqlite"
    return build_once(path, lambda tmp: _write_catalogue(tmp, seed, size))


def _write_catalogue(path: Path, seed: int, size: int) -> None:
    con = sqlite3.connect(path)
    with con:
        con.executescript(
            """
            CREATE TABLE products (id INTEGER PRIMARY KEY, category TEXT, noun TEXT, brand TEXT, title TEXT,
                                   price REAL, rating REAL, description TEXT);
            CREATE TABLE features (product_id INTEGER, feature TEXT);
            CREATE TABLE options (product_id INTEGER, kind TEXT, value TEXT, position INTEGER);
            CREATE INDEX features_by_product ON features(product_id);
            CREATE INDEX options_by_product ON options(product_id);
            CREATE VIRTUAL TABLE product_text USING fts5(title, description, category, content='products',
                                                         content_rowid='id');
            """
        )
        for p in generate_catalogue(seed, size):
            con.execute("INSERT INTO products VALUES (?,?,?,?,?,?,?,?)",
                        (p.id, p.category, p.noun, p.brand, p.title, p.price, p.rating, p.description))
            con.executemany("INSERT INTO features VALUES (?,?)", [(p.id, f) for f in p.features])
            con.executemany("INSERT INTO options VALUES (?,?,?,?)",
                            [(p.id, "color", c, i) for i, c in enumerate(p.colors)]
                            + [(p.id, "size", s, i) for i, s in enumerate(p.sizes)])
        con.execute("INSERT INTO product_text(product_text) VALUES ('rebuild')")
    con.close()


@dataclass
class CartItem:
    product_id: int
    title: str
    price: float
    color: str
    size: str


@dataclass
class ShopState:
    """Carts and orders of one environment's shop, shared between its server threads.

    Example:
        >>> s = ShopState(); s.orders
        []
    """

    cart: list[CartItem] = field(default_factory=list)
    orders: list[list[CartItem]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def clear(self) -> None:
        with self.lock:
            self.cart.clear()
            self.orders.clear()


class ShopCatalogue:
    """Read-only queries on a catalogue file, one SQLite connection per thread.

    Example:
        >>> cat = ShopCatalogue(catalogue_db(0, 200))  # doctest: +SKIP
        >>> cat.product(1)["title"]                     # doctest: +SKIP
    """

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    def product(self, pid: int) -> dict[str, Any] | None:
        row = self._con().execute("SELECT * FROM products WHERE id = ?", (pid,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["features"] = [r[0] for r in self._con().execute(
            "SELECT feature FROM features WHERE product_id = ? ORDER BY rowid", (pid,))]
        opts = self._con().execute("SELECT kind, value FROM options WHERE product_id = ? ORDER BY position", (pid,))
        out["colors"], out["sizes"] = [], []
        for kind, value in opts:
            out["colors" if kind == "color" else "sizes"].append(value)
        return out

    def features(self, category: str | None) -> list[str]:
        if category:
            return list(CATEGORIES.get(category, {}).get("features", ()))
        return sorted({f for spec in CATEGORIES.values() for f in spec["features"]})

    def search(self, query: str = "", category: str = "", color: str = "", feature: str = "",
               max_price: float | None = None, page: int = 1) -> tuple[list[dict[str, Any]], int]:
        """One page of matching products (best first) and the number of matches."""
        where, params = [], []
        source = "products p"
        order = "p.id"
        words = [w for w in "".join(c if c.isalnum() else " " for c in query.lower()).split() if w]
        if words:
            source = "product_text JOIN products p ON p.id = product_text.rowid"
            where.append("product_text MATCH ?")
            params.append(" OR ".join(f'"{w}"' for w in words))
            order = "bm25(product_text, 10.0, 1.0, 2.0), p.id"
        if category:
            where.append("p.category = ?")
            params.append(category)
        if color:
            where.append("EXISTS (SELECT 1 FROM options o WHERE o.product_id = p.id AND o.kind='color' AND o.value=?)")
            params.append(color)
        if feature:
            where.append("EXISTS (SELECT 1 FROM features f WHERE f.product_id = p.id AND f.feature = ?)")
            params.append(feature)
        if max_price is not None:
            where.append("p.price <= ?")
            params.append(max_price)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        con = self._con()
        total = con.execute(f"SELECT count(*) FROM {source} {clause}", params).fetchone()[0]
        rows = con.execute(
            f"SELECT p.id, p.title, p.price, p.rating FROM {source} {clause} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, PAGE_SIZE, (max(1, page) - 1) * PAGE_SIZE],
        ).fetchall()
        return [dict(r) for r in rows], total


# ---- pages ---------------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _select(name: str, label: str, options: list[str], chosen: str, blank: str) -> str:
    opts = [f'<option value="">{_e(blank)}</option>']
    opts += [f'<option value="{_e(o)}"{" selected" if o == chosen else ""}>{_e(o)}</option>' for o in options]
    return f'<label for="{name}">{_e(label)}</label> <select id="{name}" name="{name}">{"".join(opts)}</select>'


def _layout(title: str, body: str, state: ShopState, query: str = "") -> str:
    count = len(state.cart)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + _e(title) + " - Shop</title>"
        "<style>body{font-family:sans-serif;margin:8px} .result{margin:4px 0} nav a{margin-right:12px}</style>"
        "</head><body><nav><a href='/'>Home</a><a href='/cart'>Cart (" + str(count) + ")</a></nav>"
        "<form action='/search' method='get' role='search'>"
        f"<input type='text' name='q' aria-label='Search products' value='{_e(query)}'>"
        "<button type='submit'>Search</button></form>" + body + "</body></html>"
    )


class ShopRequestHandler(BaseHTTPRequestHandler):
    """The shop's pages and forms; :func:`make_handler` binds a subclass to one shop's catalogue and cart state."""

    catalogue: ShopCatalogue
    state: ShopState
    server_version = "AgentGymShop/1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base-class signature
        pass

    # -- plumbing --
    def _send(self, status: int, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(303)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return {k: v[0] for k, v in parse_qs(data).items()}

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path.rstrip("/") or "/"
        try:
            if path == "/":
                return self._send(200, self._home())
            if path == "/search":
                return self._send(200, self._search(query))
            if path.startswith("/product/") and path.split("/")[-1].isdigit():
                return self._product(int(path.split("/")[-1]), error="")
            if path == "/cart":
                return self._send(200, self._cart())
            if path == "/checkout":
                return self._send(200, self._checkout())
            if path.startswith("/order/") and path.split("/")[-1].isdigit():
                return self._send(200, self._order(int(path.split("/")[-1])))
        except (ValueError, KeyError):
            return self._send(400, _layout("Bad request", "<h1>Bad request</h1>", self.state))
        self._send(404, _layout("Not found", "<h1>Page not found</h1>", self.state))

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        form = self._form()
        if path == "/cart/add":
            return self._add(form)
        if path == "/cart/remove":
            index = int(form.get("index", "-1")) if form.get("index", "").isdigit() else -1
            with self.state.lock:
                if 0 <= index < len(self.state.cart):
                    self.state.cart.pop(index)
            return self._redirect("/cart")
        if path == "/order":
            with self.state.lock:
                if not self.state.cart:
                    return self._redirect("/checkout")
                self.state.orders.append(list(self.state.cart))
                self.state.cart.clear()
                number = len(self.state.orders)
            return self._redirect(f"/order/{number}")
        self._send(404, _layout("Not found", "<h1>Page not found</h1>", self.state))

    # -- pages --
    def _home(self) -> str:
        links = "".join(
            f"<li><a href='/search?{urlencode({'category': c})}'>{_e(c.title())}</a></li>" for c in sorted(CATEGORIES)
        )
        return _layout("Home", f"<h1>Welcome to the shop</h1><h2>Categories</h2><ul>{links}</ul>", self.state)

    def _search(self, q: dict[str, str]) -> str:
        text = q.get("q", "")
        category = q.get("category", "") if q.get("category", "") in CATEGORIES else ""
        color = q.get("color", "") if q.get("color", "") in COLORS else ""
        feature = q.get("feature", "")
        if feature not in self.catalogue.features(category or None):
            feature = ""
        try:
            max_price = float(q["max_price"]) if q.get("max_price", "").strip() else None
        except ValueError:
            max_price = None
        page = int(q["page"]) if q.get("page", "").isdigit() else 1
        rows, total = self.catalogue.search(text, category, color, feature, max_price, page)
        pages = max(1, -(-total // PAGE_SIZE))
        keep = {k: v for k, v in (("q", text), ("category", category), ("color", color), ("feature", feature),
                                  ("max_price", q.get("max_price", ""))) if v}
        filters = (
            "<form action='/search' method='get' aria-label='Filters'>"
            f"<input type='hidden' name='q' value='{_e(text)}'>"
            + _select("category", "Category", sorted(CATEGORIES), category, "any category")
            + _select("color", "Color", list(COLORS), color, "any color")
            + _select("feature", "Feature", self.catalogue.features(category or None), feature, "any feature")
            + "<label for='max_price'>Max price</label> "
            f"<input type='text' id='max_price' name='max_price' value='{_e(q.get('max_price', ''))}'>"
            "<button type='submit'>Apply filters</button></form>"
        )
        items = "".join(
            f"<div class='result'><a href='/product/{r['id']}'>{_e(r['title'])}</a> "
            f"<span>${r['price']:.2f}</span></div>"
            for r in rows
        ) or "<p>No products match.</p>"
        nav = []
        if page > 1:
            nav.append(f"<a href='/search?{urlencode({**keep, 'page': page - 1})}'>Previous page</a>")
        if page < pages:
            nav.append(f"<a href='/search?{urlencode({**keep, 'page': page + 1})}'>Next page</a>")
        body = (
            f"<h1>Search results</h1>{filters}<p>{total} products, page {min(page, pages)} of {pages}</p>"
            f"<div id='results'>{items}</div><div>{' '.join(nav)}</div>"
        )
        return _layout("Search", body, self.state, text)

    def _product(self, pid: int, error: str, chosen: dict[str, str] | None = None) -> None:
        p = self.catalogue.product(pid)
        if p is None:
            return self._send(404, _layout("Not found", "<h1>No such product</h1>", self.state))
        chosen = chosen or {}
        body = (
            f"<h1>{_e(p['title'])}</h1><p>Price: ${p['price']:.2f}</p><p>Brand: {_e(p['brand'])}</p>"
            f"<p>Rating: {p['rating']:.1f} out of 5</p><p>Features: {_e(', '.join(p['features']))}</p>"
            f"<p>{_e(p['description'])}</p>"
            + (f"<p role='alert'>{_e(error)}</p>" if error else "")
            + "<form action='/cart/add' method='post'>"
            f"<input type='hidden' name='product_id' value='{pid}'>"
            + _select("color", "Color", p["colors"], chosen.get("color", ""), "choose a color")
            + _select("size", "Size", p["sizes"], chosen.get("size", ""), "choose a size")
            + "<button type='submit'>Add to cart</button></form>"
        )
        self._send(200 if not error else 400, _layout(p["title"], body, self.state))

    def _add(self, form: dict[str, str]) -> None:
        pid = int(form["product_id"]) if form.get("product_id", "").isdigit() else -1
        p = self.catalogue.product(pid)
        if p is None:
            return self._send(404, _layout("Not found", "<h1>No such product</h1>", self.state))
        color, size = form.get("color", ""), form.get("size", "")
        if color not in p["colors"] or size not in p["sizes"]:
            missing = [n for n, v, ok in (("color", color, p["colors"]), ("size", size, p["sizes"])) if v not in ok]
            return self._product(pid, f"Please choose a {' and a '.join(missing)}.", {"color": color, "size": size})
        with self.state.lock:
            self.state.cart.append(CartItem(pid, p["title"], p["price"], color, size))
        self._redirect("/cart")

    def _cart(self) -> str:
        rows = "".join(
            f"<li><a href='/product/{it.product_id}'>{_e(it.title)}</a> <span>color {_e(it.color)}, size "
            f"{_e(it.size)}, ${it.price:.2f}</span><form action='/cart/remove' method='post' style='display:inline'>"
            f"<input type='hidden' name='index' value='{i}'><button type='submit'>Remove</button></form></li>"
            for i, it in enumerate(self.state.cart)
        )
        total = sum(it.price for it in self.state.cart)
        body = (
            f"<h1>Your cart</h1><ul>{rows}</ul><p>Total: ${total:.2f}</p><a href='/checkout'>Proceed to checkout</a>"
            if self.state.cart else "<h1>Your cart</h1><p>Your cart is empty.</p>"
        )
        return _layout("Cart", body, self.state)

    def _checkout(self) -> str:
        if not self.state.cart:
            return _layout("Checkout", "<h1>Checkout</h1><p>Your cart is empty.</p>", self.state)
        lines = "".join(f"<li>{_e(it.title)} ({_e(it.color)}, {_e(it.size)}) ${it.price:.2f}</li>" for it in self.state.cart)
        body = (
            f"<h1>Checkout</h1><ul>{lines}</ul><p>Total: ${sum(i.price for i in self.state.cart):.2f}</p>"
            "<form action='/order' method='post'><button type='submit'>Place order</button></form>"
        )
        return _layout("Checkout", body, self.state)

    def _order(self, number: int) -> str:
        if not 1 <= number <= len(self.state.orders):
            return _layout("Order", "<h1>No such order</h1>", self.state)
        items = "".join(f"<li>{_e(i.title)} ({_e(i.color)}, {_e(i.size)})</li>" for i in self.state.orders[number - 1])
        return _layout("Order placed", f"<h1>Thank you! Order #{number} is placed.</h1><ul>{items}</ul>", self.state)


def make_handler(catalogue: ShopCatalogue, state: ShopState) -> type[BaseHTTPRequestHandler]:
    """The request handler class of one shop (its catalogue and its cart state).

    Example:
        >>> handler = make_handler(ShopCatalogue(Path("x.sqlite")), ShopState())
        >>> handler.__name__
        'ShopHandler'
    """
    return type("ShopHandler", (ShopRequestHandler,), {"catalogue": catalogue, "state": state})

