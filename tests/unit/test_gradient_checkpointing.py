"""`model.gradient_checkpointing` changes memory, not numbers: the full model and the LoRA path,
through both log-prob paths (full logits and `trainer.logprob_chunk`).  The whole-node update is
compared in test_trainer.py; here the loss and every trainable gradient of one backward pass."""

from __future__ import annotations

import pytest
import torch

from node.batching import token_logprobs
from node.policy import load_policy


def _loss_and_grads(policy, chunk: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    vocab = policy.model.config.vocab_size
    ids = torch.randint(3, vocab, (3, 20), generator=gen)
    attn = torch.ones_like(ids)
    attn[2, 15:] = 0  # a right-padded row, as the trainer packs them
    weights = torch.randn(3, 19, generator=gen)
    logp, _ = token_logprobs(policy.model, ids, attn, 0.7, True, first=4, chunk=chunk)
    loss = (logp * weights * attn[:, 1:]).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("chunk", [0, 16], ids=["full-logits", "chunked"])
def test_checkpointing_keeps_loss_and_gradients(tiny_config, lora, chunk):
    extra = ("model.lora.enabled=true", "model.lora.r=4") if lora else ()
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same adapter initialization on both sides
        cfg = tiny_config(*extra, f"model.gradient_checkpointing={str(checkpointing).lower()}")
        policy = load_policy(cfg.model)
        modules = [m for m in policy.model.modules() if hasattr(m, "gradient_checkpointing")]
        assert modules and all(m.gradient_checkpointing == checkpointing for m in modules)
        if lora:  # B starts at 0, which makes A's gradient 0: move B so every adapter gets one
            with torch.no_grad():
                for n, p in policy.model.named_parameters():
                    if "lora_B" in n:
                        p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        results.append(_loss_and_grads(policy, chunk))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-5, rtol=1e-6)
    assert grads.keys() == grads_ckpt.keys() and grads
    assert all("lora_" in n for n in grads) == lora  # LoRA: only the adapters train
    assert any(g.abs().sum() > 0 for g in grads.values())
    for n in grads:
        torch.testing.assert_close(grads_ckpt[n], grads[n], atol=1e-6, rtol=1e-5)
