"""The chunked log-prob + entropy path against the naive full-softmax computation, values and gradients."""

from __future__ import annotations

import typing
import warnings

import pytest
import torch

from trl_plugins.entropy import Backend, logps_and_entropy, naive_logps_and_entropy


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path / "cache"))


def _problem(dtype=torch.float64, batch=3, length=7, dim=16, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, dim, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(vocab, dim, generator=g, dtype=dtype) * 0.5).requires_grad_()
    bias = torch.randn(vocab, generator=g, dtype=dtype).requires_grad_()
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    g_lp = torch.randn(batch, length, generator=g, dtype=dtype)
    g_h = torch.randn(batch, length, generator=g, dtype=dtype)
    return hidden, weight, bias, ids, g_lp, g_h


def _assert_logits_path_matches_reference(logits, ids, g_lp, g_h, temperature: float, chunk_size: int) -> None:
    """Values and the logits gradient (both outputs, distinct upstream gradients) equal the naive reference's."""
    lp, ent = logps_and_entropy(logits, ids, temperature=temperature, chunk_size=chunk_size, backend="torch")
    (grad,) = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [logits])
    lp0, ent0 = naive_logps_and_entropy(logits, ids, temperature=temperature)
    (grad0,) = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [logits])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.5])
def test_hidden_path_matches_naive_values_and_gradients(chunk, temperature):
    hidden, weight, bias, ids, g_lp, g_h = _problem()
    lp, ent = logps_and_entropy(hidden, ids, weight, bias, temperature=temperature, chunk_size=chunk, backend="torch")
    grads = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [hidden, weight, bias])
    lp0, ent0 = naive_logps_and_entropy(hidden, ids, weight, bias, temperature=temperature)
    grads0 = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [hidden, weight, bias])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-12)
    for a, b in zip(grads, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_logits_path_matches_naive_values_and_gradients():
    hidden, weight, bias, ids, g_lp, g_h = _problem()
    logits = (hidden @ weight.T + bias).detach().requires_grad_()
    _assert_logits_path_matches_reference(logits, ids, g_lp, g_h, temperature=1.3, chunk_size=5)


def test_gradcheck_hidden_path():
    hidden, weight, bias, ids, _, _ = _problem(batch=2, length=3, dim=4, vocab=6)
    torch.autograd.gradcheck(
        lambda h, w, b: logps_and_entropy(h, ids, w, b, chunk_size=2, backend="torch"), (hidden, weight, bias)
    )


def test_only_one_output_used_gives_that_outputs_gradient():
    hidden, weight, bias, ids, _, _ = _problem()
    lp, _ = logps_and_entropy(hidden, ids, weight, chunk_size=4, backend="torch")
    (g,) = torch.autograd.grad(lp.sum(), [hidden])
    lp0, _ = naive_logps_and_entropy(hidden, ids, weight)
    (g0,) = torch.autograd.grad(lp0.sum(), [hidden])
    torch.testing.assert_close(g, g0)
    _, ent = logps_and_entropy(hidden, ids, weight, chunk_size=4, backend="torch")
    (g,) = torch.autograd.grad(ent.sum(), [hidden])
    _, ent0 = naive_logps_and_entropy(hidden, ids, weight)
    (g0,) = torch.autograd.grad(ent0.sum(), [hidden])
    torch.testing.assert_close(g, g0)


def test_mask_skips_rows_and_keeps_gradients_of_the_rest():
    hidden, weight, bias, ids, g_lp, g_h = _problem()
    mask = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) > 0.4
    lp, ent = logps_and_entropy(hidden, ids, weight, bias, mask=mask, chunk_size=3, backend="torch")
    assert torch.all(lp[~mask] == 0) and torch.all(ent[~mask] == 0)
    (g,) = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [hidden])
    lp0, ent0 = naive_logps_and_entropy(hidden, ids, weight, bias)
    m = mask.to(lp0.dtype)
    (g0,) = torch.autograd.grad((lp0 * g_lp * m).sum() + (ent0 * g_h * m).sum(), [hidden])
    torch.testing.assert_close(lp[mask], lp0[mask])
    torch.testing.assert_close(g, g0)
    assert torch.all(g[~mask] == 0)


def test_bf16_inputs_do_softmax_math_in_float32():
    hidden, weight, _, ids, _, _ = _problem(dtype=torch.float32)
    logits = (hidden @ weight.T).detach().to(torch.bfloat16).requires_grad_()
    lp, ent = logps_and_entropy(logits, ids, chunk_size=4, backend="torch")
    assert lp.dtype == ent.dtype == torch.float32
    lp0, ent0 = naive_logps_and_entropy(logits.float(), ids)  # float32 math on the same bf16 values
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-5)
    (g,) = torch.autograd.grad(lp.sum() + ent.sum(), [logits])
    assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()


