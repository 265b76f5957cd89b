"""TRL's warnings that say nothing about an agent training run, silenced; the one that matters, said once.

TRL checks the installed vLLM version every time one of its generation modules is imported, so every
``agentgym train`` printed "TRL currently supports vLLM versions from ..." five times, with or without
``use_vllm``.  :func:`silence_trl_import_warnings` (called when ``trl_plugins`` is imported) ignores exactly
that warning when TRL's own modules raise it; :func:`warn_if_vllm_untested` says it once, when a run
generates with vLLM.  Every other warning, TRL's included, is left as it is.

Example:
    >>> import warnings
    >>> silence_trl_import_warnings()
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.warn_explicit("TRL currently supports vLLM versions from 0.22.0 to 0.31.0.", UserWarning,
    ...                            "import_utils.py", 1, module="trl.generation")
    >>> caught
    []
"""

from __future__ import annotations

import warnings

__all__ = ["TRL_VLLM_VERSION_WARNING", "silence_trl_import_warnings", "warn_if_vllm_untested"]

#: The start of TRL's vLLM version warning (``trl.import_utils.is_vllm_available``).
TRL_VLLM_VERSION_WARNING = "TRL currently supports vLLM versions"

_vllm_warned = False


def silence_trl_import_warnings() -> None:
    """Ignore TRL's vLLM version warning when TRL's own modules raise it (at import, whether or not vLLM is used)."""
    # module= matches the module the warning is attributed to: TRL's callers of is_vllm_available, not ours.
    warnings.filterwarnings("ignore", message=TRL_VLLM_VERSION_WARNING, category=UserWarning, module=r"trl(\.|$)")


def warn_if_vllm_untested() -> None:
    """Say once per process that the installed vLLM is outside the versions TRL supports (nothing if it is inside)."""
    global _vllm_warned
    if _vllm_warned:
        return
    from trl.import_utils import is_vllm_available

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        is_vllm_available()
    for warning in caught:
        if str(warning.message).startswith(TRL_VLLM_VERSION_WARNING):
            _vllm_warned = True
            warnings.warn(f"generation with vLLM: {warning.message}", UserWarning, stacklevel=3)
            return
