"""Web environments in headless Chromium: the shared machinery and the web families.

============================  ====================================================================
module                        what it holds
============================  ====================================================================
:mod:`.browser`               one Chromium per thread (Playwright), loopback-only network policy,
                              :class:`~.browser.BrowserSession` per environment
:mod:`.server`                :class:`~.server.LoopbackServer`: a local HTTP server on 127.0.0.1
:mod:`.page`                  the page listing: interactive elements as ``[id] role "name"`` lines
:mod:`.base`                  :class:`~.base.WebEnv`: the tools (click, type, select, press, scroll,
                              stop), time limits and crash handling shared by every web family
:mod:`.miniwob`               the MiniWoB++ family (``agentgym/MiniWoB-*-v0``)
:mod:`.shop`                  the WebShop-style family (``agentgym/WebShop-v0``)
:mod:`.shop_site`             the shop's catalogue (SQLite) and its pages
:mod:`.webarena`              WebArena's tasks and evaluators on embedded sites (``agentgym/WebArena-v0``)
============================  ====================================================================

Example:
    >>> from agentgym_envs.families.web.page import Node, render_nodes
    >>> render_nodes([Node(1, 0, "button", "OK", None, ())])
    '[1] button "OK"'
"""
