"""Shared machinery of the web environments: browser, loopback server, page rendering, base env.

Example:
    >>> from agentgym_envs.web.page import Node, render_nodes
    >>> render_nodes([Node(1, 0, "button", "OK", None, ())])
    '[1] button "OK"'
"""
