"""Remote environments: ``agentgym serve`` + ``agentgym/Remote-v0`` (OpenEnv) and ``RayEnv`` (Ray actors).

Differential: one seeded episode (expert actions, then random and invalid ones) must give the
same observations, rewards and ``info`` (wall-clock keys aside) locally, through a real server
process and through a Ray actor.  Faults: a killed server, a killed actor, a client that vanishes,
an idle session, bad requests: each has a defined outcome, nothing hangs, no process is left.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("openenv")
psutil = pytest.importorskip("psutil")

import agentgym_envs  # noqa: E402,F401
from agentgym_envs.errors import EnvironmentCrashedError, UnknownTaskError  # noqa: E402
from agentgym_envs.remote.codec import comparable_info  # noqa: E402
from agentgym_envs.remote.launch import ServerProcess  # noqa: E402
from agentgym_envs.remote.proxy import RemoteEnvError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BABYAI = "agentgym/BabyAI-GoToLocal-v0"


def _chromium() -> bool:
    return importlib.util.find_spec("playwright") is not None and any(
        shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
    )


def _java() -> bool:
    return shutil.which("java") is not None and importlib.util.find_spec("scienceworld") is not None


# name -> (env id, gym.make kwargs, server's fixed kwargs, available)
FAMILIES = {
    "textworld": ("agentgym/TextWorld-w2-o3-q4-v0",
                  {"split": "test", "admissible_actions": True, "expert_actions": True, "reward": "dense"},
                  importlib.util.find_spec("textworld") is not None),
    "scienceworld": ("agentgym/ScienceWorld-find-non-living-thing-v0",
                     {"split": "test", "expert_actions": True, "reward": "dense"}, _java()),
    "babyai": (BABYAI, {"split": "test", "admissible_actions": True, "expert_actions": True, "reward": "dense"},
               importlib.util.find_spec("minigrid") is not None),
    "miniwob": ("agentgym/MiniWoB-click-test-v0", {"split": "test", "reward": "sparse"},
                _chromium() and importlib.util.find_spec("miniwob") is not None),
    "webarena": ("agentgym/WebArena-v0", {"split": "test", "expert_actions": True, "reward": "sparse"}, _chromium()),
}

# Info keys that are not a function of the episode in the simulator itself, so two fresh environments may differ:
# ScienceWorld's find-(non-)living-thing gold path shuffles its candidate targets with the jar's global Random
# (TaskFindLivingNonLiving), so the expert may name another valid target (rarely on a fresh JVM, mostly on a reload).
UNREPEATABLE_INFO = {"scienceworld": ("expert_action",)}

# Actions no environment accepts: empty, nonsense, a broken tool call, over the length limit.
INVALID_ACTIONS = ("", "xyzzy plugh frobnicate", '<tool_call>{"name": "act", "arguments": {', "a" * 5000)


def _child_env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _serve(env_id: str, *args: str, port: int = 0, **env_kwargs) -> ServerProcess:
    return ServerProcess(env_id, env_kwargs, port=port, args=list(args), env=_child_env())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_processes() -> list[psutil.Process]:
    me = psutil.Process()
    found = []
    for proc in me.children(recursive=True):
        try:
            if "serve" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _ray_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ray" in proc.name().lower() or any("ray" in part for part in proc.cmdline()[:3]):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers():
    """One server per available family, started together (their start-up overlaps)."""
    started = {}
    pending = {}
    for name, (env_id, _, available) in FAMILIES.items():
        if available:
            server = _serve(env_id, "--max-sessions", "4", "--idle-timeout", "0",
                            "--client-kwargs", "split,admissible_actions,expert_actions,reward", split="test")
            pending[name] = server
    try:
        for name, server in pending.items():
            started[name] = server.start()
        yield started
    finally:
        for server in pending.values():
            server.stop()
        assert not _serve_processes(), "a server process outlived the module"


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": _child_env()["PYTHONPATH"]}})
    yield ray
    ray.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in _ray_processes() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"processes left after ray.shutdown(): {[p.name() for p in left]}"


# ---- differential ---------------------------------------------------------------------------------
def _script(env: gym.Env, seed: int, n_expert: int = 1, n_random: int = 3) -> tuple[list[str], list[tuple]]:
    """Play a local episode: expert, then random admissible, then invalid actions, then expert again.

    Returns the actions, which the other backends replay, and the transcript (see :func:`_transcript`).
    """
    rng = random.Random(seed)
    obs, info = env.reset(seed=seed)
    rows: list[tuple] = [(obs, comparable_info(info))]
    actions: list[str] = []
    plan = ["expert"] * n_expert + ["random"] * n_random + ["invalid"] * len(INVALID_ACTIONS) + ["finish"] * 20
    invalid = iter(INVALID_ACTIONS)
    for kind in plan:
        buttons = re.findall(r"\[(\d+)\][^\n]*button", obs)
        if kind in ("expert", "finish") and info.get("expert_action"):
            action = info["expert_action"]
        elif kind == "invalid":
            action = next(invalid)
        elif info.get("admissible_actions"):
            action = rng.choice(info["admissible_actions"])
        elif kind == "finish" and buttons:  # web without an expert: press the page's first button
            action = f"click({buttons[0]})"
        else:  # web: moves that change nothing, and a click on an element that does not exist
            action = rng.choice(["scroll(down)", "press(Tab)", "click(999)"])
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rows.append((obs, reward, terminated, truncated, comparable_info(info)))
        if terminated or truncated:
            break
    return actions, rows


def _transcript(env: gym.Env, seed: int, actions: list[str]) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    rows: list[tuple] = [(obs, comparable_info(info))]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        rows.append((obs, reward, terminated, truncated, comparable_info(info)))
    return rows


def _assert_same(expected: list[tuple], got: list[tuple], where: str, ignore: tuple[str, ...] = ()) -> None:
    assert len(expected) == len(got)

    def without(row: tuple) -> tuple:
        return (*row[:-1], {k: v for k, v in row[-1].items() if k not in ignore})

    for i, (a, b) in enumerate(zip(map(without, expected), map(without, got), strict=True)):
        assert a == b, f"{where}: step {i} differs:\n local:  {a!r:.2000}\n remote: {b!r:.2000}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_episode_locally_through_the_server_and_in_a_ray_actor(family, servers, ray_session):
    env_id, kwargs, available = FAMILIES[family]
    if not available:
        pytest.skip(f"{family} is not installed here")
    from agentgym_envs.workers.ray import RayEnv

    seed = 7
    local = gym.make(env_id, **kwargs)
    remote = gym.make("agentgym/Remote-v0", url=servers[family].url, env_id=env_id, **kwargs)
    actor = RayEnv(env_id, **kwargs)
    try:
        # Every backend plays the episode as the first one of a fresh environment.
        actions, expected = _script(local, seed)
        assert len(actions) > len(INVALID_ACTIONS)
        assert any(row[-1]["parse_error"] for row in expected[1:]), "the script must include rejected actions"
        ignore = UNREPEATABLE_INFO.get(family, ())
        _assert_same(expected, _transcript(remote, seed, actions), "server", ignore)
        _assert_same(expected, _transcript(actor, seed, actions), "ray", ignore)
        # The rest of the TextEnv surface is there too.
        for env in (remote, actor):
            inner = env.unwrapped
            assert agentgym_envs.as_text_env(env) is inner
            assert inner.task_ids == local.unwrapped.task_ids and inner.family == local.unwrapped.family
            assert inner.split == "test" and inner.max_steps == local.unwrapped.max_steps
            assert inner.parser.format == local.unwrapped.parser.format
        for env in (remote, actor):  # a copy would share the backend with the original
            with pytest.raises(TypeError, match="cannot be copied"):
                copy.deepcopy(env)
        # Tasks chosen by option, and an unknown task is the same error as locally.
        task = local.unwrapped.task_ids[1]
        assert remote.reset(options={"task": task})[1]["task_id"] == task == actor.reset(options={"task": task})[1][
            "task_id"]
        for env in (local, remote, actor):
            with pytest.raises(UnknownTaskError):
                env.reset(options={"task": "no-such-task"})
    finally:
        for env in (local, remote, actor):
            env.close()


@pytest.mark.timeout(120)
def test_on_demand_actions_and_rollout_code_run_unchanged(servers):
    if "babyai" not in servers:
        pytest.skip("babyai is not installed here")
    from agentgym_envs.eval.episodes import play_episodes
    from agentgym_envs.eval.policies import SCRIPTED_POLICIES

    env = gym.make("agentgym/Remote-v0", url=servers["babyai"].url, env_id=BABYAI, split="test")
    local = gym.make(BABYAI, split="test")
    try:
        obs, info = env.reset(seed=3)
        local.reset(seed=3)
        assert info["expert_action"] is None and info["admissible_actions"] is None  # not requested
        assert env.unwrapped.expert_action() == local.unwrapped.expert_action()
        assert env.unwrapped.admissible_actions() == local.unwrapped.admissible_actions()
    finally:
        env.close()
        local.close()
    # play_episodes builds its environment with gym.make: the remote id with its kwargs (the id is the server's).
    remote_results = play_episodes("agentgym/Remote-v0", SCRIPTED_POLICIES["expert"](0), 3, seed=0, progress=False,
                                  url=servers["babyai"].url, split="test")
    local_results = play_episodes(BABYAI, SCRIPTED_POLICIES["expert"](0), 3, seed=0, progress=False, split="test")
    assert [r.won for r in remote_results] == [r.won for r in local_results] == [True] * 3
    assert [(r.steps, r.episode_return, r.task_id) for r in remote_results] == [
        (r.steps, r.episode_return, r.task_id) for r in local_results]


# ---- faults ---------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_a_killed_server_truncates_the_episode_and_reset_reconnects():
    port = _free_port()
    server = _serve(BABYAI, port=port, split="test").start()
    env = gym.make("agentgym/Remote-v0", url=server.url, env_id=BABYAI, split="test", timeout_s=30)
    restarted = None
    try:
        env.reset(seed=0)
        env.step("turn left")
        server.kill()
        assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE
        start = time.monotonic()
        obs, reward, terminated, truncated, info = env.step("turn right")
        assert time.monotonic() - start < 30
        assert truncated and not terminated and reward == 0.0
        assert info["truncation_reason"] == "crash" and "stopped working" in obs and info["error"]
        assert info["step"] == 2 and info["raw_action"] == "turn right" and info["task_id"] is not None
        with pytest.raises(gym.error.ResetNeeded):
            env.step("turn right")
        with pytest.raises(EnvironmentCrashedError, match="cannot reach"):
            env.reset(seed=0)  # nobody listens on the port
        restarted = _serve(BABYAI, port=port, split="test").start()
        obs, info = env.reset(seed=0)  # the same env object reconnects
        assert info["step"] == 0 and env.step("turn left")[4]["step"] == 1
    finally:
        env.close()
        server.stop()
        if restarted is not None:
            restarted.stop()
    for pid in [server.pid] + ([restarted.pid] if restarted else []):
        assert not psutil.pid_exists(pid), "a server process outlived its test"


@pytest.mark.timeout(180)
def test_a_vanished_client_frees_its_session_and_others_go_on(servers):
    if "babyai" not in servers:
        pytest.skip("babyai is not installed here")
    url = servers["babyai"].url  # --max-sessions 4
    others = [gym.make("agentgym/Remote-v0", url=url, env_id=BABYAI, split="test") for _ in range(3)]
    try:
        for i, env in enumerate(others):
            env.reset(seed=i)
        # A client process that resets, then dies without closing its connection.
        code = (
            "import gymnasium as gym, agentgym_envs, os\n"
            f"env = gym.make('agentgym/Remote-v0', url={url!r}, env_id={BABYAI!r}, split='test')\n"
            "env.reset(seed=0); env.step('turn left'); print('ready', flush=True); os._exit(0)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env=_child_env())
        assert "ready" in out.stdout, out.stderr[-2000:]
        # Its session is freed: a fourth client fits under the limit of four (retry while the server notices).
        deadline = time.monotonic() + 30
        fourth = gym.make("agentgym/Remote-v0", url=url, env_id=BABYAI, split="test")
        try:
            while True:
                try:
                    fourth.reset(seed=0)
                    break
                except RemoteEnvError as exc:
                    assert "session limit" in str(exc)
                    assert time.monotonic() < deadline, "the vanished client's session was never freed"
                    time.sleep(0.5)
            # A fifth is refused with a clear error, and the others keep playing.
            fifth = gym.make("agentgym/Remote-v0", url=url, env_id=BABYAI, split="test")
            with pytest.raises(RemoteEnvError, match="session limit"):
                fifth.reset(seed=0)
            fifth.close()
        finally:
            fourth.close()
        for env in others:
            assert env.step("turn left")[4]["step"] == 1
    finally:
        for env in others:
            env.close()


@pytest.mark.timeout(180)
def test_idle_sessions_are_closed_and_a_token_guards_the_server():
    token = "s3cret-token"
    server = _serve(BABYAI, "--idle-timeout", "1", "--token", token, split="test").start()
    try:
        with pytest.raises(RemoteEnvError, match="token"):
            gym.make("agentgym/Remote-v0", url=server.url, env_id=BABYAI, split="test", token="wrong").reset()
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/schema", timeout=10)
        assert refused.value.code == 401
        env = gym.make("agentgym/Remote-v0", url=server.url, env_id=BABYAI, split="test", token=token)
        try:
            env.reset(seed=0)
            env.step("turn left")
            time.sleep(7.5)  # the reaper checks every 5 s for sessions idle over 1 s
            obs, reward, terminated, truncated, info = env.step("turn left")
            assert truncated and info["truncation_reason"] == "crash" and "closed" in info["error"]
            obs, info = env.reset(seed=0)  # reconnects to a fresh session
            assert env.step("turn left")[4]["step"] == 1
        finally:
            env.close()
    finally:
        server.stop()


@pytest.mark.timeout(180)
def test_a_killed_ray_actor_truncates_the_episode_and_reset_starts_a_new_one(ray_session):
    if not FAMILIES["babyai"][2]:
        pytest.skip("babyai is not installed here")
    from agentgym_envs.workers.ray import RayEnv

    env = RayEnv(BABYAI, split="test", timeout_s=60)
    try:
        first, _ = env.reset(seed=0)
        env.step("turn left")
        pid = env.worker_pid()
        psutil.Process(pid).kill()
        obs, reward, terminated, truncated, info = env.step("turn left")
        assert truncated and not terminated and info["truncation_reason"] == "crash" and "actor" in info["error"]
        assert env.reset(seed=0)[0] == first and env.worker_pid() != pid
        closed_pid = env.worker_pid()
    finally:
        env.close()
    deadline = time.monotonic() + 30
    while psutil.pid_exists(closed_pid) and psutil.Process(closed_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "close() left the actor's process running"
        time.sleep(0.2)
    with pytest.raises(gym.error.UnregisteredEnv):
        RayEnv("agentgym/NoSuchEnv-v0")
    bad = RayEnv(BABYAI, split="no-such-split")
    with pytest.raises(agentgym_envs.UnknownSplitError):
        bad.reset(seed=0)
    bad.close()


@pytest.mark.timeout(180)
def test_ray_workers_step_a_batch_like_local_workers_and_survive_a_killed_actor(ray_session):
    if not FAMILIES["babyai"][2]:
        pytest.skip("babyai is not installed here")
    from agentgym_envs.workers import make_workers, reset_many, step_many

    local = make_workers(BABYAI, 2, kind="inprocess", split="test")
    remote = make_workers(BABYAI, 2, kind="ray", split="test", timeout_s=60)
    try:
        seeds = [0, 1]
        expected = reset_many(local, seeds=seeds)
        got = reset_many(remote, seeds=seeds)
        assert [o for o, _ in got] == [o for o, _ in expected]
        for actions in (["turn left", "go forward"], ["go forward", "turn right"], ["pick up", "toggle"]):
            expected = [(r[0], r[4]) for r in step_many(local, actions)]
            got_steps = step_many(remote, actions)
            assert [r[0] for r in got_steps] == [o for o, _ in expected]
            assert [comparable_info(r[4]) for r in got_steps] == [comparable_info(i) for _, i in expected]
        # A killed actor ends only its own episode, as a crash; the next reset starts a fresh actor.
        psutil.Process(remote[0].ray_env.worker_pid()).kill()
        results = step_many(remote, ["turn left", "turn left"])
        assert results[0][3] and results[0][4]["truncation_reason"] == "crash"
        assert not results[1][3]
        assert reset_many(remote, seeds=seeds)[0][0] == reset_many(local, seeds=seeds)[0][0]
    finally:
        local.close()
        remote.close()


# ---- bad requests ---------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_bad_requests_get_error_replies_and_the_server_goes_on(servers):
    if "babyai" not in servers:
        pytest.skip("babyai is not installed here")
    from websockets.asyncio.client import connect

    url = servers["babyai"].url
    bystander = gym.make("agentgym/Remote-v0", url=url, env_id=BABYAI, split="test")
    bystander.reset(seed=1)

    # Through the Gymnasium client: another environment, a kwarg the server fixes, a step before reset.
    with pytest.raises(gym.error.UnregisteredEnv, match="serves"):
        gym.make("agentgym/Remote-v0", url=url, env_id="agentgym/TextCraft-v0").reset()
    with pytest.raises(ValueError, match="fixes split"):
        gym.make("agentgym/Remote-v0", url=url, env_id=BABYAI, split="train").reset()

    async def raw_session() -> list[dict]:
        replies = []
        async with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
            for message in (
                json.dumps({"type": "step", "data": {"text": "turn left"}}),  # before reset
                "this is not json",
                json.dumps({"type": "step", "data": {"text": 5}}),  # malformed action
                json.dumps({"type": "step", "data": {"text": "x", "colour": "red"}}),  # unknown field
                json.dumps({"type": "dance"}),
                json.dumps({"type": "step", "data": {"text": "x" * (2 << 20)}}),  # over the 1 MiB limit
                json.dumps({"type": "reset", "data": {"seed": 1, "env_id": BABYAI, "env_kwargs": {"split": "test"}}}),
                json.dumps({"type": "step", "data": {"text": "turn left"}}),
            ):
                await ws.send(message)
                replies.append(json.loads(await ws.recv()))
        return replies

    replies = asyncio.run(raw_session())
    kinds = [(r["type"], r["data"].get("code")) for r in replies]
    assert kinds[:6] == [
        ("error", "EXECUTION_ERROR"),
        ("error", "INVALID_JSON"),
        ("error", "VALIDATION_ERROR"),
        ("error", "VALIDATION_ERROR"),
        ("error", "UNKNOWN_TYPE"),
        ("error", "PAYLOAD_TOO_LARGE"),
    ]
    assert replies[0]["data"]["message"].startswith("ResetNeeded")
    # The same session still works after all of that.
    assert kinds[6:] == [("observation", None), ("observation", None)]
    assert replies[7]["data"]["observation"]["info"]["step"] == 1
    # So does everybody else's.
    assert bystander.step("turn left")[4]["step"] == 1
    bystander.close()


def test_serving_refuses_unknown_environments_and_open_binds_without_token():
    out = subprocess.run([sys.executable, "-m", "agentgym_envs.cli", "serve", "agentgym/NoSuchEnv-v0", "--port", "0"],
                         capture_output=True, text=True, timeout=120, env=_child_env())
    assert out.returncode == 2 and "NoSuchEnv" in out.stderr
    from agentgym_envs.remote.server import is_loopback, parse_env_kwargs, serve

    with pytest.raises(ValueError, match="token"):
        serve(BABYAI, host="0.0.0.0", port=0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert parse_env_kwargs(["seed_range=[0, 9]", "split=test"]) == {"seed_range": [0, 9], "split": "test"}
    with pytest.raises(ValueError, match="key=value"):
        parse_env_kwargs(["split"])


def test_importing_agentgym_envs_does_not_import_openenv_or_ray():
    code = "import sys, agentgym_envs, gymnasium; assert 'agentgym/Remote-v0' in gymnasium.registry; " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openenv', 'ray', 'fastapi')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_codec_round_trips_what_info_holds():
    from agentgym_envs.remote.codec import decode, encode

    value = {"task_id": ("kitchen", 3), "png": b"\x89PNG\r\n", "nested": [{"__tuple__": 1}], "nan": float("inf"),
             "ints": {1: "a"}, "none": None, "text": "é\n"}
    wire = json.loads(json.dumps(encode(value)))
    assert decode(wire) == value
    with pytest.raises(TypeError, match="cannot send"):
        encode({"x": object()})


@pytest.mark.timeout(240)
def test_the_trainer_plays_on_served_environments_from_env_urls(tmp_path):
    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.models import tiny_model, tiny_tokenizer
    from trl_plugins.trainer import AgentGRPOTrainer

    server = _serve("agentgym/TextCraft-v0").start()
    try:
        args = AgentGRPOConfig(
            output_dir=str(tmp_path / "run"), env_id="agentgym/TextCraft-v0", env_urls=server.url,
            num_generations=2, per_device_train_batch_size=2, max_steps=1, max_turns=2, max_new_tokens_per_turn=4,
            max_context_tokens=4000, report_to="none", save_strategy="no", disable_tqdm=True, learning_rate=1e-2,
        )
        tok = tiny_tokenizer()
        trainer = AgentGRPOTrainer(tiny_model(tok), args=args, processing_class=tok)
        assert trainer.env_worker_kind == "inprocess"
        trainer.train()
        assert trainer.last_episodes and all(ep.turns for ep in trainer.last_episodes)
        assert trainer.state.log_history and trainer.env_pool.envs == []  # closed at the end of train()
    finally:
        server.stop()


def test_play_and_rollout_reach_a_served_environment_through_env_kwargs(servers):
    if "babyai" not in servers:
        pytest.skip("babyai is not installed here")
    import subprocess
    import sys

    url = servers["babyai"].url
    command = [sys.executable, "-m", "agentgym_envs.cli"]
    played = subprocess.run([*command, "play", "agentgym/Remote-v0", "--env-kwargs", f"url={url}"],
                            input=":expert\nquit\n", capture_output=True, text=True, env=_child_env(), timeout=120)
    assert played.returncode == 0 and "Traceback" not in played.stderr, played.stderr
    assert "(commands:" in played.stdout
    rolled = subprocess.run([*command, "rollout", "agentgym/Remote-v0", "--policy", "expert", "--episodes", "2",
                             "--env-kwargs", f"url={url}"], capture_output=True, text=True, env=_child_env(),
                            timeout=120)
    assert rolled.returncode == 0, rolled.stderr
    assert "success 100.0%" in rolled.stdout
