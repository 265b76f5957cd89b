"""Pieces of ``use_vllm=True, vllm_mode="colocate"`` for the multi-turn trainer.

* :func:`build_vllm_backend` starts an in-process :class:`~agentgym_envs.generation.vllm.VLLMBackend` on the
  policy's folder with the trainer's sampling settings (TRL's ``vllm_*`` config fields mapped over);
* :func:`sampling_logps` lays vLLM's per-token log-probs of an episode's actions along its completion
  (environment tokens get 0 and are masked anyway);
* :func:`importance_sampling_ratio` is TRL's correction for the gap between the sampler's and the trainer's
  log-probabilities (``vllm_importance_sampling_correction`` with its mode and clip bounds), the same
  arithmetic as ``trl.GRPOTrainer`` so that TRL's settings mean the same here.

Example:
    >>> import torch
    >>> old = torch.tensor([[-1.0, -2.0, 0.0]]); sampled = torch.tensor([[-1.5, -2.0, 0.0]])
    >>> importance_sampling_ratio(old, sampled, torch.tensor([[1, 1, 0]]), mode="token_truncate", clip_max=3.0)
    tensor([[1.6487, 1.0000, 1.0000]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from agentgym_envs.generation.base import SamplingSettings
from trl_plugins.distributed import rank_seed

IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")

SERVER_NEEDS_CUDA = (
    "vllm_mode='server' needs CUDA (TRL's `trl vllm-serve` receives weights over NCCL); "
    "on CPU use vllm_mode='colocate' (the engine runs in the trainer's process)"
)


def importance_sampling_ratio(
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_min: float | None = None,
    clip_max: float | None = 3.0,
) -> torch.Tensor:
    """``exp(old - sampling)`` per token (``token_*``) or per sequence (``sequence_*``, shape ``(B, 1)``).

    ``*_truncate`` clamps the ratio into ``[clip_min, clip_max]``; ``*_mask`` sets ratios outside it to 0
    (the sample then does not count). Masked-out positions and NaN sampling log-probs contribute a ratio of 1.
    Multiply the per-token loss by the result (TRL: ``per_token_loss * inputs["importance_sampling_ratio"]``).

    Example:
        >>> old = torch.tensor([[-1.0, -1.0]]); sampled = torch.tensor([[-2.0, -2.0]])
        >>> importance_sampling_ratio(old, sampled, torch.ones(1, 2), mode="sequence_mask", clip_max=3.0)
        tensor([[0.]])
    """
    if mode not in IS_MODES:
        raise ValueError(f"vllm_importance_sampling_mode must be one of {IS_MODES}, got {mode!r}")
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = clip_min if clip_min is not None else -math.inf
    high = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def sampling_logps(
    turn_logprobs: Sequence[Sequence[float] | None], turn_env_lengths: Sequence[int], what: str = "log-probs"
) -> list[float]:
    """An episode's sampling log-probs along its completion: each turn's action log-probs, then 0 per env token.

    Any other per-token record of the sampler (``what``, e.g. its entropies) is laid out alike.  A turn without
    them (``None``: the backend could not give them) is a ``ValueError``: what relies on them would silently be
    skipped for it.

    Example:
        >>> sampling_logps([[-0.1, -0.2], [-0.3]], [2, 0])
        [-0.1, -0.2, 0.0, 0.0, -0.3]
    """
    out: list[float] = []
    for values, env_len in zip(turn_logprobs, turn_env_lengths, strict=True):
        if values is None:
            raise ValueError(f"a turn has no sampling {what}; generate with a backend that returns them")
        out += [float(x) for x in values] + [0.0] * env_len
    return out


def sampling_settings(args: Any, stop_ids: Sequence[int], seed: int | None) -> SamplingSettings:
    """A trainer config's sampling (temperature, top-p, top-k: TRL's 0 and -1 mean off) as :class:`SamplingSettings`.

    Example:
        >>> from types import SimpleNamespace
        >>> sampling_settings(SimpleNamespace(temperature=0.8, top_p=1.0, top_k=0), [2], seed=None).top_k is None
        True
    """
    top_k = getattr(args, "top_k", None)
    return SamplingSettings(
        temperature=float(args.temperature),
        top_p=None if getattr(args, "top_p", 1.0) in (None, 1.0) else float(args.top_p),
        top_k=None if top_k in (None, 0, -1) else int(top_k),
        stop_ids=tuple(int(i) for i in stop_ids),
        seed=seed,
    )


def build_vllm_backend(
    model: Any, args: Any, stop_ids: Sequence[int], backend_class: type | None = None, **engine_kwargs: Any
) -> Any:
    """An in-process :class:`~agentgym_envs.generation.vllm.VLLMBackend` serving ``model`` as configured by ``args``.

    ``model.name_or_path`` must be a local folder (vLLM loads the architecture and tokenizer from it; the trainer
    then pushes the current weights with ``backend.load_weights(policy_weights(model))``). ``args`` is a TRL
    ``GRPOConfig``: ``temperature``, ``top_p``, ``top_k``, ``seed``, ``vllm_gpu_memory_utilization``,
    ``vllm_max_model_length``, ``vllm_enforce_eager``, ``vllm_enable_sleep_mode`` (refused), ``vllm_mode``
    (``"colocate"`` only on CPU).
    ``backend_class`` (a ``VLLMBackend`` subclass) and ``engine_kwargs`` (passed on to ``vllm.LLM``, e.g.
    ``logits_processors``) are for a trainer subclass's :meth:`make_generation_backend`.

    Example:
        >>> backend = build_vllm_backend(model, trainer.args, trainer.eos_token_ids)   # doctest: +SKIP
    """
    from agentgym_envs.generation.vllm import VLLMBackend, import_vllm

    import_vllm()  # the install hint first, before any other check
    from vllm.platforms import current_platform

    mode = getattr(args, "vllm_mode", "colocate")
    if mode == "server" and current_platform.is_cpu():
        raise ValueError(SERVER_NEEDS_CUDA)
    if mode != "colocate":
        raise NotImplementedError(
            f"vllm_mode={mode!r}: build_vllm_backend starts the in-process engine of vllm_mode='colocate' "
            "(server mode: build_vllm_server_backend)"
        )
    if getattr(args, "vllm_enable_sleep_mode", False):
        raise NotImplementedError("vllm_enable_sleep_mode is not supported with multi-turn rollouts")
    path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not path:
        raise ValueError("use_vllm=True needs a model loaded from a local folder (model.name_or_path is empty)")
    # One engine per process: each samples with its own seed (a group split across processes must not get the
    # same replies in every process), reproducibly (trl_plugins.distributed.rank_seed).
    seed = getattr(args, "seed", None)
    seed = None if seed is None else rank_seed(seed, _process_index())
    settings = sampling_settings(args, stop_ids, seed=seed)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return (backend_class or VLLMBackend)(
        path,
        settings,
        dtype=dtype,
        gpu_memory_utilization=float(getattr(args, "vllm_gpu_memory_utilization", 0.3)),
        max_model_len=getattr(args, "vllm_max_model_length", None),
        seed=int(seed or 0),
        **{"enforce_eager": bool(getattr(args, "vllm_enforce_eager", True)), **engine_kwargs},
    )


def _process_index() -> int:
    """This process's rank in a multi-process run (0 without ``torch.distributed``)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class VLLMServerBackend:
    """A generation backend on ``trl vllm-serve`` (``vllm_mode="server"``): token-id prompts over HTTP, weights over NCCL.

    Every process sends its own episodes' contexts as token ids to the server's ``/v1/completions`` (TRL's
    :class:`trl.generation.vllm_client.VLLMClient`) with the settings' stop ids, seed and ``logprobs=0``; the sampled
    ids and their log-probs come back verbatim (unseeded: one request body serves the whole batch, and a shared seed
    would give a group's identical contexts the same reply). Only the main process joins the weight-transfer group
    (:meth:`load_weights_from`); the server must run with ``--logprobs-mode processed_logprobs`` for TRL's
    importance-sampling correction and ``--enable-prefix-caching`` (its default) for multi-turn prefix reuse.
    Generation was checked on CPU against a plain ``vllm.entrypoints.openai.api_server`` (token-exact, log-probs
    within 1e-6 of transformers); weight transfer needs CUDA and has not been run here (see ``docs/vllm.md``).

    Example:
        >>> backend = build_vllm_server_backend(trainer.args, trainer.chat_format.stop_ids,
        ...                                     trainer.accelerator)   # doctest: +SKIP
    """

    def __init__(self, client: Any, settings: Any, is_main_process: bool = True) -> None:
        self.client = client
        self.settings = settings
        self.is_main_process = is_main_process
        self._metadata: list[tuple[str, str, list[int]]] | None = None

    def generate(self, requests: Sequence[Any], max_new_tokens: int) -> list[Any]:
        """One reply per request: the sampled ids, their log-probs, ``"stop"`` or ``"length"``."""
        from agentgym_envs.generation.base import GenerationOutput

        if not requests:
            return []
        s = self.settings
        # No seed: the client sends one request body for the whole batch, so a seed would be shared by every prompt
        # and a group's identical contexts would all get the same reply.
        extra: dict[str, Any] = {"stop_token_ids": list(s.stop_ids), "ignore_eos": True}
        result = self.client.generate(
            prompts=[[int(i) for i in r.context_ids] for r in requests],
            n=1,
            temperature=s.temperature if s.do_sample else 0.0,
            top_p=s.top_p if (s.do_sample and s.top_p is not None) else 1.0,
            top_k=s.top_k if (s.do_sample and s.top_k is not None) else 0,
            max_tokens=max_new_tokens,
            logprobs=0,
            generation_kwargs=extra,
        )
        outputs = []
        logprobs = result.get("logprobs")
        stops = set(s.stop_ids)
        for k, ids in enumerate(result["completion_ids"]):
            ids = [int(i) for i in ids]
            # Position-major, sampled token first (logprobs=0); a log-prob the server could not give is NaN,
            # which the importance-sampling ratio treats as "no correction" (as TRL).
            lps = (
                [math.nan if pos[0] is None else float(pos[0]) for pos in logprobs[k]] if logprobs is not None else None
            )
            finish = "stop" if ids and ids[-1] in stops else "length"
            outputs.append(GenerationOutput(ids, lps, finish))
        return outputs

    def release(self, keys: Any) -> None:
        """Nothing to do: the server's prefix cache evicts finished episodes' blocks."""

    def load_weights(self, named_tensors: Any) -> None:
        """Push weights (materialised first: the server must know every tensor before the first is broadcast)."""
        items = [(name, tensor.detach().clone()) for name, tensor in named_tensors]
        self.load_weights_from(lambda: iter(items))

    def load_weights_from(self, weights: Any) -> None:
        """Push the weights ``weights()`` yields (called twice on the first push: names and shapes, then tensors).

        Every process must call it (reading the weights may be a collective); only the main process sends.
        """
        if self._metadata is None:
            self._metadata = [
                (name, str(t.dtype).removeprefix("torch."), list(t.shape)) for name, t in weights()
            ]
        if self.is_main_process:
            self.client.update_named_params(self._metadata, weights())
            self.client.reset_prefix_cache()
        else:
            for _ in weights():  # take part in the gather collectives
                pass

    def close(self) -> None:
        """Leave the weight-transfer group (the server keeps running)."""
        if self.is_main_process and getattr(self.client, "communicator", None) is not None:
            self.client.close_communicator()


