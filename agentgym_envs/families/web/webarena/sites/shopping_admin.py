"""``shopping_admin``: a Magento-admin-style back office for the shop (products, orders, customers) on SQLite.

Everything needs a signed-in admin (``admin`` / ``admin1234``).  Pages follow Magento's admin URLs:
``/admin`` (dashboard), ``/admin/catalog/product`` (grid, ``?search=``),
``/admin/catalog/product/edit/id/<id>`` (edit and save), ``/admin/sales/order`` (grid, ``?status=``),
``/admin/sales/order/view/order_id/<id>`` (cancel, comment) and ``/admin/customer/index``.

Example:
    >>> app = AdminApp()
    >>> app.db.one("SELECT count(*) AS n FROM orders")["n"]
    40
"""

from __future__ import annotations

import random
import sqlite3
from functools import lru_cache

from agentgym_envs.families.web.shop_site import Product, generate_catalogue
from agentgym_envs.families.web.webarena.sites.common import Request, Response, SiteApp, SiteDatabase, e, page

ORDER_STATUSES = ("pending", "processing", "complete", "canceled")
CUSTOMERS = ("Emma Lopez", "Liam Chen", "Olivia Novak", "Noah Patel", "Ava Schmidt", "Lucas Moreau", "Mia Rossi",
             "Ethan Kim", "Sofia Jensen", "Mason Okafor")
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin1234"
ADMIN_PRODUCTS = 30


@lru_cache(maxsize=2)
def shop_products(seed: int = 0, size: int = 3000) -> tuple[Product, ...]:
    """The shop's catalogue (the same products the customer side sells)."""
    return tuple(generate_catalogue(seed, size))


def order_number(order_id: int) -> str:
    """Magento's increment id: ``000000012``."""
    return f"{order_id:09d}"


