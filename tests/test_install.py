"""What a new user meets: the base install alone, errors that name the extra to install, id hints, rendering."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import pytest

import agentgym_envs  # noqa: F401  (registers the ids)
from agentgym_envs.registry import registration

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("typed", ["TextCraft-v0", "TextCraft", "agentgym/TextCraft"])
def test_id_without_namespace_gets_a_hint(typed: str) -> None:
    with pytest.raises(gym.error.UnregisteredEnv, match="did you mean 'agentgym/TextCraft-v0'"):
        registration(typed)


def test_unknown_id_lists_close_matches() -> None:
    with pytest.raises(gym.error.UnregisteredEnv, match="close matches: agentgym/BabyAI-GoToRedBall-v0"):
        registration("agentgym/BabyAI-GoToRedBal-v0")
    with pytest.raises(gym.error.UnregisteredEnv) as caught:
        registration("agentgym/Nothing-like-this-v0")
    assert "close matches" not in str(caught.value) and "agentgym list" in str(caught.value)


@pytest.mark.parametrize("mode", ["ansi", "human"])
def test_render_modes_do_not_warn(mode: str, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker warns through `warnings`
        env = gym.make("agentgym/TextCraft-v0", render_mode=mode)
        obs, _ = env.reset(seed=0)
        frame = env.render()
    assert env.metadata["render_fps"] > 0
    if mode == "ansi":
        assert frame == obs
    else:
        assert frame is None and obs in capsys.readouterr().out
    env.close()


BARE_SCRIPT = textwrap.dedent(
    """
    import sys
    import gymnasium as gym
    import agentgym_envs
    from agentgym_envs import MissingDependencyError

    WHEEL = sys.argv[1]  # installed from this wheel file: every hint must name it with the extra

    env = gym.make("agentgym/TextCraft-v0", split="test")
    obs, info = env.reset(seed=0)
    assert obs.startswith("Crafting commands"), obs
    print("textcraft ok")
    for env_id, extra in [("agentgym/MiniWoB-click-test-v0", "web"), ("agentgym/ALFWorld-v0", "alfworld"),
                          ("agentgym/DeepSearch-h1-v0", "deepsearch"), ("agentgym/TextWorld-w2-o3-q4-v0", "textworld")]:
        try:
            gym.make(env_id)
        except MissingDependencyError as exc:
            assert f"pip install '{WHEEL}[{extra}]'" in str(exc), exc
            print(env_id, "names", extra)
        else:
            raise AssertionError(f"{env_id} was made without its extra")
    from agentgym_envs.registry import registration
    try:  # MiniWoB lists its tasks beyond the standard set from the miniwob package
        registration("agentgym/MiniWoB-draw-circle-v0")
    except gym.error.UnregisteredEnv as exc:
        assert f"pip install '{WHEEL}[web]'" in str(exc), exc
        print("unknown MiniWoB id names web")
    try:
        import trl_plugins  # noqa: F401
    except MissingDependencyError as exc:
        assert f"pip install '{WHEEL}[train]'" in str(exc) and "torch" in str(exc), exc
        print("trl_plugins names train")
    else:
        raise AssertionError("trl_plugins imported without torch")
    """
)


@pytest.mark.timeout(600)
def test_wheel_alone_lists_plays_and_names_extras(tmp_path: Path) -> None:
    """The project as a wheel (``python -m build``) with no extras, in a fresh venv (needs the package index).

    Every install hint then names the wheel with the extra, which is what works when pasted (the project is not on
    an index).
    """
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("agentgym_envs-*.whl")
    venv = tmp_path / "bare"
    # No PYTHONPATH: a checkout on it (with the build's egg-info) would make pip think the project is installed.
    env = {**os.environ, "AGENTGYM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                         env=env)
    if pip.returncode != 0:
        pytest.skip(f"cannot install into a fresh venv here: {pip.stderr[-500:]}")
    listed = subprocess.run([str(venv / "bin" / "agentgym"), "list"], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "agentgym/TextCraft-v0" in listed.stdout and f"pip install '{wheel}[web]'" in listed.stdout
    version = subprocess.run([str(venv / "bin" / "agentgym"), "--version"], capture_output=True, text=True, env=env,
                             cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"agentgym {agentgym_envs.__version__}"
    run = subprocess.run([str(venv / "bin" / "python"), "-c", BARE_SCRIPT, str(wheel)], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "textcraft ok" in run.stdout and "trl_plugins names train" in run.stdout
    assert "unknown MiniWoB id names web" in run.stdout or "draw-circle" in listed.stdout


def test_install_hint_matches_how_the_project_was_installed() -> None:
    """This checkout is installed editable (scripts/install.sh), so the hint is ``pip install -e 'CHECKOUT[x]'``."""
    from agentgym_envs.errors import _install_source, install_command

    source = _install_source()
    if source is None or not source[1]:
        pytest.skip("agentgym-envs is not installed editable here")
    hint = install_command("babyai")
    assert hint.startswith("pip install -e '") and hint.endswith("[babyai]'"), hint
    assert Path(hint.split("'")[1].removesuffix("[babyai]")).joinpath("pyproject.toml").is_file(), hint
