"""Environment families, one module each.

Family modules import their simulator (textworld, scienceworld, ...) lazily, inside
functions, so that ``import agentgym_envs`` stays light.
"""
