"""``agentgym serve`` against a hostile or careless client, on a real server on loopback (issue 23, items 5-8).

The operator fixes the environment; a client chooses only what it is allowed (the split, a seed, a task),
within bounds.  Only the environment's endpoints are served (no ``/mcp``, no ``/docs`` unless asked).
A bad message gets an error reply and the session goes on; odd actions have the same outcome as locally;
clients that vanish leave no traceback in the server's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("openenv")

import agentgym_envs  # noqa: E402,F401  (registers the environments)
from agentgym_envs.remote.codec import comparable_info  # noqa: E402
from agentgym_envs.remote.launch import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEXTCRAFT = "agentgym/TextCraft-v0"


def _child_env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def servers():
    """A server with the default limits and one that lets clients set the reward and serves its docs."""
    plain = ServerProcess(TEXTCRAFT, {}, port=0, args=["--max-sessions", "4"], env=_child_env())
    open_ = ServerProcess(TEXTCRAFT, {"split": "test"}, port=0, env=_child_env(),
                          args=["--client-kwargs", "split,reward", "--docs"])
    try:
        yield plain.start(), open_.start()
    finally:
        plain.stop()
        open_.stop()


def _remote(url: str, **kwargs) -> gym.Env:
    return gym.make("agentgym/Remote-v0", url=url, env_id=TEXTCRAFT, **kwargs)


def _status(url: str, method: str = "GET") -> int:
    body = json.dumps({"jsonrpc": "2.0", "method": "openenv/session/create", "id": 1}).encode()
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(180)
def test_clients_choose_only_what_the_operator_allows(servers):
    plain, open_ = servers
    refused = {
        "recipes": "/etc/passwd",  # a file of the server's
        "max_memory_mb": 64,
        "max_distractors": 10**6,
        "reward": "dense",  # not allowed on this server
    }
    for key, value in refused.items():
        env = _remote(plain.url, **{key: value})
        with pytest.raises(ValueError, match=f"does not let clients set {key}"):
            env.reset(seed=0)
        env.close()
    env = _remote(plain.url, split={"nested": "/etc/passwd"})
    with pytest.raises(ValueError, match="only to a string"):
        env.reset(seed=0)
    env.close()
    # Allowed: the split; values the server uses anyway (what the trainer sends); a seed; a task.
    env = _remote(plain.url, split="train", reward="sparse", step_penalty=0.0, format_penalty=0.0)
    try:
        obs, info = env.reset(seed=3)
        assert info["split"] == "train"
        task = env.unwrapped.task_ids[2]
        assert env.reset(seed=1, options={"task": task})[1]["task_id"] == task
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*63\)"):
            env.reset(seed=2**70)
        with pytest.raises(ValueError, match="option 'world' is not accepted"):
            env.reset(seed=0, options={"world": {"people": 300000}})
    finally:
        env.close()
    # An operator who allows more: the reward is the client's on the second server, the split still fixed.
    env = _remote(open_.url, split="test", reward="dense")
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="fixes split"):
            _remote(open_.url, split="train").reset(seed=0)
    finally:
        env.close()


@pytest.mark.timeout(120)
def test_only_the_environment_endpoints_are_served(servers):
    plain, open_ = servers
    for path in ("/health", "/schema", "/metadata"):
        assert _status(plain.url + path) == 200, path
    for path in ("/docs", "/openapi.json", "/redoc", "/mcp", "/state", "/reset"):
        assert _status(plain.url + path) == 404, path
    assert _status(plain.url + "/mcp", "POST") == 404  # OpenEnv's session/create would hold capacity
    assert _status(open_.url + "/docs") == 200 and _status(open_.url + "/openapi.json") == 200
    assert _status(open_.url + "/mcp", "POST") == 404

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def mcp_socket() -> None:
        async with connect(plain.url.replace("http", "ws") + "/mcp"):
            pass

    with pytest.raises(InvalidStatus):
        asyncio.run(mcp_socket())


@pytest.mark.timeout(120)
def test_a_bad_message_gets_an_error_reply_and_the_session_goes_on(servers):
    from websockets.asyncio.client import connect

    url = servers[0].url.replace("http", "ws") + "/ws"

    async def session() -> list[dict]:
        replies = []
        async with connect(url, max_size=None) as ws:
            for message in (
                json.dumps({"type": "reset", "data": {"seed": 0}}),
                "[1, 2]", "5", "null", '"step"', b"\x00\x01binary",
                json.dumps({"type": "mcp", "data": {"jsonrpc": "2.0", "method": "openenv/session/close", "id": 1,
                                                    "params": {"session_id": "someone-else"}}}),
                json.dumps({"type": "step", "data": {"text": "inventory"}}),
            ):
                await ws.send(message)
                replies.append(json.loads(await ws.recv()))
        return replies

    replies = asyncio.run(session())
    codes = [(r["type"], r["data"].get("code")) for r in replies]
    assert codes == [("observation", None)] + [("error", "INVALID_JSON")] * 5 + [
        ("error", "UNKNOWN_TYPE"), ("observation", None)]
    assert replies[-1]["data"]["observation"]["info"]["step"] == 1  # the same session, one step on


@pytest.mark.timeout(120)
def test_odd_actions_have_the_same_outcome_remote_as_local(servers):
    odd = ["go\udc80north", "craft\ud800", "x" * (2 << 20), "y" * 4001, "é" * (600_000)]
    local = gym.make(TEXTCRAFT, split="train")
    remote = _remote(servers[0].url, split="train")
    try:
        for action in odd:
            expected = [local.reset(seed=5)[0]]
            got = [remote.reset(seed=5)[0]]
            for env, out in ((local, expected), (remote, got)):
                obs, reward, terminated, truncated, info = env.step(action)
                out.append((obs, reward, terminated, truncated, comparable_info(info)))
            assert got == expected, f"{action[:20]!r}..."
            assert expected[1][-1]["parse_error"]  # an invalid action, not an error
        assert remote.step("inventory")[4]["step"] == 2  # the session is fine
    finally:
        local.close()
        remote.close()


def test_an_absurd_jvm_memory_cap_is_a_clear_error():
    from agentgym_envs.families._jvm import JVMConfig

    with pytest.raises(ValueError, match="over this machine's memory"):
        JVMConfig(max_memory_mb=10**8)
    with pytest.raises(TypeError, match="must be an int"):
        JVMConfig(max_memory_mb="lots")


@pytest.mark.timeout(180)
def test_abrupt_disconnects_log_no_traceback():
    server = ServerProcess(TEXTCRAFT, {"split": "test"}, port=0, env=_child_env()).start()
    try:
        url = server.url
        # A client process that dies mid-episode, without closing its connection.
        code = (
            "import gymnasium as gym, agentgym_envs, os\n"
            f"env = gym.make('agentgym/Remote-v0', url={url!r}, split='test')\n"
            "env.reset(seed=0); env.step('inventory'); os._exit(0)\n"
        )
        subprocess.run([sys.executable, "-c", code], timeout=120, env=_child_env(), check=True)

        from websockets.asyncio.client import connect

        async def vanish(after_sending: str) -> None:
            ws = await connect(url.replace("http", "ws") + "/ws")
            await ws.send(after_sending)
            ws.transport.abort()  # the TCP connection reset, no close frame, the reply unread

        asyncio.run(vanish(json.dumps({"type": "reset", "data": {"seed": 0}})))
        asyncio.run(vanish(json.dumps({"type": "step", "data": {"text": "inventory"}})))
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as raw:
            raw.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # gone mid-handshake
        env = _remote(url, split="test")  # the server still serves
        env.reset(seed=0)
        env.close()
        time.sleep(1.0)
    finally:
        server.stop()
    log = "\n".join(server.output)
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]
