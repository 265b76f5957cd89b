"""Child process of ``test_hostile_inputs.py``: one environment, stepped on request, in its own process.

A hang or a segfault of a simulator must fail the test, not stall or kill pytest, so the
environment lives here: the test writes one JSON request per line to our stdin
(``{"format": ..., "text": ...}``) and reads one JSON answer per line from the pipe whose
file descriptor is our second argument,
with a deadline per step.  Our stdout is the simulator's: the test only counts its bytes.

Web families (MiniWoB, the shop) type the text into the page's first text box
(``type(element_id, text)``); the hello says so under ``"call"``.

Usage: ``python tests/hostile_driver.py <family> <answer fd>`` (the working directory is a scratch folder,
which must stay empty).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, os.environ.get("AGENTGYM_REPO", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def make_env(family: str) -> tuple[Any, Any]:
    """The family's environment and the task to play (small configurations, no step limit in the way)."""
    big = 100_000
    if family == "textworld":
        from agentgym_envs.families.textworld import TextWorldEnv

        return TextWorldEnv("w2-o3-q4", split="test", max_steps=big), 10001
    if family == "alfworld":
        from agentgym_envs.families.alfworld import ALFWorldEnv

        env = ALFWorldEnv(task_types=["PickAndPlace"], split="test", max_steps=big)
        return env, env.task_ids[0]
    if family == "scienceworld":
        from agentgym_envs.families.scienceworld import ScienceWorldEnv

        env = ScienceWorldEnv("boil", split="test", max_steps=big)
        return env, env.task_ids[0]
    if family == "textworld_express":
        from agentgym_envs.families.textworld_express import TextWorldExpressEnv

        env = TextWorldExpressEnv("coin", split="test", max_steps=big)
        return env, env.task_ids[0]
    if family == "babyai":
        from agentgym_envs.families.babyai import BabyAIEnv

        return BabyAIEnv("GoToRedBall", split="test", max_steps=big), 0
    if family == "textcraft":
        from agentgym_envs.families.textcraft import TextCraftEnv

        env = TextCraftEnv(split="test", max_steps=big)
        return env, env.task_ids[0]
    if family == "deepsearch":
        from agentgym_envs.families.deepsearch import DeepSearchEnv

        env = DeepSearchEnv(hops=1, split="test", max_steps=big)
        return env, env.task_ids[0]
    if family == "miniwob":
        from agentgym_envs.families.web.miniwob import MiniWoBEnv

        return MiniWoBEnv("enter-text", split="test", max_steps=big), "enter-text/0"
    if family == "webshop":
        from agentgym_envs.families.web.shop import WebShopEnv

        return WebShopEnv(split="test", catalogue_size=300, max_steps=big), 0
    if family == "swe":  # the agent's text becomes shell commands in the sandbox
        from agentgym_envs.families.swe import SWEEnv

        env = SWEEnv(split="test", max_steps=big)
        return env, env.task_ids[0]
    if family == "webarena":
        from agentgym_envs.families.web.webarena.env import WebArenaEnv

        return WebArenaEnv(split="test", max_steps=big), 0  # the shop's home page: a search box
    raise ValueError(f"unknown family {family!r}")


def main() -> None:
    answers = os.fdopen(int(sys.argv[2]), "w", buffering=1, encoding="utf-8")

    def send(obj: dict[str, Any]) -> None:
        answers.write(json.dumps(obj) + "\n")  # ensure_ascii: lone surrogates travel as escapes

    from agentgym_envs.errors import AgentGymError
    from agentgym_envs.parsing import ActionParser

    try:
        env, task = make_env(sys.argv[1])
    except (ImportError, AgentGymError) as exc:  # a family whose extra or data is missing here
        send({"skip": f"{type(exc).__name__}: {exc}"})
        return
    env.reset(options={"task": task})
    hello: dict[str, Any] = {"ready": True, "tools": [[t.name, list(t.parameters)] for t in env.tools]}
    if hasattr(env, "find_node"):  # web: the hostile text is typed into the page's first text box
        box = env.find_node(role="textbox")
        hello["call"] = {"tool": "type", "parameter": "text", "fixed": {"element_id": str(box.id)}}
    send(hello)
    done = False
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        try:
            if done:
                env.reset(options={"task": task})
            if env.parser.format != request["format"]:
                env.parser = ActionParser(request["format"], env.tools, max_chars=env.parser.max_chars)
            obs, reward, terminated, truncated, info = env.step(request["text"])
            done = terminated or truncated
            keys = ("action", "parse_error", "invalid_action", "truncation_reason", "error")
            send({
                "obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated,
                "info": {k: info.get(k) for k in keys}, "seconds": time.perf_counter() - start,
            })
        except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
            send({"exception": traceback.format_exc()})
            done = True
    env.close()


if __name__ == "__main__":
    main()
