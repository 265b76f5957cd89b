"""The embedded WebArena-format sites: ``shopping``, ``shopping_admin`` and ``reddit``, each on its own loopback port.

Example:
    >>> sites = EmbeddedSites(catalogue_size=100)  # doctest: +SKIP
    >>> sorted(sites.urls)                          # doctest: +SKIP
    ['reddit', 'shopping', 'shopping_admin']
    >>> sites.close()                               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from agentgym_envs.families.web.server import LoopbackServer
from agentgym_envs.families.web.webarena.sites.common import SiteApp, app_handler
from agentgym_envs.families.web.webarena.sites.reddit import ForumApp
from agentgym_envs.families.web.webarena.sites.shopping import ShoppingApp
from agentgym_envs.families.web.webarena.sites.shopping_admin import AdminApp

SITE_NAMES = ("shopping", "shopping_admin", "reddit")


class EmbeddedSites:
    """The three sites of one environment: their apps (databases) and loopback servers.

    Args:
        seed: which seeded content (the embedded task suite is built on seed 0).
        catalogue_size: products in the shop's catalogue (the suite uses 3000).
    """

    def __init__(self, seed: int = 0, catalogue_size: int = 3000):
        self.shopping = ShoppingApp(seed, catalogue_size)
        self.apps: dict[str, SiteApp] = {
            "shopping": self.shopping, "shopping_admin": AdminApp(seed), "reddit": ForumApp(seed),
        }
        self.servers: dict[str, LoopbackServer] = {}
        for name, app in self.apps.items():
            handler = self.shopping.handler() if app is self.shopping else app_handler(app)
            self.servers[name] = LoopbackServer(handler)

    @property
    def urls(self) -> dict[str, str]:
        """Site name -> origin (``http://127.0.0.1:<port>``)."""
        return {name: server.origin for name, server in self.servers.items()}

    def restore(self, names: Any = SITE_NAMES) -> None:
        """Put the named sites' seeded state back."""
        for name in names:
            app = self.apps[name]
            app.restore() if isinstance(app, ShoppingApp) else app.db.restore()

    def storage_cookies(self, site: str) -> list[dict[str, Any]]:
        """The cookies that sign in the site's task account."""
        return self.apps[site].storage_cookies("127.0.0.1")

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
