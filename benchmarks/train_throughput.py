"""Training throughput: AgentGRPOTrainer against TRL's stock GRPOTrainer with ``environment_factory``.

One run compares, on the same model, environment, tasks, seeds, batch, turn and token limits:

* ``ours``: :class:`trl_plugins.trainer.AgentGRPOTrainer` (the rollout engine with the transformers backend,
  the KV cache carried across an episode's turns); ``--with-fresh-prefill`` adds it with ``carry_kv_cache=False``;
* ``trl``: TRL's stock ``GRPOTrainer`` with ``environment_factory`` (the environment exposed as an ``act(command)``
  tool, multi-turn through TRL's tool-calling loop);
* ``ours-vllm`` (when ``vllm`` is importable by ``--vllm-python``): the same trainer with
  ``generation_backend="vllm"`` (vLLM colocated in the trainer's process, the policy's weights pushed into it
  after each optimizer step, TRL's importance-sampling correction on), the engine compiled
  (``vllm_enforce_eager=False``: its start, excluded from the figures, takes longer; ``--vllm-eager`` runs it
  eager).  On CPU vLLM reserves its KV-cache space up front, so this row's peak memory is dominated by that
  reservation.

Fairness (what the rows share, checked and printed):

* each row runs in its own process (``python this-script --child ...``), with ``--threads`` torch threads
  (default 1: on a small shared CPU, two threads per process were up to 70x slower); peak memory is that
  process's own peak RSS (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA);
* the same prompts: both trainers render with the same chat template (Qwen2.5's tool-calling ChatML, which
  SmolLM2's ChatML tokens also fit; TRL needs a template it can parse tool calls with), the same system prompt,
  the same ``act`` tool schema (TRL's, from the ``act`` docstring, given to our trainer through
  ``chat_template_kwargs``) and the same user message (task, the hermes format instructions, observation);
  the first prompt's token ids are hashed on every row so equality is visible;
* the same episodes: ``--reply forced`` (default) makes every reply the same tool call
  (``<tool_call>{"name": "act", "arguments": {"command": "look"}}</tool_call>`` + end of turn) by masking the
  model's logits at each step (a forward hook on both trainers' model, a vLLM logits processor), so each
  episode plays exactly ``--max-turns`` replies of the same tokens on every row; the model still runs its full
  forward per token, only the sampled id is fixed.  ``--reply sampled`` samples freely instead (seeded; compare
  the printed turns and tokens);
* the same limits: ``--max-new-tokens`` per reply on both (TRL through ``generation_kwargs``), and TRL's
  ``max_completion_length`` (which must also hold the tool results between replies) is ``--max-context``, so
  TRL's episodes are not cut; TRL's ``max_tool_calling_iterations`` is ``max_turns - 1`` (its first reply comes
  before the loop), so both sides generate ``max_turns`` replies (TRL steps the environment once less: the
  tool call of its last reply is not executed);
* the same timer scopes: rollout time = environment resets + generation + environment steps (+ each path's own
  tokenisation and parsing) -- ours: the engine's ``RolloutStats.seconds``; TRL: the resets (timed inside the
  environment) plus ``GRPOTrainer._generate``.  Rollout+scoring = the whole ``_generate_and_score_completions``
  on every row (for ``ours-vllm`` that includes the weight push and the trainer's own log-prob forwards, which
  the engine-only rollout time leaves out).  Step time is the RL step (``--num-iterations`` optimizer steps:
  rollout, log-probs, loss, optimizer) timed by a callback on both;
* medians, load and CPU share: the first RL step of each row is a warm-up; the figures are medians over the
  ``--steps`` (default 3) measured ones; each row records the 1/5/15-minute load average at its start and end
  and its CPU share (CPU seconds of the row's process, all threads, over wall seconds of the measured steps);
  rows run one after another, so on a shared machine compare ratios from one run;
* the same work, checked: the replies and model tokens of every measured step and of every episode are compared
  with the first row's (``same work`` line, ``same_work`` in the JSON);
* ``ours-noreuse`` / ``ours-vllm-noreuse``: the same trainer with ``reuse_sampling_logprobs=False`` (a no-grad
  old-log-prob forward wherever TRL runs one), to measure that saving alone; ``--num-iterations 2`` (off-policy:
  the transformers sampler's log-probs stand in for that forward), ``--loss-hooks erc`` (old entropies) and
  ``--beta`` select the forwards in play.
* ``ours-shared`` / ``ours-vllm-shared``: ``ours`` / ``ours-vllm`` with ``share_group_prompts=True`` (the loss forward runs each group's shared prompt once
  and the completions on its KV cache); without ``--gradient-checkpointing`` only (under it nothing is shared).

What still differs (printed): TRL prefills the whole conversation with ``generate`` on every turn (no cache
across turns), renders each tool result with the chat template (two ``apply_chat_template`` calls per call)
and parses each reply with ``parse_response``; a tool result is framed as ``<tool_response>...</tool_response>``
in a user turn, an observation of ours as a plain user turn (a few tokens' difference per turn, shown in the
per-episode token counts).

Usage::

    .venv/bin/python benchmarks/train_throughput.py                      # CUDA if available, else CPU
    .venv/bin/python benchmarks/train_throughput.py --quick              # 4 episodes x 3 turns x 32 tokens
    .venv/bin/python benchmarks/train_throughput.py --quick --rows ours,ours-noreuse --num-iterations 2
    .venv/bin/python benchmarks/train_throughput.py --quick --rows ours,ours-shared
    .venv/bin/python benchmarks/train_throughput.py --quick --vllm-python /tmp/venv-vllm/bin/python
    .venv/bin/python benchmarks/train_throughput.py --json results/train_throughput.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

#: The command every reply is forced to (``--reply forced``): valid in every text game, never ends an episode.
FORCED_COMMAND = "look"
ROWS = ("ours", "ours-noreuse", "ours-shared", "ours-fresh", "trl", "ours-vllm", "ours-vllm-noreuse", "ours-vllm-shared")
DESCRIPTIONS = {
    "ours": "agentgym AgentGRPOTrainer (transformers, KV cache carried)",
    "ours-noreuse": "agentgym AgentGRPOTrainer (transformers, reuse_sampling_logprobs=False)",
    "ours-shared": "agentgym AgentGRPOTrainer (transformers, share_group_prompts=True)",
    "ours-fresh": "agentgym AgentGRPOTrainer (transformers, fresh prefill)",
    "trl": "TRL GRPOTrainer + environment_factory",
    "ours-vllm": "agentgym AgentGRPOTrainer (vLLM colocate)",
    "ours-vllm-noreuse": "agentgym AgentGRPOTrainer (vLLM colocate, reuse_sampling_logprobs=False)",
    "ours-vllm-shared": "agentgym AgentGRPOTrainer (vLLM colocate, share_group_prompts=True)",
}


# ---- shared pieces (run inside each row's process) -------------------------------------------------
def setup_torch(threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (vLLM's import may have run parallel work)
        pass
    return torch


def model_path(name: str) -> Path:
    if name == "smollm2":
        from agentgym_envs.models import smollm2_dir

        return smollm2_dir()
    return Path(name)


def load_model(opts: argparse.Namespace) -> tuple[Any, Any]:
    """The model and a tokenizer with the tool-calling template both trainers use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.chat_template_utils import qwen2_5_chat_template

    path = model_path(opts.model)
    dtype = torch.bfloat16 if opts.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = qwen2_5_chat_template  # ChatML with tools, which TRL can parse tool calls with
    return model, tok