def _largest_saved(fn) -> int:
    """Numel of the largest tensor autograd keeps for the backward pass of ``fn()``'s graph."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(sizes)


def test_nothing_of_size_tokens_times_vocab_is_kept_for_backward():
    batch, length, dim, vocab = 2, 64, 8, 512
    hidden, weight, _, ids, _, _ = _problem(dtype=torch.float32, batch=batch, length=length, dim=dim, vocab=vocab)
    ours = _largest_saved(lambda: logps_and_entropy(hidden, ids, weight, chunk_size=16, backend="torch"))
    naive = _largest_saved(lambda: naive_logps_and_entropy(hidden, ids, weight))
    assert naive >= batch * length * vocab  # the naive path keeps full [tokens, vocab] tensors
    assert ours <= max(vocab * dim, batch * length * dim)  # ours keeps only its inputs (hidden, weight)


def test_bad_arguments_raise_clear_errors():
    hidden, weight, _, ids, _, _ = _problem()
    with pytest.raises(ValueError, match="temperature"):
        logps_and_entropy(hidden, ids, weight, temperature=0.0)
    with pytest.raises(ValueError, match="leading shape"):
        logps_and_entropy(hidden, ids[:, :3], weight)
    with pytest.raises(ValueError, match="hidden size"):
        logps_and_entropy(hidden, ids, weight[:, :3])
    with pytest.raises(ValueError, match="backend"):
        logps_and_entropy(hidden, ids, weight, backend="triton")  # type: ignore[arg-type]


def _flat_problem(tokens=13, dim=5, vocab=7, seed=3):
    """Flat ``[tokens, D]`` inputs with more tokens than hidden units and than vocabulary entries."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, dim, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(vocab, dim, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(vocab, generator=g, dtype=torch.float64).requires_grad_()
    ids = torch.randint(0, vocab, (tokens,), generator=g)
    g_lp = torch.randn(tokens, generator=g, dtype=torch.float64)
    g_h = torch.randn(tokens, generator=g, dtype=torch.float64)
    return hidden, weight, bias, ids, g_lp, g_h


