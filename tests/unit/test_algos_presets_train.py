"""Every preset in configs/algorithms/ trains the tiny model for two steps with finite metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs" / "algorithms").glob("*.yaml"))

@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_trains_two_steps(tiny_config, preset):
    from node.node import Node

    node = Node(tiny_config(files=(str(preset),)))
    for _ in range(2):
        metrics = node.train_step()
        assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]), metrics
    assert node.trainer.version == 2
    if preset.stem == "mc_grpo":  # G+1 sampled, the median pivot of each group dropped
        assert metrics["rows_dropped"] == node.cfg.rollout.prompts_per_step
