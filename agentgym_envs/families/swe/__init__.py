"""Software engineering: repair a real Python repository in a sandbox, rewarded by the repository's own tests.

Description
-----------
The SWE-Gym / SWE-bench setting of the Practitioner's Guide to multi-turn agentic RL, made to run on
one machine: an episode is one task instance (a repository with a bug, a problem statement, the tests
that fail because of the bug and the tests that must keep passing).  The agent works in its own copy
of the repository under a bubblewrap sandbox (:mod:`.sandbox`: no network, the system read-only,
only the episode's folder writable, time / CPU / memory / process / file-size / output limits per
command, every process killed when the command ends).  Without a usable bubblewrap the family refuses
to start (:class:`SandboxUnavailableError`, one line) rather than run commands unsandboxed.

The embedded tasks are bugs injected into pinned pure-Python packages from PyPI whose source
distributions ship their tests (SWE-smith's method, :mod:`.build` and :mod:`.mutations`); the committed
manifest (``agentgym_envs/data/swe/manifest.jsonl``) holds them and ``agentgym swe build`` remakes
them.  Users bring their own instances in the SWE-bench / SWE-Gym JSON lines format (:mod:`.tasks`):
``gym.make("agentgym/SWE-v0", instances="my_tasks.jsonl")``.

Tasks and splits
----------------
A task is an ``instance_id``.  Each instance carries its ``split`` (the embedded manifest: 80 % train,
10 % valid, 10 % test by a hash of the id; a user file without the field is split the same way).
Ids: ``agentgym/SWE-v0`` (shell commands) and ``agentgym/SWE-tools-v0`` (structured tools).

Actions
-------
``SWE-v0``: one shell command per turn (mini-swe-agent's convention), a single line, run with ``bash``
in the repository's root; ``submit`` (or ``echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT``) submits.
``SWE-tools-v0``: ``view(path)``, ``search(pattern)``, ``replace(path, old, new)`` (the only
occurrence of ``old``), ``run_tests()`` and ``submit()``.  There is no finite set of admissible
actions (``admissible_actions()`` is empty), so the leaderboard's random policy is meaningless here.

Observation
-----------
The problem statement and how to act at reset; then ``<returncode>N</returncode>`` and the command's
output in ``<output>`` tags, its middle cut past ``max_output_chars`` (10,000), or a ``<stopped>``
line saying which limit killed it (``info["exit_code"]``, ``info["stopped"]``).

Rewards
-------
On submit the instance's tests run on a fresh copy of the repository with the agent's edits to the
package's source files (edited tests do not count), and are graded with ``swebench``'s log parser and
report: ``info["won"]`` when every FAIL_TO_PASS test passes and every PASS_TO_PASS test still passes
(``reward="sparse"``, the default, pays it), ``info["score"]`` is the fraction of those tests that pass
(``reward="dense"``).  ``info["tests"]``, ``info["resolution"]`` and ``info["diff"]`` carry the results.

Expert
------
Applies the gold patch (a ``base64 -d | patch -p1`` command, or one ``replace`` call), then submits.

Termination
-----------
Submit ends the episode (terminated; won or lost); 40 steps (``max_steps``) or ``time_limit_s`` of
wall-clock time (1800) truncate it (``truncation_reason`` ``"step_limit"`` / ``"time_limit"``).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/SWE-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                          # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(info["expert_action"])  # doctest: +SKIP
"""

from __future__ import annotations

from agentgym_envs.families.swe.env import (
    BASH_TOOL,
    DEFAULT_MAX_STEPS,
    SHELL_TOOLS,
    STRUCTURED_TOOLS,
    SUBMIT_COMMANDS,
    SWEEnv,
    format_output,
)
from agentgym_envs.families.swe.sandbox import (
    CommandResult,
    Sandbox,
    SandboxLimits,
    SandboxUnavailableError,
    check_sandbox,
)
from agentgym_envs.families.swe.tasks import (
    MANIFEST,
    Grade,
    Instance,
    PackageSpec,
    grade,
    load_instances,
    parse_test_log,
)
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "swe",
    extra="swe",
    requires=("swebench", "unidiff"),
    description="Repair real Python repositories in a bubblewrap sandbox, graded by their own tests (SWE-Gym setting).",
    # A reset clones and builds a repository and the submitting step runs its tests (up to 600 s each).
    step_timeout_s=900.0,
)

__all__ = [
    "BASH_TOOL",
    "DEFAULT_MAX_STEPS",
    "FAMILY",
    "MANIFEST",
    "SHELL_TOOLS",
    "STRUCTURED_TOOLS",
    "SUBMIT_COMMANDS",
    "CommandResult",
    "Grade",
    "Instance",
    "PackageSpec",
    "SWEEnv",
    "Sandbox",
    "SandboxLimits",
    "SandboxUnavailableError",
    "check_sandbox",
    "format_output",
    "grade",
    "load_instances",
    "parse_test_log",
    "registrations",
]


def registrations() -> list[Registration]:
    entry = "agentgym_envs.families.swe.env:SWEEnv"
    return [
        Registration("SWE", FAMILY, entry, {}, "Repair a Python repository with shell commands; 40 steps"),
        Registration(
            "SWE-tools",
            FAMILY,
            entry,
            {"actions": "tools"},
            "Repair a Python repository with view/search/replace/run_tests/submit tools; 40 steps",
        ),
    ]
