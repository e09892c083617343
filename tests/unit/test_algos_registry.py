"""Registries and config agree; presets parse; the config imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import yaml

from node.algos import api  # noqa: F401  (registers everything)
from node.algos.config import AdvantageName, AlgorithmConfig, LossName, ModifierName
from node.algos.registry import ADVANTAGES, LOSSES, MODIFIERS

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs" / "algorithms").glob("*.yaml"))
EXPECTED_PRESETS = {
    "grpo",
    "dr_grpo",
    "dapo",
    "gspo",
    "cispo",
    "rloo",
    "remax",
    "mc_grpo",
    "gdpo",
    "w_reinforce",
}


def test_config_literals_equal_registry_names():
    assert sorted(get_args(AdvantageName)) == ADVANTAGES.names()
    assert sorted(get_args(LossName)) == LOSSES.names()
    assert sorted(get_args(ModifierName)) == MODIFIERS.names()


def test_bad_name_lists_valid_ones():
    with pytest.raises(KeyError, match="valid: .*grpo.*rloo"):
        ADVANTAGES.get("grpoo")
    with pytest.raises(ValueError):
        AlgorithmConfig(advantage="grpoo")


def test_every_preset_exists_and_parses():
    assert {p.stem for p in PRESETS} == EXPECTED_PRESETS
    for path in PRESETS:
        data = yaml.safe_load(path.read_text())
        assert set(data) <= {"algorithm", "rollout", "trainer"}, path  # trainer: mini-batches (DAPO, GSPO)
        cfg = AlgorithmConfig(**data["algorithm"])
        assert cfg.advantage in ADVANTAGES and cfg.loss in LOSSES


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_merges_into_the_full_config(path):
    from node.config import load_config

    cfg = load_config([str(ROOT / "configs" / "tiny.yaml"), str(path)], [])
    assert cfg.algorithm == AlgorithmConfig(**yaml.safe_load(path.read_text())["algorithm"])


def test_config_module_imports_no_torch():
    code = "import sys, node.algos.config, node.algos; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
