"""A family from another package registers through the ``agentgym_envs.families`` entry point and passes the contract.

The package is written to a temporary folder with its ``*.dist-info`` (what ``pip install`` leaves), and a
fresh interpreter gets that folder on ``PYTHONPATH``: ``import agentgym_envs`` then finds it like any
installed plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ECHO_FAMILY = '''
"""Echo: say the word you are asked for (a family from outside agentgym_envs)."""

from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.registry import Family, Registration

FAMILY = Family("echo", extra="echo", description="Say the word you are asked for.")


class EchoEnv(TextEnv):
    family = "echo"

    def _task_splits(self):
        return TaskSplits(train=["apple", "pear"], valid=["plum"], test=["fig", "kiwi"])

    def _start(self, task_id):
        self._word = task_id
        return TaskStart(f"Say {task_id}.", f"Say {task_id}.")

    def _execute(self, command):
        said = command == self._word
        return Transition(f"You said {command}.", float(said), won=said)

    def _expert(self):
        return self._word


def registrations():
    return [Registration("Echo", FAMILY, f"{__name__}:EchoEnv", description="Say the word.")]
'''

PLAY = """
import warnings

warnings.simplefilter("always")
import gymnasium as gym

import agentgym_envs
from agentgym_envs.checker import check_text_env
from agentgym_envs.workers import default_worker_kind

rows = {row.env_id: row for row in agentgym_envs.list_environments("echo")}
assert list(rows) == ["agentgym/Echo-v0"] and rows["agentgym/Echo-v0"].installed, rows
env = gym.make("agentgym/Echo-v0", split="test")
check_text_env(env)
obs, info = env.reset(seed=0)
_, reward, terminated, _, _ = env.step(env.unwrapped.expert_action())
assert (reward, terminated, info["family"]) == (1.0, True, "echo")
assert default_worker_kind("agentgym/Echo-v0") == "inprocess"
assert len(agentgym_envs.list_environments("textcraft")) > 1  # the package's own families are all still there
print("ok")
"""


def _distribution(site: Path, name: str, entry_points: str) -> None:
    """A ``<name>-0.1.dist-info`` folder as ``pip install`` writes it (metadata and entry points only)."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_a_family_of_another_package_registers_through_its_entry_point(tmp_path: Path) -> None:
    package = tmp_path / "agentgym_echo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "family.py").write_text(ECHO_FAMILY)
    _distribution(tmp_path, "agentgym-echo", "[agentgym_envs.families]\necho = agentgym_echo.family\n")
    # A plugin whose module is gone: left out with a warning, the others still load.
    _distribution(tmp_path, "agentgym-broken", "[agentgym_envs.families]\nbroken = agentgym_gone.family\n")
    # Stale metadata of agentgym-envs itself (an install older than its families): not read, no warning.
    _distribution(tmp_path, "agentgym-envs", "[agentgym_envs.families]\nold = agentgym_envs.families.renamed\n")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", PLAY], capture_output=True, text=True, env=env, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
    assert "family entry point 'broken' (agentgym_gone.family) was not loaded: ModuleNotFoundError" in result.stderr
    assert "renamed" not in result.stderr
