"""Process checks shared by the tests of worker processes (engine workers, the leaderboard's batch path)."""

from __future__ import annotations

import psutil


def descendants() -> set[int]:
    """Running processes this test process started, except multiprocessing's own helpers.

    The fork server and resource tracker live as long as this process; what they fork still counts.
    """
    found = set()
    me = psutil.Process()
    for proc in me.children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            helper = proc.ppid() == me.pid and any("multiprocessing." in part for part in proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if not helper:
            found.add(proc.pid)
    return found
