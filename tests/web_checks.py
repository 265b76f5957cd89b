"""Checks shared by the tests that drive a real Chromium (MiniWoB++, the shop, WebArena's sites, web safety)."""

from __future__ import annotations

import pytest


def skip_without_chromium(module_level: bool = True) -> None:
    """Skip the calling module (or, with ``module_level=False``, the calling test) where Playwright or a Chromium
    binary is missing; Playwright never downloads one here (``find_chromium`` names what to install)."""
    pytest.importorskip("playwright")
    from agentgym_envs.families.web.browser import find_chromium

    try:
        find_chromium()
    except Exception as exc:  # noqa: BLE001 - any failure to find it means no browser tests here
        pytest.skip(f"no Chromium: {exc}", allow_module_level=module_level)
