"""The ``agentgym`` command line.

Example (shell)::

    agentgym list
    agentgym play agentgym/TextWorld-w2-o3-q4-v0 --split test
    agentgym rollout agentgym/TextWorld-w2-o3-q4-v0 --policy expert,random --episodes 20
    agentgym rollout agentgym/TextCraft-v0 --policy hf:runs/tc/checkpoint-100 --tasks 50 --temperature 0
    agentgym plot runs/grpo runs/grpo-epo -o curves.png
    agentgym leaderboard --suite quick --policy random,expert,smollm2
    agentgym serve agentgym/BabyAI-GoToLocal-v0 --port 8000 split=test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

from agentgym_envs.errors import AgentGymError, install_command


def _cmd_list(args: argparse.Namespace) -> int:
    from agentgym_envs.registry import list_environments

    rows = list_environments(args.family)
    if args.family and not rows:
        known = sorted({r.family for r in list_environments(None)})
        print(f"error: unknown family {args.family!r}{_did_you_mean(args.family, known)}; "
              f"families: {', '.join(known)}", file=sys.stderr)
        return 2
    if args.installed:
        rows = [r for r in rows if r.installed]
    width = max([len(r.env_id) for r in rows] + [10])
    print(f"{'environment':<{width}}  {'family':<12} {'splits':<18} installed")
    for r in rows:
        installed = "yes" if r.installed else f"no ({install_command(r.extra)})"
        print(f"{r.env_id:<{width}}  {r.family:<12} {','.join(r.splits):<18} {installed}")
    print(f"\n{len(rows)} environments")
    return 0


#: What ends an ``agentgym play`` session (never sent to the game).
QUIT_WORDS = (":quit", "quit", "exit", ":exit", ":q")


def _check_env_id(env_id: str) -> None:
    """Fail with the registry's hint (missing ``agentgym/`` namespace, close matches, the extra to install)."""
    from agentgym_envs.registry import REMOTE_ENV_ID, registration

    if env_id != REMOTE_ENV_ID:  # a served environment's id is the server's, checked there
        registration(env_id)


#: Meta-commands of ``agentgym play`` (never sent to the game, never use up a step).
PLAY_HELP = (
    "commands: :admissible lists valid actions (where the family has a list), :expert asks the expert, "
    ":help shows this, quit or exit ends; anything else is sent to the game as an action"
)


def _cmd_play(args: argparse.Namespace) -> int:
    from agentgym_envs.core import as_text_env
    from agentgym_envs.registry import make

    env = make(args.env, **_env_settings(args, reward=args.reward))
    try:
        _play_session(env, as_text_env(env), args.seed)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        env.close()
    return 0


def _play_session(env: gym.Env, inner: Any, seed: int) -> None:
    """Read actions from the terminal until the episode ends, the input ends, or the player quits."""
    obs, info = env.reset(seed=seed)
    instruction = str(info.get("instruction") or "")
    # Most families' first observation already states the task; print it once.
    print(f"{obs}\n" if instruction and instruction in obs else f"Task: {instruction}\n\n{obs}\n")
    print(f"({PLAY_HELP})")
    total = 0.0
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return
        command = line.strip()
        if command.lower() in QUIT_WORDS:
            return
        if command.lower() in (":help", "help", ":h", "?"):
            print(PLAY_HELP)
            continue
        if command == ":admissible":
            print("\n".join(inner.admissible_actions()) or "(no list for this family)")
            continue
        if command == ":expert":
            print(inner.expert_action())
            continue
        if command.startswith(":"):
            print(f"unknown command {command!r}; {PLAY_HELP}")
            continue
        obs, reward, terminated, truncated, info = env.step(line)
        total += reward
        print(f"\n{obs}\n[reward {reward:+.2f}, return {total:.2f}, step {info['step']}]")
        if terminated or truncated:
            outcome = "won" if info["won"] else ("lost" if info["lost"] else info["truncation_reason"])
            print(f"Episode over: {outcome}.")
            return


def _env_settings(args: argparse.Namespace, **settings: Any) -> dict[str, Any]:
    """gym.make arguments: the split, these settings, then ``--env-kwargs``.

    A served environment (``agentgym/Remote-v0``) runs with the settings its operator fixed at ``agentgym serve``;
    only the split and what the user typed in ``--env-kwargs`` go to the server.
    """
    from agentgym_envs.registry import REMOTE_ENV_ID
    from agentgym_envs.remote.server import parse_env_kwargs  # the same key=value rule as `agentgym serve`

    if args.env == REMOTE_ENV_ID:
        settings = {}
    return {"split": args.split, **settings, **parse_env_kwargs(args.env_kwargs)}


