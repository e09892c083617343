"""The config reference is generated from the models: every key is in it, types and defaults read
right, and docs/config.md is the current output (regenerate with `make config-docs`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from node import config_keys
from node.cli import main
from node.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _leaves(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        if sub := config_keys._model(field.annotation):
            out |= _leaves(sub, f"{prefix}{name}.")
        elif item := config_keys._list_of_model(field.annotation):
            out |= {f"{prefix}{name}"} | _leaves(item, f"{prefix}{name}[].")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_every_key_of_every_section_is_listed_once():
    keys = [k.path for s in config_keys.sections() for k in s.keys]
    assert len(keys) == len(set(keys)) and set(keys) == _leaves(Config)
    for key in ("trainer.lr", "algorithm.loss", "replay.select", "replay.replay_fraction",
                "logging.samples_every", "tasks.sources[].size", "swarm.bootstrap"):  # fmt: skip
        assert key in keys


def test_types_bounds_and_defaults_read_as_written():
    keys = {k.path: k for s in config_keys.sections() for k in s.keys}
    assert (keys["trainer.lr"].type, keys["trainer.lr"].default) == ("float, > 0, < 1", "1e-05")
    assert keys["trainer.lr"].help == "AdamW learning rate"
    assert (
        keys["logging.progress"].type == "auto | rich | plain"
        and keys["logging.progress"].default == '"auto"'
    )
    assert (
        keys["trainer.mini_batch_size"].type == "int or null, >= 1"
        and keys["trainer.mini_batch_size"].default == "null"
    )
    assert keys["trainer.betas"].type == "[float, float]" and keys["trainer.betas"].default == "[0.9, 0.99]"
    assert keys["tasks.rewards"].default == '{"correctness": 1.0, "format": 0.2}'
    assert keys["logging.trackers"].type == "list[tensorboard | wandb | mlflow | trackio]"


def test_docs_config_md_is_up_to_date():
    doc = ROOT / config_keys.DOC_PATH
    assert doc.is_file() and doc.read_text() == config_keys.markdown(), (
        "docs/config.md is stale: run `make config-docs` (python -m node.config_keys > docs/config.md)"
    )


def test_config_keys_command(capsys):
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    assert (
        "[trainer]" in out
        and "trainer.lr  (float, > 0, < 1; default 1e-05)" in out
        and "replay.select" in out
    )
    assert main(["config", "keys", "--markdown"]) == 0
    assert capsys.readouterr().out == config_keys.markdown()
