"""Every preset in configs/algorithms/ trains the tiny model for two steps with finite metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs" / "algorithms").glob("*.yaml"))

# The node does not yet decode a greedy baseline per prompt (api.requirements().baseline_rewards);
# strict, so this fails loudly once it does and the marker must go.
NOT_WIRED = {"remax": "node does not pass AdvantageInputs.baseline_rewards yet"}


def params(paths):
    for p in paths:
        marks = (
            [pytest.mark.xfail(raises=ValueError, strict=True, reason=NOT_WIRED[p.stem])]
            if p.stem in NOT_WIRED
            else []
        )
        yield pytest.param(p, id=p.stem, marks=marks)


@pytest.mark.parametrize("preset", list(params(PRESETS)))
def test_preset_trains_two_steps(tiny_config, preset):
    from node.node import Node

    node = Node(tiny_config(files=(str(preset),)))
    for _ in range(2):
        metrics = node.train_step()
        assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]), metrics
    assert node.trainer.version == 2
