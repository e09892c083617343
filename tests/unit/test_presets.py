"""Configs by name: `-c solo_cpu` finds the shipped preset from any directory, a file of that
path still wins, an unknown name lists the presets, and a wheel carries every file of configs/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from node import presets
from node.cli import main
from node.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(ROOT / "configs").with_suffix("").as_posix()
                 for p in (ROOT / "configs").rglob("*") if p.suffix in presets.SUFFIXES)  # fmt: skip


def test_every_file_in_configs_is_a_preset_read_from_the_same_file():
    found = {p.name: p for p in presets.list_presets()}
    assert sorted(found) == CONFIGS and {"solo_cpu", "tiny", "algorithms/dapo"} <= set(found)
    for preset in found.values():  # one source of truth: the package's folder is configs/ itself
        relative = preset.path.relative_to(presets.presets_dir())
        assert preset.path.resolve() == (ROOT / "configs" / relative).resolve()
    assert found["tiny"].summary.startswith("A tiny Llama")


def test_presets_resolve_by_name_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(["solo_cpu"]) == load_config([ROOT / "configs" / "solo_cpu.yaml"])
    # the README's spelling works outside the checkout too, and presets merge like files
    cfg = load_config(["configs/tiny.yaml", "algorithms/dapo.yaml"], ["trainer.steps=4"])
    assert cfg.model.name == "tiny" and cfg.algorithm.clip_high == 0.28 and cfg.trainer.steps == 4


def test_a_file_of_that_name_wins_over_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("trainer: {steps: 17}\n")
    assert load_config(["tiny"]).trainer.steps == 17


def test_an_unknown_name_lists_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found: solo_gpu .*presets: .*solo_cpu"):
        load_config(["solo_gpu"])


def test_config_presets_lists_names_and_summaries(capsys):
    assert main(["config", "presets"]) == 0
    out = capsys.readouterr().out
    assert "solo_cpu  " in out and "algorithms/dapo" in out and "A tiny Llama" in out


def test_a_wheel_ships_the_presets(tmp_path):
    """What a non-editable `pip install .` gets: the wheel holds node/configs/ (the symlink's files)."""
    src = tmp_path / "src"
    for name in ("node", "protocol", "swarm", "configs"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("swarmrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"node/configs/{n}.yaml" for n in CONFIGS} <= names
