"""Shared test set-up: an on-disk cache inside the checkout, reused between local runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Generated games and extracted data are expensive; keep them between runs of the suite.
os.environ.setdefault("AGENTGYM_CACHE", str(REPO / ".cache" / "tests"))


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def shared_dir() -> Path:
    """The project's ``../shared`` folder (specs and data that cannot be downloaded)."""
    return REPO.parent / "shared"