def forced_reply_ids(tok: Any) -> list[int]:
    """The token ids of the forced reply: one hermes ``act`` tool call, then the end-of-turn token."""
    call = json.dumps({"name": "act", "arguments": {"command": FORCED_COMMAND}})
    return list(tok(f"<tool_call>\n{call}\n</tool_call>", add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]


class ForcedReply:
    """A forward hook that makes the model's next-token logits pick ``reply[k]`` at the k-th generated token.

    Active only inside :meth:`wrap`-ped generation calls (the loss forwards are untouched).  A forward over
    more than one new token, or one that does not feed back the token forced before, is a (re)prefill and
    restarts the reply (a prefill can be one token per row when a shared prefix or a carried cache holds the rest);
    a one-token forward of the token forced before continues it.

    Example:
        >>> forcer = ForcedReply(model, forced_reply_ids(tok))              # doctest: +SKIP
        >>> backend.generate = forcer.wrap(backend.generate)               # doctest: +SKIP
    """

    def __init__(self, model: Any, reply: list[int]):
        self.reply, self.active, self.position = reply, False, 0
        model.register_forward_hook(self._hook, with_kwargs=True)

    def wrap(self, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.active, self.position = True, 0
            try:
                return fn(*args, **kwargs)
            finally:
                self.active = False

        return wrapped

    def _hook(self, module: Any, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        if not self.active:
            return output
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids.size(1) > 1 or self.position == 0 or not bool((input_ids[:, -1] == self.reply[self.position - 1]).all()):
            # a prefill (one token per row when a shared prefix or a carried cache holds the rest): a new reply
            self.position = 0
        index = min(self.position, len(self.reply) - 1)
        logits = output.logits
        logits[:, -1, :] = -1e4
        logits[:, -1, self.reply[index]] = 1e4
        self.position += 1
        return output


def peak_memory_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_game_env_class(opts: argparse.Namespace, reset_seconds: list[float]) -> type:
    """The agentgym environment as TRL's ``environment_factory`` class: ``reset`` and one ``act`` tool."""
    from agentgym_envs.core import as_text_env
    from agentgym_envs.prompts import PromptConfig, first_messages
    from agentgym_envs.registry import make_env

    class GameEnv:
        """The same agentgym environment, exposed to TRL as a tool-calling environment."""

        def __init__(self) -> None:
            self.env = make_env(opts.env, split="train", **env_kwargs(opts))
            self.reward, self.done, self.steps = 0.0, True, 0

        def reset(self, task: Any = None, seed: int | None = None, **_: Any) -> str:
            start = time.perf_counter()
            obs, _info = self.env.reset(seed=seed, options={"task": task})
            self.reward, self.done, self.steps = 0.0, False, 0
            text = as_text_env(self.env)
            message = first_messages(text.instruction, obs, text.parser.instructions(), PromptConfig(system_prompt=None))
            reset_seconds.append(time.perf_counter() - start)
            return message[-1]["content"]

        def act(self, command: str) -> str:
            """Send one text command to the game.

            Args:
                command: The command, for example 'open door'.

            Returns:
                What the game answers.
            """
            if self.done:
                return "The episode is over."
            parser = as_text_env(self.env).parser
            obs, reward, terminated, truncated, _ = self.env.step(parser.format_command(command))
            self.reward += float(reward)
            self.steps += 1
            self.done = terminated or truncated
            return f"Observation:\n{str(obs).strip()}"  # our observation message's content

        def get_reward(self) -> float:
            return self.reward

    return GameEnv


def env_kwargs(opts: argparse.Namespace) -> dict[str, Any]:
    return {"seed_range": tuple(opts.seed_range), "action_format": "hermes"}


def tool_schemas(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``act`` tool's JSON schema exactly as TRL renders it (from the docstring of ``GameEnv.act``)."""
    from transformers.utils import get_json_schema

    return [get_json_schema(make_game_env_class(opts, []).act)]


def prompt_hash(ids: list[int]) -> str:
    return hashlib.sha1(json.dumps(list(map(int, ids))).encode()).hexdigest()[:10]


def common_config(opts: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=opts.episodes,
        num_generations=opts.num_generations,
        max_steps=(opts.steps + 1) * opts.num_iterations,
        learning_rate=1e-6,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=opts.gradient_checkpointing,
        loss_type="grpo",
        beta=opts.beta,
        num_iterations=opts.num_iterations,
        temperature=1.0,
        bf16=opts.device == "cuda",
        use_cpu=opts.device == "cpu",
        disable_tqdm=True,
        seed=0,
    )


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def step_timer() -> Any:
    """A callback that records each trainer step's wall time and CPU seconds."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.cpu: list[float] = []
            self._start = self._cpu = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start, self._cpu = time.perf_counter(), cpu_seconds()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu.append(cpu_seconds() - self._cpu)

    return StepTimer()


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def timed_batch(method: Any, rollouts: list[dict[str, Any]]) -> Any:
    """``method`` (a trainer's ``_generate_and_score_completions``) timed whole: rollout, weight push, scoring
    forwards; the wall seconds go into the rollout record the call appended."""

    def timed(inputs: Any) -> Any:
        start = time.perf_counter()
        out = method(inputs)
        rollouts[-1]["batch_seconds"] = time.perf_counter() - start
        return out

    return timed


def summary(rollouts: list[dict[str, Any]], timer: Any, opts: argparse.Namespace, load_start: tuple) -> dict[str, Any]:
    """Medians over the measured RL steps (the first, a warm-up, is dropped) and the last step's episodes.

    An RL step is one generation batch: ``num_iterations`` optimizer steps.
    """
    n = opts.num_iterations
    cycles = [(sum(timer.seconds[i : i + n]), sum(timer.cpu[i : i + n])) for i in range(0, len(timer.seconds), n)]
    cycles = cycles[1:] if len(cycles) > 1 else cycles
    measured = rollouts[1:] or rollouts
    last = rollouts[-1]
    return {
        **{k: last[k] for k in ("prefilled_tokens", "reused_tokens", "shared_tokens", "generate_seconds") if k in last},
        "rollout_tokens_per_s": median([r["tokens"] / r["seconds"] for r in measured if r["seconds"]]),
        "rollout_seconds": median([r["seconds"] for r in measured]),
        "batch_seconds": median([r["batch_seconds"] for r in measured if "batch_seconds" in r]),
        "batch_tokens_per_s": median([r["tokens"] / r["batch_seconds"] for r in measured if r.get("batch_seconds")]),
        "step_time_s": median([wall for wall, _ in cycles]),
        "step_times_s": [wall for wall, _ in cycles],
        "cpu_share": median([cpu / wall for wall, cpu in cycles if wall]),
        "step_cpu_s": median([cpu for _, cpu in cycles]),
        "measured_steps": len(cycles),
        "turns_per_step": [sum(e["replies"] for e in r["episodes"]) for r in measured],
        "tokens_per_step": [r["tokens"] for r in measured],
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "peak_memory_mib": peak_memory_mib(opts.device),
        "episodes": last["episodes"],
        "prompt_hash": last["prompt_hash"],
    }


# ---- the rows --------------------------------------------------------------------------------------
def run_ours(
    opts: argparse.Namespace, carry: bool, vllm: bool = False, reuse: bool = True, share: bool = False
) -> dict[str, Any]:
    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.trainer import AgentGRPOTrainer

    model, tok = load_model(opts)
    forced = forced_reply_ids(tok) if opts.reply == "forced" else None

    class Trainer(AgentGRPOTrainer):
        def make_generation_backend(self) -> Any:
            if not vllm or forced is None:
                return super().make_generation_backend()
            from trl_plugins.vllm_colocate import build_vllm_backend

            return build_vllm_backend(
                self.accelerator.unwrap_model(self.model), self.args, self.chat_format.stop_ids,
                backend_class=forced_vllm_backend(forced), logits_processors=[_forced_logits_processor()],
            )

    vllm_settings = dict(
        generation_backend="vllm", vllm_max_model_length=max(opts.max_context, 2048),
        vllm_importance_sampling_correction=True, vllm_enforce_eager=opts.vllm_eager,
    ) if vllm else {}
    args = AgentGRPOConfig(
        **common_config(opts, tempfile.mkdtemp(prefix="agentgym-bench-ours-")),
        env_id=opts.env,
        env_kwargs=env_kwargs(opts),
        max_turns=opts.max_turns,
        max_new_tokens_per_turn=opts.max_new_tokens,
        max_context_tokens=opts.max_context,
        carry_kv_cache=carry,
        chat_template_kwargs={"tools": tool_schemas(opts)},
        # TRL's top_k=0 means "off"; the engine's SamplingSettings spells that None (and rejects 0)
        top_k=None,
        reuse_sampling_logprobs=reuse,
        share_group_prompts=share,
        loss_hooks=list(opts.loss_hooks),
        **vllm_settings,
    )
    trainer = Trainer(model, args=args, processing_class=tok)
    if forced is not None and not vllm:
        backend = trainer.generation_backend
        backend.generate = ForcedReply(model, forced).wrap(backend.generate)
    rollouts: list[dict[str, Any]] = []
    original = trainer._generate_and_score_completions

    counted = {"prefilled_tokens": 0, "reused_tokens": 0, "shared_tokens": 0}

    def recorded(inputs):
        out = original(inputs)
        stats, episodes = trainer.last_rollout_stats, trainer.last_episodes
        backend = trainer.generation_backend
        prefill = {}
        for name, before in counted.items():  # the transformers backend's prefill counters, this step's share
            now = getattr(backend, name, None)
            if now is not None:
                prefill[name], counted[name] = now - before, now
        rollouts.append(
            {
                "tokens": stats.model_tokens,
                "seconds": stats.seconds,
                "generate_seconds": stats.generate_seconds,
                **prefill,
                "prompt_hash": prompt_hash(episodes[0].prompt_ids),
                "episodes": [
                    {
                        "task": str(ep.task_id),
                        "seed": ep.seed,
                        "replies": len(ep.turns),
                        "env_steps": len(ep.turns),
                        "model_tokens": sum(len(t.action_ids) for t in ep.turns),
                        "prompt_tokens": len(ep.prompt_ids),
                        "completion_tokens": len(ep.completion()[0]),
                    }
                    for ep in episodes
                ],
            }
        )
        return out

    trainer._generate_and_score_completions = timed_batch(recorded, rollouts)
    timer = step_timer()
    trainer.add_callback(timer)
    load_start = os.getloadavg()
    trainer.train()
    trainer.close_envs()
    return summary(rollouts, timer, opts, load_start)


def run_trl(opts: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from agentgym_envs.core import as_text_env
    from agentgym_envs.prompts import DEFAULT_SYSTEM_PROMPT
    from agentgym_envs.registry import make_env

    model, tok = load_model(opts)
    reset_seconds: list[float] = []
    game_env = make_game_env_class(opts, reset_seconds)
    tasks = list(as_text_env(make_env(opts.env, split="train", **env_kwargs(opts))).task_ids)
    rows = [  # our trainer's task dataset: the same order (so the same sampler draws) and seeds
        {"prompt": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": ""}],
         "task": t, "seed": i}
        for i, t in enumerate(tasks)
    ]
    args = GRPOConfig(
        **common_config(opts, tempfile.mkdtemp(prefix="agentgym-bench-trl-")),
        max_completion_length=opts.max_context,  # holds the replies and the tool results between them
        max_tool_calling_iterations=opts.max_turns - 1,  # + the first reply = max_turns replies
        generation_kwargs={"max_new_tokens": opts.max_new_tokens},  # the same per-reply limit as ours
    )
    trainer = GRPOTrainer(
        model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows), environment_factory=game_env
    )
    if opts.reply == "forced":
        forcer = ForcedReply(model, forced_reply_ids(tok))
        trainer._generate_single_turn = forcer.wrap(trainer._generate_single_turn)
    rollouts: list[dict[str, Any]] = []
    original_score, original_generate = trainer._generate_and_score_completions, trainer._generate

    def scored(inputs):
        reset_seconds.clear()  # resets happen in _generate_and_score_completions, before _generate
        trainer._bench_inputs = inputs
        return original_score(inputs)

    def generate(prompts):
        start = time.perf_counter()
        out = original_generate(prompts)
        seconds = time.perf_counter() - start + sum(reset_seconds)
        prompt_ids, _completion_ids, tool_mask, completions = out[0], out[1], out[2], out[3]
        episodes = []
        for i, (row, env) in enumerate(zip(trainer._bench_inputs, trainer.environments, strict=True)):
            episodes.append(
                {
                    "task": str(row["task"]),
                    "seed": row["seed"],
                    "replies": sum(1 for m in completions[i] if m.get("role") == "assistant"),
                    "env_steps": env.steps,
                    "model_tokens": sum(tool_mask[i]),
                    "prompt_tokens": len(prompt_ids[i]),
                    "completion_tokens": len(tool_mask[i]),
                }
            )
        rollouts.append(
            {
                "tokens": sum(e["model_tokens"] for e in episodes),
                "seconds": seconds,
                "prompt_hash": prompt_hash(prompt_ids[0]),
                "episodes": episodes,
            }
        )
        return out

    trainer._generate_and_score_completions = timed_batch(scored, rollouts)
    trainer._generate = generate
    timer = step_timer()
    trainer.add_callback(timer)
    load_start = os.getloadavg()
    trainer.train()
    return summary(rollouts, timer, opts, load_start)


def _forced_logits_processor() -> type:
    """A vLLM (V1) logits processor forcing each request's ``extra_args["forced_reply"]``, token by token."""
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ForcedReplyProcessor(AdapterLogitsProcessor):
        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params: Any) -> Any:
            reply = (params.extra_args or {}).get("forced_reply")
            if not reply:
                return None

            def force(output_ids: list[int], logits: Any) -> Any:
                index = min(len(output_ids), len(reply) - 1)
                logits[:] = -1e4
                logits[reply[index]] = 1e4
                return logits

            return force

    return ForcedReplyProcessor


def forced_vllm_backend(reply: list[int]) -> type:
    """A :class:`VLLMBackend` whose requests carry ``reply`` for :func:`_forced_logits_processor`."""
    from agentgym_envs.generation.vllm import VLLMBackend

    class ForcedVLLMBackend(VLLMBackend):
        def _sampling_params(self, max_new_tokens: int) -> Any:
            params = super()._sampling_params(max_new_tokens)
            params.extra_args = {"forced_reply": reply}
            return params

    return ForcedVLLMBackend


def child(opts: argparse.Namespace) -> int:
    """Run one row in this process and write its result as JSON to ``opts.out``."""
    torch = setup_torch(opts.threads)
    if opts.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        if opts.child == "trl":
            result = run_trl(opts)
        else:
            result = run_ours(
                opts, carry=opts.child != "ours-fresh", vllm="vllm" in opts.child, reuse="noreuse" not in opts.child,
                share=opts.child.endswith("-shared"),
            )
        result["threads"] = torch.get_num_threads()
    except Exception as exc:  # noqa: BLE001 - one row's failure is reported, the others still run
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    trainer = DESCRIPTIONS[opts.child]
    if "vllm" in opts.child:
        trainer += " [eager]" if opts.vllm_eager else " [compiled]"
    result.update(row=opts.child, trainer=trainer, wall_s=time.perf_counter() - start)
    Path(opts.out).write_text(json.dumps(result))
    return 0 if "error" not in result else 1


# ---- the parent: one process per row, then the table ----------------------------------------------
def has_vllm(python: str) -> bool:
    if python == sys.executable:
        return importlib.util.find_spec("vllm") is not None
    probe = subprocess.run([python, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
                           capture_output=True)
    return probe.returncode == 0


def run_row(name: str, opts: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    python = opts.vllm_python if "vllm" in name else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        command = [python, str(Path(__file__).resolve()), *argv, "--device", opts.device, "--child", name, "--out", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS=str(opts.threads), MKL_NUM_THREADS=str(opts.threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                             os.environ.get("PYTHONPATH")])))
        process = subprocess.run(command, env=env)
        if out.exists():
            return json.loads(out.read_text())
        return {"row": name, "trainer": DESCRIPTIONS[name], "error": f"the row's process exited with {process.returncode}"}


def same_work(results: list[dict[str, Any]]) -> dict[str, bool]:
    """Per row: whether it played the first row's work, the same replies (turns) and model tokens in every
    measured step and in every episode of the last one.

    Example:
        >>> row = {"turns_per_step": [6], "tokens_per_step": [90], "episodes": [{"replies": 3, "model_tokens": 45}] * 2}
        >>> same_work([{**row, "row": "ours"}, {**row, "row": "trl"}])
        {'ours': True, 'trl': True}
    """
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {}

    def work(r: dict[str, Any]) -> tuple:
        return (r["turns_per_step"], r["tokens_per_step"], [(e["replies"], e["model_tokens"]) for e in r["episodes"]])

    first = work(ok[0])
    return {r["row"]: work(r) == first for r in ok}


def report(results: list[dict[str, Any]], opts: argparse.Namespace, device_name: str) -> None:
    print(f"\nmodel {opts.model}, env {opts.env} (hermes tool calls), {opts.episodes} episodes/step, "
          f"G={opts.num_generations}, {opts.max_turns} turns x <= {opts.max_new_tokens} new tokens, replies "
          f"{opts.reply}{' (' + FORCED_COMMAND + ')' if opts.reply == 'forced' else ''}, beta {opts.beta}, "
          f"num_iterations {opts.num_iterations}, loss hooks (ours) {list(opts.loss_hooks) or 'none'}; medians of "
          f"{opts.steps} measured RL step(s) after 1 warm-up, device {device_name}, torch threads per process "
          f"{opts.threads}, rows run one after another\n")
    print("| row | rollout tokens/s | rollout s | rollout+scoring s | step time (s) | CPU share | load 1-min start/end "
          "| peak memory (MiB) | replies/episode | model tokens/episode | prompt (tokens, hash) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in results:
        if "error" in r:
            print(f"| {r['trainer']} | error: {r['error'][:100]} | | | | | | | | | |")
            continue
        eps = r["episodes"]
        replies = "/".join(str(e["replies"]) for e in eps)
        tokens = "/".join(str(e["model_tokens"]) for e in eps)
        print(f"| {r['trainer']} | {fmt(r['rollout_tokens_per_s'], '.1f')} | {fmt(r['rollout_seconds'], '.2f')} | "
              f"{fmt(r['batch_seconds'], '.2f')} | {fmt(r['step_time_s'], '.2f')} | {fmt(r['cpu_share'], '.0%')} | "
              f"{r['load_start'][0]:.1f}/{r['load_end'][0]:.1f} | {fmt(r['peak_memory_mib'], '.0f')} | {replies} | "
              f"{tokens} | {eps[0]['prompt_tokens']}, {r['prompt_hash']} |")
    print("\nper episode (last measured step): task, seed, replies, env steps, model tokens, completion tokens "
          "(model + environment)")
    for r in results:
        if "error" not in r:
            cells = "; ".join(f"{e['task']}/{e['seed']}: {e['replies']}r {e['env_steps']}s {e['model_tokens']}m "
                              f"{e['completion_tokens']}c" for e in r["episodes"])
            print(f"  {r['row']}: {cells}; step times {', '.join(f'{t:.1f}' for t in r['step_times_s'])} s")
    for r in results:
        if "prefilled_tokens" in r:
            print(f"  {r['row']}: last step prefilled {r['prefilled_tokens']} tokens, reused {r['reused_tokens']} from "
                  f"carried caches, {r['shared_tokens']} shared within a batch; generation {r['generate_seconds']:.2f}s")
    ok = {r["row"]: r for r in results if "error" not in r and r.get("step_time_s")}
    pairs = [("trl", "ours"), ("trl", "ours-vllm"), ("ours", "ours-vllm"), ("ours-noreuse", "ours"),
             ("ours-vllm-noreuse", "ours-vllm"), ("trl", "ours-noreuse"), ("ours", "ours-fresh"),
             ("ours", "ours-shared"), ("trl", "ours-shared"), ("trl", "ours-vllm-shared"),
             ("ours-vllm", "ours-vllm-shared")]
    for slow, fast in pairs:
        if slow in ok and fast in ok:
            a, b = ok[slow], ok[fast]
            print(f"{slow} / {fast}: step time {a['step_time_s'] / b['step_time_s']:.2f}x (CPU s "
                  f"{a['step_cpu_s'] / b['step_cpu_s']:.2f}x), rollout+scoring "
                  f"{a['batch_seconds'] / b['batch_seconds']:.2f}x, rollout tokens/s {fast} / {slow} "
                  f"{b['rollout_tokens_per_s'] / a['rollout_tokens_per_s']:.2f}x, peak memory "
                  f"{a['peak_memory_mib'] / b['peak_memory_mib']:.2f}x")
    hashes = {r["prompt_hash"] for r in ok.values()}
    print(f"same first prompt on every row: {'yes' if len(hashes) == 1 else 'NO: ' + ', '.join(sorted(hashes))}")
    work = ", ".join(f"{name} {'yes' if same else 'NO'}" for name, same in same_work(results).items())
    print(f"same work (replies and model tokens of every measured step and episode) as the first row: {work}")
    print("\nmatched: model and dtype, chat template (Qwen2.5 tool ChatML), system prompt, act tool schema, user "
          "message, tasks and seeds, episodes/step and G, replies per episode, new tokens per reply, context budget, "
          "temperature 1, beta, num_iterations, learning rate, optimizer, one process and the same torch threads per "
          "row. Timer scopes: rollout = resets + generation + environment steps; rollout+scoring = the whole "
          "_generate_and_score_completions (rollout, vLLM weight push, old/reference forwards, advantages); step = "
          "the RL step (num_iterations optimizer steps) from the trainer's callbacks.")
    print("differs: TRL prefills the whole conversation on every reply (transformers generate, no cache across "
          "turns) and renders/tokenises each tool result through the chat template and parses each reply "
          "(parse_response); ours appends token ids (no re-tokenisation) and carries each episode's KV cache. TRL "
          "frames a tool result as <tool_response> in a user turn and executes max_turns-1 tool calls (its last "
          "reply's call is not run); ours-vllm samples with vLLM (its own kernels, prefix caching) and pushes the "
          "weights into it after each optimizer step. --loss-hooks apply to our rows only. Forced replies: the "
          "sampler's log-probs are those of the forced logits, so rows that reuse them off-policy (num_iterations "
          "> 1) time the same work with another loss value. Leaves out: model loading, trainer construction, the "
          "vLLM engine's start and the warm-up step.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available, else cpu")
    parser.add_argument("--model", default="smollm2", help="smollm2 or a local model folder")
    parser.add_argument("--env", default="agentgym/TextWorld-w2-o3-q4-v0")
    parser.add_argument("--seed-range", type=int, nargs=2, default=(30001, 30016))
    parser.add_argument("--episodes", type=int, default=32, help="episodes per step (per_device_train_batch_size)")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=6, help="model replies per episode")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="new tokens per reply")
    parser.add_argument("--max-context", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=3, help="measured RL steps (after one warm-up step)")
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (a reference forward when > 0)")
    parser.add_argument("--num-iterations", type=int, default=1,
                        help="optimizer steps per generation batch (> 1: off-policy, an old-log-prob forward)")
    parser.add_argument("--loss-hooks", nargs="*", default=[], help="loss hooks of our rows, e.g. erc")
    parser.add_argument("--quick", action="store_true",
                        help="defaults for a CPU: 4 episodes (G=2) x 3 turns x 32 tokens, 2 tasks, 3 measured steps "
                        "(options given explicitly win, e.g. --quick --max-turns 6)")
    parser.add_argument("--reply", choices=["forced", "sampled"], default="forced",
                        help=f"forced: every reply is the same act({FORCED_COMMAND!r}) call; sampled: free sampling")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each row's process")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--vllm-eager", action="store_true",
                        help="run the vLLM rows' engine without torch.compile (default: compiled)")
    parser.add_argument("--rows", default="ours,trl,ours-vllm", help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--with-fresh-prefill", action="store_true", help="add ours without the carried KV cache")
    parser.add_argument("--vllm-python", default=sys.executable,
                        help="the interpreter of the ours-vllm row (a venv with vllm); the row is skipped without vllm")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.quick:
        parser.set_defaults(episodes=4, num_generations=2, max_turns=3, max_new_tokens=32, steps=3,
                            seed_range=(30001, 30002))
        opts = parser.parse_args(argv)
    if opts.device is None:
        import torch

        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.child:
        return child(opts)
    if opts.max_turns < 1:
        parser.error("--max-turns must be at least 1")
    if opts.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("CUDA is not available; use --device cpu")
        device_name = torch.cuda.get_device_name()
    else:
        device_name = "cpu"

    rows = [r.strip() for r in opts.rows.split(",") if r.strip()]
    if opts.with_fresh_prefill and "ours-fresh" not in rows:
        rows.insert(1, "ours-fresh")
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    vllm_rows = [r for r in rows if "vllm" in r]
    if vllm_rows and not has_vllm(opts.vllm_python):
        print(f"vllm is not importable by {opts.vllm_python}: no {', '.join(vllm_rows)} row (pass --vllm-python)",
              flush=True)
        rows = [r for r in rows if r not in vllm_rows]
    child_argv = [a for a in argv if a not in ("--with-fresh-prefill",)]
    child_argv = strip_option(child_argv, "--rows", "--json", "--vllm-python", "--device")
    results: list[dict[str, Any]] = []
    for name in rows:
        print(f"--- {name}", flush=True)
        result = run_row(name, opts, child_argv)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "episodes"}), flush=True)
    report(results, opts, device_name)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(opts).items()}, "results": results,
                                         "same_work": same_work(results)}, indent=2))
    return 0 if all("error" not in r for r in results) else 1


def strip_option(argv: list[str], *names: str) -> list[str]:
    """``argv`` without the given options and their values (``--name value`` or ``--name=value``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(name + "=") for name in names):
            continue
        out.append(arg)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