def build_admin(con: sqlite3.Connection, seed: int = 0) -> None:
    """The back office's schema and seeded rows (deterministic in ``seed``)."""
    rng = random.Random(f"agentgym-webarena-admin-{seed}")
    con.executescript(
        """
        CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT);
        CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT, name TEXT, price TEXT, qty INTEGER, status TEXT);
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, status TEXT, total TEXT, created TEXT);
        CREATE TABLE order_comments (order_id INTEGER, body TEXT);
        """
    )
    con.execute("INSERT INTO users VALUES (?, ?)", (ADMIN_USER, ADMIN_PASSWORD))
    for p in shop_products(seed)[:ADMIN_PRODUCTS]:
        con.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)",
                    (p.id, f"SKU-{p.id:05d}", p.title, f"{p.price:.2f}", rng.randint(0, 250), "enabled"))
    for i, name in enumerate(CUSTOMERS, 1):
        con.execute("INSERT INTO customers VALUES (?, ?, ?)", (i, name, name.lower().replace(" ", ".") + "@example.com"))
    for oid in range(1, 41):
        status = ORDER_STATUSES[0] if oid % 4 == 1 else rng.choice(ORDER_STATUSES)
        con.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                    (oid, rng.choice(CUSTOMERS), status, f"{rng.uniform(15, 400):.2f}",
                     f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"))


class AdminApp(SiteApp):
    """The shop's back office (``shopping_admin`` in WebArena's task configs).

    Example:
        >>> AdminApp().db.one("SELECT sku FROM products ORDER BY id")["sku"]
        'SKU-00001'
    """

    name = "shopping_admin"
    cookie_name = "admin_session"
    default_user = ADMIN_USER

    def __init__(self, seed: int = 0):
        self.db = SiteDatabase(f"shopping_admin-{seed}", lambda con: build_admin(con, seed))

    def _nav(self) -> str:
        return ("<a href='/admin'>Dashboard</a><a href='/admin/catalog/product'>Products</a>"
                "<a href='/admin/sales/order'>Orders</a><a href='/admin/customer/index'>Customers</a>")

    def route(self, req: Request) -> Response | None:
        if req.path == "/admin/login" and req.method == "POST":
            if self.check_password(req.form.get("username", ""), req.form.get("password", "")):
                return self.login_response(req.form["username"], "/admin")
            return Response(location="/admin")
        if not (req.path == "/admin" or req.path.startswith("/admin/")):
            return Response(location="/admin") if req.path == "/" else None
        if self.user(req) is None:
            return page("Sign in", "", "<h1>Welcome, please sign in</h1><form method='post' action='/admin/login'>"
                        "<input name='username' aria-label='Username'><input type='password' name='password' "
                        "aria-label='Password'><button type='submit'>Sign in</button></form>")
        nav = self._nav()
        parts = req.path.split("/")[2:]
        if not parts:
            pending = self.db.one("SELECT count(*) AS n FROM orders WHERE status = 'pending'")["n"]
            return page("Dashboard", nav, f"<h1>Dashboard</h1><p>{pending} pending orders</p>")
        if parts == ["catalog", "product"]:
            return self._products(req, nav)
        if parts[:3] == ["catalog", "product", "edit"] and len(parts) == 5 and parts[4].isdigit():
            return self._edit(req, int(parts[4]), nav)
        if parts == ["sales", "order"]:
            return self._orders(req, nav)
        if parts[:3] == ["sales", "order", "view"] and len(parts) == 5 and parts[4].isdigit():
            return self._order(int(parts[4]), nav)
        if parts[:3] == ["sales", "order", "cancel"] and len(parts) == 5 and req.method == "POST":
            self.db.write("UPDATE orders SET status = 'canceled' WHERE id = ? AND status IN ('pending', 'processing')",
                          int(parts[4]))
            return Response(location=f"/admin/sales/order/view/order_id/{int(parts[4])}")
        if parts[:3] == ["sales", "order", "comment"] and len(parts) == 5 and req.method == "POST":
            if req.form.get("comment", "").strip():
                self.db.write("INSERT INTO order_comments VALUES (?, ?)", int(parts[4]), req.form["comment"][:1000])
            return Response(location=f"/admin/sales/order/view/order_id/{int(parts[4])}")
        if parts == ["customer", "index"]:
            rows = self.db.rows("SELECT * FROM customers ORDER BY id")
            table = "".join(f"<tr><td>{r['id']}</td><td>{e(r['name'])}</td><td>{e(r['email'])}</td></tr>" for r in rows)
            return page("Customers", nav, f"<h1>Customers</h1><table><tr><th>ID</th><th>Name</th><th>Email</th></tr>"
                        f"{table}</table>")
        return None

    def _products(self, req: Request, nav: str) -> Response:
        search = req.query.get("search", "")
        rows = self.db.rows("SELECT * FROM products WHERE name LIKE ? ORDER BY id", f"%{search}%")
        table = "".join(
            f"<tr><td>{e(r['sku'])}</td><td>{e(r['name'])}</td><td>{e(r['price'])}</td><td>{r['qty']}</td>"
            f"<td>{e(r['status'])}</td><td><a href='/admin/catalog/product/edit/id/{r['id']}' "
            f"aria-label='Edit {e(r['name'])}'>Edit</a></td></tr>" for r in rows)
        body = ("<h1>Products</h1><form method='get' action='/admin/catalog/product'>"
                f"<input name='search' aria-label='Search by keyword' value='{e(search)}'><button type='submit'>"
                f"Search</button></form><p>{len(rows)} records found</p><table><tr><th>SKU</th><th>Name</th>"
                f"<th>Price</th><th>Quantity</th><th>Status</th><th>Action</th></tr>{table}</table>")
        return page("Products", nav, body)

    def _edit(self, req: Request, pid: int, nav: str) -> Response | None:
        product = self.db.one("SELECT * FROM products WHERE id = ?", pid)
        if product is None:
            return None
        message = ""
        if req.method == "POST":
            try:
                price = f"{float(req.form.get('price', '')):.2f}"
                qty = int(req.form.get("qty", ""))
            except ValueError:
                message = "<p role='alert'>Price must be a number and quantity a whole number.</p>"
            else:
                status = "disabled" if req.form.get("status") == "disabled" else "enabled"
                self.db.write("UPDATE products SET price = ?, qty = ?, status = ? WHERE id = ?", price, qty, status, pid)
                return Response(location=f"/admin/catalog/product/edit/id/{pid}?saved=1")
        elif req.query.get("saved"):
            message = "<p role='status'>You saved the product.</p>"
        p = self.db.one("SELECT * FROM products WHERE id = ?", pid)
        options = "".join(f"<option value='{s}'{' selected' if p['status'] == s else ''}>{s}</option>"
                          for s in ("enabled", "disabled"))
        body = (f"<h1>{e(p['name'])}</h1>{message}<p>SKU: {e(p['sku'])}</p>"
                f"<form method='post' action='/admin/catalog/product/edit/id/{pid}'>"
                f"<label for='price'>Price</label><input id='price' name='price' value='{e(p['price'])}'>"
                f"<label for='qty'>Quantity</label><input id='qty' name='qty' value='{p['qty']}'>"
                f"<label for='status'>Status</label><select id='status' name='status'>{options}</select>"
                "<button type='submit'>Save</button></form>")
        return page(p["name"], nav, body)

    def _orders(self, req: Request, nav: str) -> Response:
        status = req.query.get("status", "")
        if status in ORDER_STATUSES:
            rows = self.db.rows("SELECT * FROM orders WHERE status = ? ORDER BY id", status)
        else:
            status, rows = "", self.db.rows("SELECT * FROM orders ORDER BY id")
        options = "<option value=''>any status</option>" + "".join(
            f"<option value='{s}'{' selected' if s == status else ''}>{s}</option>" for s in ORDER_STATUSES)
        table = "".join(
            f"<tr><td>{order_number(r['id'])}</td><td>{e(r['created'])}</td><td>{e(r['customer'])}</td>"
            f"<td>${e(r['total'])}</td><td>{e(r['status'])}</td><td><a href='/admin/sales/order/view/order_id/{r['id']}'"
            f" aria-label='View order {order_number(r['id'])}'>View</a></td></tr>" for r in rows)
        body = ("<h1>Orders</h1><form method='get' action='/admin/sales/order'><label for='status'>Status</label>"
                f"<select id='status' name='status'>{options}</select><button type='submit'>Filter</button></form>"
                f"<p>{len(rows)} records found</p><table><tr><th>ID</th><th>Purchase Date</th><th>Bill-to Name</th>"
                f"<th>Grand Total</th><th>Status</th><th>Action</th></tr>{table}</table>")
        return page("Orders", nav, body)

    def _order(self, oid: int, nav: str) -> Response | None:
        r = self.db.one("SELECT * FROM orders WHERE id = ?", oid)
        if r is None:
            return None
        comments = "".join(f"<li>{e(c['body'])}</li>" for c in self.db.rows(
            "SELECT body FROM order_comments WHERE order_id = ?", oid))
        cancel = (f"<form method='post' action='/admin/sales/order/cancel/order_id/{oid}'><button type='submit'>Cancel"
                  "</button></form>" if r["status"] in ("pending", "processing") else "")
        body = (f"<h1>Order # {order_number(oid)}</h1><p>Order Status: <span id='order-status'>{e(r['status'])}</span>"
                f"</p><p>Customer: {e(r['customer'])}</p><p>Grand Total: ${e(r['total'])}</p><p>Order Date: "
                f"{e(r['created'])}</p>{cancel}<h2>Comments</h2><ul id='order-comments'>{comments}</ul>"
                f"<form method='post' action='/admin/sales/order/comment/order_id/{oid}'><textarea name='comment' "
                "aria-label='Comment'></textarea><button type='submit'>Submit Comment</button></form>")
        return page(f"Order {order_number(oid)}", nav, body)