def test_flat_inputs_with_more_tokens_than_vocab_match_naive():
    # 1-D token ids ([N, D] hidden states, [N, V] logits) as a packed batch gives them; N > V and N > D.
    hidden, weight, bias, ids, g_lp, g_h = _flat_problem()
    lp, ent = logps_and_entropy(hidden, ids, weight, bias, temperature=0.8, chunk_size=3, backend="torch")
    assert lp.shape == ent.shape == ids.shape
    grads = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [hidden, weight, bias])
    lp0, ent0 = naive_logps_and_entropy(hidden, ids, weight, bias, temperature=0.8)
    assert lp0.shape == ent0.shape == ids.shape
    grads0 = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [hidden, weight, bias])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-12)
    for a, b in zip(grads, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)

    logits = torch.nn.functional.linear(hidden, weight, bias).detach().requires_grad_()
    _assert_logits_path_matches_reference(logits, ids, g_lp, g_h, temperature=0.8, chunk_size=4)
    # The reference itself: p = softmax(z / T) written out, H = -sum p log p.
    logp_all = logits.detach() / 0.8 - torch.logsumexp(logits.detach() / 0.8, dim=1, keepdim=True)
    torch.testing.assert_close(lp0, logp_all[torch.arange(len(ids)), ids], rtol=0, atol=1e-12)
    torch.testing.assert_close(ent0, -(logp_all.exp() * logp_all).sum(1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("used", ["logp", "entropy"])
def test_logits_path_with_one_output_used_gives_that_outputs_gradient(used):
    hidden, weight, bias, ids, g_lp, g_h = _problem()
    logits = (hidden @ weight.T + bias).detach().requires_grad_()
    lp, ent = logps_and_entropy(logits, ids, temperature=0.6, chunk_size=4, backend="torch")
    lp0, ent0 = naive_logps_and_entropy(logits, ids, temperature=0.6)
    out, out0, g = (lp, lp0, g_lp) if used == "logp" else (ent, ent0, g_h)
    (grad,) = torch.autograd.grad((out * g).sum(), [logits])
    (grad0,) = torch.autograd.grad((out0 * g).sum(), [logits])
    torch.testing.assert_close(grad, grad0, rtol=0, atol=1e-12)


class _StopGradient(torch.autograd.Function):
    """Identity forward, no gradient backward (like a straight-through estimator's blocked branch)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return None


def test_no_gradient_reaching_the_outputs_leaves_the_inputs_without_gradient():
    # Both outputs feed only ops that send no gradient back: like the naive path, the LM head, its bias and the
    # logits get no .grad at all (not a tensor of zeros computed chunk by chunk).
    hidden, weight, bias, ids, _, _ = _problem()
    logits = (hidden @ weight.T + bias).detach().requires_grad_()
    for fn in (logps_and_entropy, naive_logps_and_entropy):
        kwargs = {"chunk_size": 4, "backend": "torch"} if fn is logps_and_entropy else {}
        lp, ent = fn(hidden, ids, weight, bias, **kwargs)
        (_StopGradient.apply(lp).sum() + _StopGradient.apply(ent).sum() + (hidden * 2.0).sum()).backward()
        assert weight.grad is None and bias.grad is None, fn.__name__
        torch.testing.assert_close(hidden.grad, torch.full_like(hidden, 2.0))
        hidden.grad = None
        lp, ent = fn(logits, ids, **kwargs)
        (_StopGradient.apply(lp).sum() + _StopGradient.apply(ent).sum()).backward()
        assert logits.grad is None, fn.__name__


def test_half_precision_inputs_give_float32_values_and_gradients_in_the_input_dtype():
    hidden, weight, bias, ids, g_lp, g_h = _problem(dtype=torch.float32)
    hidden16, weight16, bias16 = (t.detach().to(torch.bfloat16).requires_grad_() for t in (hidden, weight, bias))
    lp, ent = logps_and_entropy(hidden16, ids, weight16, bias16, temperature=0.7, chunk_size=4, backend="torch")
    assert lp.dtype == ent.dtype == torch.float32
    grads = torch.autograd.grad((lp * g_lp.float()).sum() + (ent * g_h.float()).sum(), [hidden16, weight16, bias16])
    assert [g.dtype for g in grads] == [torch.bfloat16] * 3
    # Reference: float32 math on the same bf16 values (the module rounds the LM-head product to bf16 only).
    h32, w32, b32 = (t.detach().float().requires_grad_() for t in (hidden16, weight16, bias16))
    lp0, ent0 = naive_logps_and_entropy(h32, ids, w32, b32, temperature=0.7)
    grads0 = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [h32, w32, b32])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=0.1)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=0.1)
    for a, b in zip(grads, grads0, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=0.05, atol=0.05)

    logits16 = (hidden @ weight.T + bias).detach().to(torch.float16).requires_grad_()
    lp, ent = logps_and_entropy(logits16, ids, temperature=1.3, chunk_size=5, backend="torch")
    (grad,) = torch.autograd.grad((lp * g_lp.float()).sum() + (ent * g_h.float()).sum(), [logits16])
    logits32 = logits16.detach().float().requires_grad_()
    lp0, ent0 = naive_logps_and_entropy(logits32, ids, temperature=1.3)
    (grad0,) = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [logits32])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-5)
    assert grad.dtype == torch.float16
    torch.testing.assert_close(grad.float(), grad0, rtol=1e-3, atol=1e-4)


def test_default_arguments_match_naive_at_temperature_one():
    hidden, weight, _, ids, g_lp, g_h = _problem()
    lp, ent = logps_and_entropy(hidden, ids, weight)
    (g,) = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [weight])
    lp0, ent0 = naive_logps_and_entropy(hidden, ids, weight)
    (g0,) = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [weight])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-12)
    torch.testing.assert_close(g, g0, rtol=0, atol=1e-11)


def test_bad_arguments_raise_at_once_without_a_compile_fallback_warning():
    hidden, weight, bias, ids, _, _ = _problem()
    with pytest.raises(ValueError, match="chunk_size"):
        logps_and_entropy(hidden, ids, weight, chunk_size=0)
    logits = hidden @ weight.T
    for backend in typing.get_args(Backend):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a "torch.compile failed" warning here would mislead the user
            with pytest.raises(ValueError, match="bias given without weight"):
                logps_and_entropy(logits, ids, bias=bias, backend=backend)


def _compiled_regions(fn) -> set[str]:
    """Names of the torch.compile'd regions that ran inside ``fn()`` (empty when everything ran eagerly)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith("Torch-Compiled Region")}


def test_every_backend_matches_naive_and_only_compile_compiles_on_cpu():
    hidden, weight, bias, ids, g_lp, g_h = _problem(dtype=torch.float32)
    lp0, ent0 = naive_logps_and_entropy(hidden, ids, weight, bias, temperature=0.9)
    grads0 = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [hidden, weight, bias])
    for backend in typing.get_args(Backend):
        out = {}

        def run(backend=backend, out=out):
            # 21 tokens in chunks of 8, 8 and 5: the remainder chunk has another length.
            lp, ent = logps_and_entropy(hidden, ids, weight, bias, temperature=0.9, chunk_size=8, backend=backend)
            out["values"] = (lp, ent)
            out["grads"] = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [hidden, weight, bias])

        regions = _compiled_regions(run)
        torch.testing.assert_close(out["values"], (lp0, ent0), rtol=1e-5, atol=1e-5)
        for a, b in zip(out["grads"], grads0, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        if backend == "compile":
            # Forward and backward math are compiled, once each: one dynamic-shape graph serves every chunk length.
            assert len(regions) == 2 and all(r.endswith("/0") for r in regions), regions
        else:  # "torch", and "auto" off CUDA: eager, no compile cost
            assert not regions, (backend, regions)


def test_compiled_backend_matches_eager():
    # The compiled per-chunk math is what runs on CUDA by default; on CPU inductor emits C++ (slow first call).
    hidden, weight, bias, ids, g_lp, g_h = _problem(dtype=torch.float32)
    lp, ent = logps_and_entropy(hidden, ids, weight, bias, chunk_size=8, backend="compile")
    grads = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [hidden, weight, bias])
    lp0, ent0 = logps_and_entropy(hidden, ids, weight, bias, chunk_size=8, backend="torch")
    grads0 = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [hidden, weight, bias])
    torch.testing.assert_close(lp, lp0)
    torch.testing.assert_close(ent, ent0)
    for a, b in zip(grads, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
