"""Shared fixtures.  Unit tests use the tiny model (built from config, cached once per session
in a temp dir); nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def tiny_config(model_cache, tmp_path):
    """`make_config(*overrides)` -> the tiny config with a private run dir."""
    from node.config import load_config

    def make(*overrides: str, files: tuple[str, ...] = ()):
        paths = [ROOT / "configs" / "tiny.yaml", *files]
        base = [f"model.cache_dir={model_cache}", f"logging.run_dir={tmp_path / 'run'}"]
        return load_config(paths, base + list(overrides))

    return make
