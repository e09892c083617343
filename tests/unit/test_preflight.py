"""Preflight: model, device and task-file mistakes are reported at once, before anything loads."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from node import preflight
from node.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture
def no_loading(monkeypatch):
    """Building the node (loading the model) fails the test: the error must come before."""
    import node.node

    def refuse(*args, **kwargs):
        raise AssertionError("the node was built (the model loaded) before the setting was checked")

    monkeypatch.setattr(node.node, "Node", refuse)


@pytest.fixture
def offline_machine(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE, an empty HF cache, and a hub that cannot be reached."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(preflight, "hub_reachable", lambda timeout=3.0: False)


def test_unknown_model_offline_fails_fast_naming_model_and_setting(
    tmp_path, capsys, no_loading, offline_machine
):
    t0 = time.monotonic()
    rc = main(["run", "-c", TINY, "model.name=someorg/not-a-model", f"logging.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 5
    assert (
        "model.name=someorg/not-a-model" in err and "cannot be reached" in err and "HF_HUB_OFFLINE=1" in err
    )


def test_unknown_model_with_hf_hub_offline_names_the_setting(
    monkeypatch, tmp_path, capsys, no_loading, offline_machine
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["run", "-c", TINY, "model.name=someorg/not-a-model", f"logging.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "someorg/not-a-model" in err and "HF_HUB_OFFLINE=1 is set" in err


def test_policy_loader_does_not_retry_an_unreachable_hub(offline_machine):
    """The loader itself (used by eval, export, ...) fails at once too, not after a minute of retries."""
    from node.config import ModelConfig
    from node.policy import PolicyLoadError, resolve_source

    t0 = time.monotonic()
    with pytest.raises(PolicyLoadError, match="model.name=someorg/not-a-model.*cannot be reached"):
        resolve_source(ModelConfig(name="someorg/not-a-model"))
    assert time.monotonic() - t0 < 5


def test_known_names_and_model_folders_pass(tmp_path, offline_machine):
    assert preflight.model_problem("tiny") is None
    assert preflight.model_problem("smollm2-135m-instruct") is None
    (tmp_path / "m").mkdir()
    assert "no config.json" in preflight.model_problem(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert preflight.model_problem(str(tmp_path / "m")) is None
    assert "no such folder" in preflight.model_problem(str(tmp_path / "nope"))


def test_missing_task_file_is_reported_before_loading(tmp_path, capsys, no_loading):
    rc = main(["run", "-c", TINY, "tasks.sources.0.type=jsonl", f"tasks.sources.0.path={tmp_path}/none.jsonl",
               f"logging.run_dir={tmp_path / 'run'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "tasks.sources.0.path" in err and "none.jsonl" in err


@pytest.mark.skipif(sys.platform == "darwin", reason="mps exists on macOS")
def test_mps_off_macos_is_a_config_error_naming_the_setting(capsys):
    assert main(["config", "show", "-c", TINY, "model.device=mps"]) == 2
    err = capsys.readouterr().err
    assert "model.device" in err and "macOS" in err and "Traceback" not in err


@pytest.mark.parametrize("load, expected", [(0.2, 4), (1.4, 3), (3.6, 1), (9.0, 1)])
def test_thread_default_leaves_busy_cores_alone(monkeypatch, load, expected):
    import psutil

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4)
    monkeypatch.setattr(preflight.os, "getloadavg", lambda: (load, load, load))
    threads, why = preflight.auto_threads()
    assert threads == expected and f"load average {load:.1f}" in why
