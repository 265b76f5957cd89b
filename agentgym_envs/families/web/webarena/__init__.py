"""WebArena: its task configs and evaluators, on embedded WebArena-format sites or on sites you host.

Description
-----------
One WebArena task per episode (``agentgym/WebArena-v0``), read from WebArena's own task-config format:
the embedded suite (default), an installed ``webarena`` package, a JSON file or a folder of
``<id>.json`` files.  Site placeholders (``__SHOPPING__``, ``__REDDIT__``, ...) are resolved from
``site_urls=`` or the ``WA_*`` environment variables, as BrowserGym does; ``storage_state`` logins are
loaded; the browser may reach loopback and exactly the task's site origins (other requests are blocked
and counted).  By default the sites are embedded and served on loopback: the shop as ``shopping``, a
Magento-style ``shopping_admin`` and a Postmill-style ``reddit``, each with an SQLite database restored
from a snapshot at every reset.

============================  ====================================================================
module                        what it holds
============================  ====================================================================
:mod:`.env`                   :class:`~.env.WebArenaEnv` (``agentgym/WebArena-v0``): task configs,
                              site placeholders, logins, per-task network policy, WebArena's actions
:mod:`.evaluators`            ``string_match``, ``url_match``, ``program_html`` (WebArena's rules)
:mod:`.sites`                 the embedded ``shopping``, ``shopping_admin`` and ``reddit`` sites
:mod:`.suite`                 the embedded suite of 128 WebArena-format tasks with scripted solutions
============================  ====================================================================

Tasks and splits
----------------
A task is a config's ``task_id``.  The embedded suite has 128 tasks from 26 templates (information
seeking, navigation, state changes, multi-site): 76 train, 26 valid, 26 test.  Configs from WebArena
itself all belong to ``test``.

Actions
-------
WebArena's action set in every action format: ``click``, ``hover``, ``type``, ``type_enter`` (type,
then Enter: WebArena's ``type ... [1]``), ``press``, ``scroll``, ``new_tab``, ``tab_focus``,
``close_tab``, ``goto``, ``go_back``, ``go_forward`` and ``stop`` with the answer.

Observation
-----------
The web family's accessibility-tree listing of the current page (element ids to act on), with the
intent at reset.

Rewards
-------
1 when every evaluator of the task passes at ``stop`` (or at the step limit, graded as a stop with an
empty answer, as WebArena does), else 0; ``info["evaluation"]`` holds each check's result and
``info["eval_unavailable"]`` the checks that could not run (fuzzy_match without a judge endpoint, REST
helpers), which never pass.

Expert
------
The embedded tasks carry a scripted plan; the expert plays it (from the start URL again if the agent
left it).  Configs from WebArena have no expert.

Termination
-----------
Terminated at ``stop``; truncated at the step limit (30 by default), or with
``truncation_reason="site_unavailable"`` when a site the task needs does not answer.

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
