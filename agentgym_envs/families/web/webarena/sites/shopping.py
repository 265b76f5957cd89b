"""``shopping``: the web family's shop (:mod:`~agentgym_envs.families.web.shop_site`) with customer accounts.

The shop's own pages (search, filters, products, cart, checkout; its SQLite catalogue) are served
unchanged; this adds ``/customer/account/login`` and the signed-in customer's ``/customer/account``
(order history) and ``/sales/order/view/order_id/<id>`` pages, kept in an SQLite database restored at
reset together with the cart.

Example:
    >>> app = ShoppingApp(catalogue_size=100)
    >>> app.db.one("SELECT count(*) AS n FROM orders")["n"]
    12
"""

from __future__ import annotations

import random
import sqlite3
from http.server import BaseHTTPRequestHandler

from agentgym_envs.families.web.shop_site import ShopCatalogue, ShopState, catalogue_db, make_handler
from agentgym_envs.families.web.webarena.sites.common import (
    Request,
    Response,
    SiteApp,
    SiteDatabase,
    app_handler,
    e,
    page,
)
from agentgym_envs.families.web.webarena.sites.shopping_admin import shop_products

CUSTOMER, CUSTOMER_PASSWORD, CUSTOMER_NAME = "emma.lopez@example.com", "Password.123", "Emma Lopez"
ORDER_STATUSES = ("pending", "processing", "complete", "canceled")


def build_accounts(con: sqlite3.Connection, seed: int = 0, catalogue_size: int = 3000) -> None:
    """Customer accounts and their past orders (deterministic in ``seed``)."""
    rng = random.Random(f"agentgym-webarena-shopping-{seed}")
    products = shop_products(seed, catalogue_size)
    con.executescript(
        """
        CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT, name TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, username TEXT, created TEXT, status TEXT, total TEXT);
        CREATE TABLE order_items (order_id INTEGER, product_id INTEGER, title TEXT, price TEXT, qty INTEGER);
        """
    )
    con.execute("INSERT INTO users VALUES (?, ?, ?)", (CUSTOMER, CUSTOMER_PASSWORD, CUSTOMER_NAME))
    for oid in range(1, 13):
        items = rng.sample(products, rng.randint(1, 3))
        qtys = [rng.randint(1, 2) for _ in items]
        total = sum(p.price * q for p, q in zip(items, qtys, strict=True))
        con.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                    (oid, CUSTOMER, f"2023-{oid:02d}-{rng.randint(1, 28):02d}", rng.choice(ORDER_STATUSES),
                     f"{total:.2f}"))
        con.executemany("INSERT INTO order_items VALUES (?, ?, ?, ?, ?)",
                        [(oid, p.id, p.title, f"{p.price:.2f}", q) for p, q in zip(items, qtys, strict=True)])


class ShoppingApp(SiteApp):
    """The customer side of the shop (``shopping`` in WebArena's task configs).

    Example:
        >>> ShoppingApp(catalogue_size=100).cookie_name
        'shop_session'
    """

    name = "shopping"
    cookie_name = "shop_session"
    default_user = CUSTOMER

    def __init__(self, seed: int = 0, catalogue_size: int = 3000):
        self.db = SiteDatabase(f"shopping-{seed}-{catalogue_size}",
                               lambda con: build_accounts(con, seed, catalogue_size))
        self.state = ShopState()
        self.catalogue = ShopCatalogue(catalogue_db(seed, catalogue_size))

    def restore(self) -> None:
        """Seeded accounts and orders, an empty cart."""
        self.db.restore()
        self.state.clear()

    def owns(self, method: str, path: str) -> bool:
        return path.startswith("/customer") or path.startswith("/sales/order")

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return app_handler(self, base=make_handler(self.catalogue, self.state), owns=self.owns)

    def route(self, req: Request) -> Response | None:
        nav = "<a href='/'>Home</a><a href='/cart'>Cart</a><a href='/customer/account'>My Account</a>"
        if req.path == "/customer/account/login":
            if req.method == "POST" and self.check_password(req.form.get("email", ""), req.form.get("password", "")):
                return self.login_response(req.form["email"], "/customer/account")
            return page("Customer Login", nav, "<h1>Customer Login</h1><form method='post' "
                        "action='/customer/account/login'><input name='email' aria-label='Email'><input type='password'"
                        " name='password' aria-label='Password'><button type='submit'>Sign In</button></form>")
        user = self.user(req)
        if user is None:
            return Response(location="/customer/account/login")
        if req.path == "/customer/account":
            rows = self.db.rows("SELECT * FROM orders WHERE username = ? ORDER BY id DESC", user)
            table = "".join(
                f"<tr><td>{r['id']:09d}</td><td>{e(r['created'])}</td><td>{e(r['status'])}</td><td><a "
                f"href='/sales/order/view/order_id/{r['id']}' aria-label='View order {r['id']:09d}'>View Order</a>"
                "</td></tr>" for r in rows)
            name = self.db.one("SELECT name FROM users WHERE username = ?", user)["name"]
            return page("My Account", nav, f"<h1>My Account</h1><p>{e(name)} ({e(user)})</p><h2>My Orders</h2><table>"
                        f"<tr><th>Order #</th><th>Date</th><th>Status</th><th>Action</th></tr>{table}</table>")
        parts = req.path.split("/")
        if req.path.startswith("/sales/order/view/order_id/") and parts[-1].isdigit():
            order = self.db.one("SELECT * FROM orders WHERE id = ? AND username = ?", int(parts[-1]), user)
            if order is None:
                return None
            items = "".join(f"<tr><td>{e(i['title'])}</td><td>${e(i['price'])}</td><td>{i['qty']}</td></tr>"
                            for i in self.db.rows("SELECT * FROM order_items WHERE order_id = ?", order["id"]))
            return page(f"Order # {order['id']:09d}", nav,
                        f"<h1>Order # {order['id']:09d}</h1><p>Status: {e(order['status'])}</p><p>Order Date: "
                        f"{e(order['created'])}</p><table><tr><th>Product Name</th><th>Price</th><th>Qty</th></tr>"
                        f"{items}</table><p>Grand Total: ${e(order['total'])}</p>")
        return None