def _did_you_mean(typed: str, choices: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(typed, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _cmd_rollout(args: argparse.Namespace) -> int:
    from agentgym_envs.eval.episodes import play_episodes, summarize
    from agentgym_envs.eval.model_rollout import is_model_policy, rollout_model
    from agentgym_envs.eval.policies import SCRIPTED_POLICIES, check_policy_spec

    names = [p.strip() for p in args.policy.split(",") if p.strip()]
    for name in names:  # a misspelt policy or a missing checkpoint fails before anything is played
        check_policy_spec(name)
    _check_env_id(args.env)
    env_kwargs = _env_settings(args, reward=args.reward, action_format=args.format)
    if args.max_steps:
        env_kwargs["max_steps"] = args.max_steps
    report = {}
    for name in names:
        if is_model_policy(name):
            # The leaderboard's engine and records: --tasks held-out tasks, --samples episodes each.
            summary, records = rollout_model(
                args.env, name, tasks=args.tasks or args.episodes, samples=args.samples, temperature=args.temperature,
                max_new_tokens=args.max_new_tokens, seed=args.seed, env_kwargs=env_kwargs, out=args.out,
            )
            report[name] = {"summary": summary, "episodes": records}
            print(
                f"{name} on {args.env}: success {summary['success_rate']:.1%} "
                f"[{summary['success_ci_low']:.1%}, {summary['success_ci_high']:.1%}] over {summary['episodes']} "
                f"episodes ({summary['tasks']} tasks x {args.samples}), mean return {summary['mean_return']:.3f}, "
                f"mean steps {summary['mean_steps']:.1f}, invalid actions {summary['invalid_action_rate']:.1%}, "
                f"pass@{summary['k']} {summary['pass_at_k']:.1%}"
            )
            continue
        results = play_episodes(args.env, SCRIPTED_POLICIES[name](args.seed), args.episodes, seed=args.seed, **env_kwargs)
        summary = summarize(results)
        report[name] = {"summary": summary, "episodes": [r.as_dict() for r in results]}
        print(
            f"{name:>8} on {args.env}: success {summary['success_rate']:.1%} "
            f"[{summary['success_ci_low']:.1%}, {summary['success_ci_high']:.1%}], "
            f"mean return {summary['mean_return']:.3f}, mean steps {summary['mean_steps']:.1f}, "
            f"{summary['steps_per_second']:.1f} steps/s"
        )
    if args.json:  # each episode with its transcript (observations, the policy's text, actions, rewards)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from agentgym_envs.runs import plot_runs

    path = plot_runs(args.runs, args.out)
    print(f"written: {path}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from agentgym_envs.eval.results import RESULTS_FILE

    if args.merge:
        missing = [str(path) for path in args.merge if not path.is_file()]
        if missing:
            print(f"error: results file(s) not found: {', '.join(missing)}", file=sys.stderr)
            return 2
        merged = _merge_results(args.merge, args.out)
        if merged is None:
            return 2
        paths, records = merged
    else:
        from agentgym_envs.eval.policies import default_policies
        from agentgym_envs.eval.results import read_results
        from agentgym_envs.eval.runner import run_leaderboard
        from agentgym_envs.eval.suite import load_suite

        suite = load_suite(args.suite, tasks=args.tasks, samples=args.samples)
        policies = [p.strip() for p in args.policy.split(",") if p.strip()] if args.policy else list(default_policies())
        try:
            run_leaderboard(
                suite, policies, args.out, seed=args.seed, max_episodes=args.max_episodes,
                temperature=args.temperature, max_new_tokens=args.max_new_tokens, batch=not args.sequential,
                threads=args.threads, batch_size=args.batch_size, env_workers=args.env_workers,
                env_processes=args.env_processes, env_step_timeout_s=args.env_step_timeout,
            )
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished episodes are in {args.out / RESULTS_FILE}; run again to resume")
            return 130
        paths = {name: args.out / f"leaderboard.{ext}" for name, ext in (("markdown", "md"), ("csv", "csv"), ("chart", "png"))}
        records = read_results([args.out / RESULTS_FILE])
    if args.hf_dataset:
        from agentgym_envs.eval.report import write_hf_dataset

        paths["dataset"] = write_hf_dataset(records, args.hf_dataset)
    print((args.out / "leaderboard.md").read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _merge_results(files: list[Path], out: Path) -> tuple[dict[str, Path], list[dict[str, Any]]] | None:
    """``leaderboard --merge``: one table from several results files (``None`` when they hold no episode)."""
    from agentgym_envs.eval.report import summarize_results, write_reports
    from agentgym_envs.eval.results import load_results

    loaded = load_results(files)
    rows = summarize_results(loaded.records)
    if not rows:
        print(f"error: no episode records in {', '.join(map(str, files))}", file=sys.stderr)
        return None
    notes = [f"merged {len(loaded.records)} episodes from {len(files)} file(s)"]
    if loaded.duplicates:
        notes.append(f"{loaded.duplicates} duplicate episodes (same policy, task, sample and settings) "
                     "were counted once")
    if loaded.set_aside:
        why = ", ".join(f"{count} {reason}" for reason, count in loaded.reasons.items())
        notes.append(f"{loaded.set_aside} line(s) that are not valid episode records were set aside ({why})")
    print("[leaderboard] " + "; ".join(notes))
    return write_reports(rows, out, "merged results", notes=notes), loaded.records


def build_parser() -> argparse.ArgumentParser:
    from agentgym_envs import __version__

    parser = argparse.ArgumentParser(prog="agentgym", description="Text and web environments for LLM agents.")
    parser.add_argument("--version", action="version", version=f"agentgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    formatter = DefaultsHelpFormatter

    p = sub.add_parser("list", help="list registered environments", formatter_class=formatter)
    p.add_argument("--family", help="only this family's environments, e.g. textworld, babyai (see the family column)")
    p.add_argument("--installed", action="store_true", help="only environments whose dependencies are installed")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "play", help="play an environment in the terminal", formatter_class=formatter,
        description="Play an environment in the terminal; quit or exit ends the session. Note: play's defaults "
        "(the test split, dense reward) differ from gym.make's (the train split, sparse reward).",
    )
    p.add_argument("env", help="environment id, e.g. agentgym/TextWorld-w2-o3-q4-v0 (see `agentgym list`)")
    p.add_argument("--split", default="test", help="task split (gym.make's default is train)")
    p.add_argument("--seed", type=int, default=0, help="reset seed (picks the task)")
    p.add_argument("--reward", default="dense", choices=["sparse", "dense", "native"],
                   help="reward shown after each step (gym.make's default is sparse)")
    _add_env_kwargs(p)
    p.set_defaults(func=_cmd_play)

    p = sub.add_parser(
        "rollout", help="roll out scripted policies or a model (a checkpoint) and print their statistics",
        formatter_class=formatter,
        description="Play episodes of one environment and print success (95% Wilson interval), return and steps. "
        "Scripted policies play --episodes episodes; a model (hf:PATH for a local model or a training checkpoint, "
        "vllm:PATH, openai:URL#MODEL, smollm2) plays --samples episodes of each of the first --tasks tasks through "
        "the leaderboard's engine, with the leaderboard's records (kept in --out if given).",
    )
    p.add_argument("env", help="environment id (see `agentgym list`)")
    p.add_argument("--policy", default="expert,random",
                   help="comma-separated: random, expert, smollm2, hf:PATH[+ADAPTER], vllm:PATH, openai:URL#MODEL")
    p.add_argument("--episodes", type=int, default=10, help="episodes of a scripted policy (and --tasks' default)")
    p.add_argument("--tasks", type=int, help="model policies: the split's first N tasks (None: as many as --episodes)")
    p.add_argument("--samples", type=int, default=1, help="model policies: episodes per task (k of pass@k)")
    p.add_argument("--temperature", type=float, default=0.7, help="model policies' sampling temperature (0: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="model policies' tokens per turn")
    p.add_argument("--out", type=Path,
                   help="model policies: keep the episodes and tables in this folder (resumed if present)")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, help="step limit (default: the environment's own)")
    p.add_argument("--reward", default="sparse", choices=["sparse", "dense", "native"])
    p.add_argument("--format", default="plain", help="action format the policies write in")
    p.add_argument("--json", type=Path, help="write summaries and episodes (with transcripts) to this file")
    _add_env_kwargs(p)
    p.set_defaults(func=_cmd_rollout)

    p = sub.add_parser("leaderboard", help="evaluate policies on a suite and write tables and a chart",
                       formatter_class=formatter)
    p.add_argument("--suite", default="quick", help="quick, full, or a JSON suite file")
    p.add_argument("--policy",
                   help="comma-separated: random, expert, smollm2, hf:PATH[+ADAPTER], vllm:PATH (or vllm:smollm2), "
                        "openai:URL#MODEL (default: random,expert and SmolLM2 through vLLM where vLLM is installed, "
                        "else smollm2)")
    p.add_argument("--out", type=Path, default=Path("results/leaderboard"), help="results folder (resumed if present)")
    p.add_argument("--tasks", type=int, help="held-out tasks per environment (overrides the suite)")
    p.add_argument("--samples", type=int, help="episodes per task, k of pass@k (overrides the suite)")
    p.add_argument("--seed", type=int, default=0, help="base seed; episode s of task i resets with seed+1000s+i")
    p.add_argument("--max-episodes", type=int, help="stop after this many new episodes (resume later)")
    p.add_argument("--temperature", type=float, default=0.7, help="model policies' sampling temperature (0: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="model policies' tokens per turn")
    p.add_argument("--merge", type=Path, nargs="+", help="only merge these episodes.jsonl files into one table")
    p.add_argument("--hf-dataset", type=Path, metavar="DIR",
                   help="also save the episodes with transcripts as a Hugging Face dataset (datasets.load_from_disk)")
    p.add_argument("--sequential", action="store_true",
                   help="play model policies one episode at a time instead of one batch per environment")
    p.add_argument("--threads", type=int, help="torch threads for local models (default: 1 on <= 2 cores)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="most episodes of a model policy in one batch (episodes of environments sharing a format)")
    p.add_argument("--env-workers", choices=["auto", "inprocess", "process"], default="auto",
                   help="where a model policy's batched environments step: auto = worker processes for ScienceWorld, "
                        "ALFWorld, MiniWoB and WebShop, this process for the fast families")
    p.add_argument("--env-processes", type=int, metavar="N",
                   help="most worker processes per batch (default: the number of cores)")
    p.add_argument("--env-step-timeout", type=float, metavar="SECONDS",
                   help="deadline of one reset or step in a worker process; past it the episode ends with "
                        "truncation_reason time_limit (default: the family's, 60 s for the fast families and "
                        "300 s for simulators and browsers; inf: none)")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser(
        "plot", help="draw the learning curves of training runs into a PNG", formatter_class=formatter,
        description="Draw reward, held-out success, entropy, KL, clip fractions and invalid-action rate against "
        "the step, from each run folder's metrics.jsonl (written by every agentgym train run), several runs on "
        "one figure (legend: the folder names).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders holding metrics.jsonl")
    p.add_argument("-o", "--out", type=Path, default=Path("curves.png"), help="the PNG to write")
    p.set_defaults(func=_cmd_plot)

    for extra in _extra_commands():
        extra(sub)
    return parser


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in ``--help`` unless it has none (None, False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == [] or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_env_kwargs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-kwargs", nargs="+", default=[], metavar="KEY=VALUE", type=str,
        help="more arguments for gym.make, e.g. url=http://127.0.0.1:8000 for agentgym/Remote-v0 or max_steps=20 "
             "(values are read as JSON where they parse)",
    )


def _extra_commands() -> list[Any]:
    """Sub-commands that installed packages declare under the ``agentgym_envs.commands`` entry-point group.

    This is how ``agentgym train`` (from :mod:`trl_plugins`) joins the command line without the
    environments package importing the trainer package; a plugin that fails to load is skipped.
    """
    from importlib.metadata import entry_points

    from agentgym_envs.families.swe.build import add_subcommand as add_swe
    from agentgym_envs.remote.cli import add_subcommand as add_serve

    commands = [add_serve, add_swe]
    for entry in sorted(entry_points(group="agentgym_envs.commands"), key=lambda e: e.name):
        try:
            commands.append(entry.load())
        except ImportError:
            continue
    return commands


def main(argv: list[str] | None = None) -> int:
    import agentgym_envs  # noqa: F401 - registers the environments

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # only a sub-command that takes free --field value overrides (``train``) accepts these
        if not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except (AgentGymError, gym.error.Error, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
