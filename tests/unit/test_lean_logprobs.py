"""Chunked log-probs and entropies (`trainer.logprob_chunk`) equal the full-logits path.

The tiny Llama has a plain LM head, so `token_logprobs(..., chunk=k)` runs the decoder once and
the head + float32 log-softmax over slices of positions.  The slices are cut so that they do not
divide the sequence (a short last slice is where an off-by-one would hide); values and the
gradient of every parameter must match the full path to 1e-5.  The toy's `ToyLM` (logits only)
takes the full path whatever `chunk` says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from node.batching import head_parts, token_logprobs
from node.policy import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    policy = load_policy(tiny_config().model)
    policy.model.float()
    return policy.model


def _batch(model, rows=3, width=23):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (rows, width), generator=gen)
    attn = torch.ones_like(ids)
    attn[1, 17:] = 0  # a right-padded row, as `pack_tokens` makes them
    return ids, attn


def test_the_tiny_llama_takes_the_chunked_path(model):
    assert head_parts(model) is not None


@pytest.mark.parametrize("chunk", [3 * 5, 3 * 7 + 1, 1])  # 5, 7 positions a slice: neither divides 23 - 1 - 4
def test_chunked_equals_full_values(model, chunk):
    ids, attn = _batch(model)
    model.eval()
    with torch.no_grad():
        full = token_logprobs(model, ids, attn, 0.7, True, first=4)
        part = token_logprobs(model, ids, attn, 0.7, True, first=4, chunk=chunk)
    assert full[0].shape == part[0].shape == (3, 22)
    assert torch.all(part[0][:, :4] == 0) and torch.all(part[1][:, :4] == 0)
    torch.testing.assert_close(part[0], full[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(part[1], full[1], atol=1e-5, rtol=0)


def _grads(model, ids, attn, chunk, entropy_grad):
    model.zero_grad(set_to_none=True)
    logp, ent = token_logprobs(model, ids, attn, 0.9, True, first=2, entropy_grad=entropy_grad, chunk=chunk)
    weights = torch.linspace(-1, 1, logp.numel()).view_as(logp)  # every position counts differently
    loss = (logp * weights).sum() + (0.3 * ent.sum() if entropy_grad else 0.0)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_chunked_gradients_equal_full(model, entropy_grad):
    ids, attn = _batch(model)
    model.train()
    full = _grads(model, ids, attn, None, entropy_grad)
    part = _grads(model, ids, attn, 3 * 6, entropy_grad)
    assert full.keys() == part.keys() and len(full) == sum(1 for p in model.parameters() if p.requires_grad)
    for name in full:
        torch.testing.assert_close(part[name], full[name], atol=1e-5, rtol=0, msg=name)


def test_entropy_without_grad_has_no_graph(model):
    ids, attn = _batch(model)
    logp, ent = token_logprobs(model, ids, attn, 1.0, True, first=2, chunk=10)
    assert logp.requires_grad and not ent.requires_grad


def test_the_toy_lm_falls_back_to_full_logits():
    from benchmarks.toy.adapter import ToyLM
    from benchmarks.toy.seqmodel import GPTConfig, TinyGPT

    torch.manual_seed(0)
    toy = ToyLM(TinyGPT(GPTConfig()))
    assert head_parts(toy) is None
    ids = torch.randint(6, 16, (2, 11))
    attn = torch.ones_like(ids)
    full = token_logprobs(toy, ids, attn, 1.0, True, first=3)
    part = token_logprobs(toy, ids, attn, 1.0, True, first=3, chunk=4)
    assert torch.equal(full[0], part[0]) and torch.equal(full[1], part[1])
