"""agentgym-envs: text and web environments for training LLM agents, on Gymnasium.

``import agentgym_envs`` registers every family under the ``agentgym/`` namespace
without importing any simulator (TextWorld, a JVM, a browser) or torch.

Example:
    >>> import gymnasium as gym
    >>> import agentgym_envs
    >>> env = gym.make("agentgym/TextWorld-w2-o3-q4-v0", split="test")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                  # doctest: +SKIP
"""

from agentgym_envs.core import (
    INFO_KEYS,
    TRUNCATION_REASONS,
    StateSnapshots,
    SupportsSnapshot,
    TaskSplits,
    TaskStart,
    TextEnv,
    TextSpace,
    Transition,
    as_text_env,
)
from agentgym_envs.errors import (
    ActionFailed,
    AgentGymError,
    BrowserNotFoundError,
    CommandError,
    DataNotFoundError,
    EnvironmentCrashedError,
    ExpertUnavailableError,
    GenerationError,
    MissingDependencyError,
    PolicyError,
    RunLogError,
    SplitLeakError,
    SuiteError,
    UnknownSplitError,
    UnknownTaskError,
)
from agentgym_envs.parsing import ACT_TOOL, FORMATS, ActionParser, ParsedAction, ToolCall, ToolSpec
from agentgym_envs.registry import list_environments, make, make_env, register_all
from agentgym_envs.wrappers import DenseReward, FormatPenalty, SparseReward, StepPenalty

__version__ = "0.1.0"

register_all()

__all__ = [
    "ACT_TOOL",
    "FORMATS",
    "INFO_KEYS",
    "TRUNCATION_REASONS",
    "ActionFailed",
    "ActionParser",
    "AgentGymError",
    "BrowserNotFoundError",
    "CommandError",
    "DataNotFoundError",
    "DenseReward",
    "EnvironmentCrashedError",
    "ExpertUnavailableError",
    "FormatPenalty",
    "GenerationError",
    "MissingDependencyError",
    "ParsedAction",
    "PolicyError",
    "RunLogError",
    "SparseReward",
    "SplitLeakError",
    "StateSnapshots",
    "StepPenalty",
    "SuiteError",
    "SupportsSnapshot",
    "TaskSplits",
    "TaskStart",
    "TextEnv",
    "TextSpace",
    "ToolCall",
    "ToolSpec",
    "Transition",
    "UnknownSplitError",
    "UnknownTaskError",
    "as_text_env",
    "list_environments",
    "make",
    "make_env",
    "register_all",
]
