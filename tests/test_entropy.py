"""The chunked log-prob + entropy path against the naive full-softmax computation, values and gradients."""

from __future__ import annotations

import pytest
import torch

from trl_plugins.entropy import logps_and_entropy, naive_logps_and_entropy


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


@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
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
    lp, ent = logps_and_entropy(logits, ids, temperature=1.3, chunk_size=5, backend="torch")
    (grad,) = torch.autograd.grad((lp * g_lp).sum() + (ent * g_h).sum(), [logits])
    lp0, ent0 = naive_logps_and_entropy(logits, ids, temperature=1.3)
    (grad0,) = torch.autograd.grad((lp0 * g_lp).sum() + (ent0 * g_h).sum(), [logits])
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad0, rtol=0, atol=1e-12)


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