def build_vllm_server_backend(args: Any, stop_ids: Sequence[int], accelerator: Any) -> VLLMServerBackend:
    """A :class:`VLLMServerBackend` on the ``trl vllm-serve`` named by ``args`` (``vllm_server_base_url`` or host/port).

    On a machine without CUDA it raises ``ValueError`` naming ``vllm_mode='colocate'``.

    Example:
        >>> build_vllm_server_backend(args, stop_ids, accelerator)   # doctest: +SKIP
    """
    from agentgym_envs.generation.vllm import import_vllm

    import_vllm()
    if not torch.cuda.is_available():
        raise ValueError(SERVER_NEEDS_CUDA)
    from trl.generation.vllm_client import VLLMClient

    if args.vllm_server_base_url is not None:
        client = VLLMClient(base_url=args.vllm_server_base_url, group_port=args.vllm_group_port,
                            connection_timeout=args.vllm_server_timeout)
    else:
        client = VLLMClient(host=args.vllm_server_host, server_port=args.vllm_server_port,
                            group_port=args.vllm_group_port, connection_timeout=args.vllm_server_timeout)
    if accelerator.is_main_process:
        client.init_communicator(device=torch.cuda.current_device())
        if args.vllm_importance_sampling_correction:
            mode = client.get_server_info().get("model_config", {}).get("logprobs_mode")
            if mode != "processed_logprobs":
                raise ValueError(
                    f"the vLLM server runs with --logprobs-mode {mode}; the importance-sampling correction needs "
                    "processed_logprobs (restart it so, or set vllm_importance_sampling_correction=False)"
                )
    # One request body serves the whole batch: a shared seed would give every copy of a prompt the same reply.
    settings = sampling_settings(args, stop_ids, seed=None)
    return VLLMServerBackend(client, settings, is_main_process=accelerator.is_main_process)
