"""Config loading: files, merges, overrides and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs").glob("*.toml"))
PRESETS = sorted((ROOT / "configs" / "algorithms").glob("*.yaml"))


def test_defaults_are_the_embedded_solo_config():
    cfg = load_config()
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.swarm.mode == "solo"
    # `swarmrl run` without --config and `make run` (configs/solo_cpu.yaml) train the same job
    assert cfg == load_config([ROOT / "configs" / "solo_cpu.yaml"])


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_parses(path):
    assert isinstance(load_config([path]), Config)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_algorithm_preset_merges_onto_tiny(path):
    cfg = load_config([ROOT / "configs" / "tiny.yaml", path])
    assert cfg.model.name == "tiny"


def test_later_files_and_overrides_win(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("trainer: {lr: 0.001, steps: 7}\n")
    b = tmp_path / "b.toml"
    b.write_text("[trainer]\nlr = 0.002\n")
    cfg = load_config([a, b], ["rollout.group_size=3", "trainer.betas=[0.8, 0.9]"])
    assert cfg.trainer.lr == 0.002 and cfg.trainer.steps == 7
    assert cfg.rollout.group_size == 3 and cfg.trainer.betas == (0.8, 0.9)


def test_unknown_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["trainer.lrr=1e-6"])
    msg = str(e.value)
    assert "trainer.lrr" in msg and "did you mean 'lr'" in msg and "micro_batch_size" in msg


def test_bad_value_names_the_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["rollout.backend=tensorrt"])
    assert "rollout.backend" in str(e.value) and "'transformers'" in str(e.value)
    with pytest.raises(ConfigError, match="trainer.lr"):
        load_config(overrides=["trainer.lr=-1"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config([bad])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["no-equals-sign"])


def test_overrides_index_into_lists(tmp_path):
    cfg = load_config([ROOT / "configs" / "tiny.yaml"], ["tasks.sources.0.size=17", "tasks.sources.0.options.max_digits=1"])
    assert cfg.tasks.sources[0].size == 17 and cfg.tasks.sources[0].options["max_digits"] == 1
    assert cfg.tasks.sources[0].options["min_terms"] == 2  # siblings kept
    with pytest.raises(ConfigError, match="has no item '3'"):
        load_config([ROOT / "configs" / "tiny.yaml"], ["tasks.sources.3.size=1"])
