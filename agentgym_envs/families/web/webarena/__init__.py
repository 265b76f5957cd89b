"""WebArena: its task configs and evaluators, on embedded WebArena-format sites or on sites you host.

============================  ====================================================================
module                        what it holds
============================  ====================================================================
:mod:`.env`                   :class:`~.env.WebArenaEnv` (``agentgym/WebArena-v0``): task configs,
                              site placeholders, logins, per-task network policy, WebArena's actions
:mod:`.evaluators`            ``string_match``, ``url_match``, ``program_html`` (WebArena's rules)
:mod:`.sites`                 the embedded ``shopping``, ``shopping_admin`` and ``reddit`` sites
:mod:`.suite`                 the embedded suite of 128 WebArena-format tasks with scripted solutions
============================  ====================================================================

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/WebArena-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                               # doctest: +SKIP
"""

from __future__ import annotations

from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "webarena",
    extra="web",
    requires=("playwright",),
    description="WebArena task configs and evaluators, on embedded WebArena-format sites or hosted WebArena sites.",
    worker="process",  # a browser and three site servers: a step costs far more than a trip through a pipe
)


def registrations() -> list[Registration]:
    return [
        Registration("WebArena", FAMILY, "agentgym_envs.families.web.webarena.env:WebArenaEnv", {},
                     "WebArena tasks (string/url/program_html evaluators); embedded shop, admin and forum sites"),
    ]
