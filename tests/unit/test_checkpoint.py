"""Checkpoints: round trip, bit-for-bit resume, corrupt and incompatible ones refused,
atomicity under kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from node import checkpoint
from node.checkpoint import CheckpointError
from node.node import Node
from swarm.testing import wait_for_sync as wait_for

ROOT = Path(__file__).resolve().parents[2]


def _weights(node: Node) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in node.policy.model.state_dict().items()}


def test_round_trip_restores_weights_optimizer_and_step(tiny_config):
    node = Node(tiny_config("trainer.lr=1e-2"))
    node.train_step()
    node.train_step()
    path = node.save()
    saved = _weights(node)
    opt_state = node.trainer.optimizer.state_dict()["state"]
    other = Node(tiny_config("trainer.lr=1e-2"))
    assert other.resume(path)
    assert other.step == 2 and other.trainer.version == 2
    for k, v in _weights(other).items():
        assert torch.equal(v, saved[k]), k
    for i, st in other.trainer.optimizer.state_dict()["state"].items():
        assert torch.equal(st["exp_avg"], opt_state[i]["exp_avg"])


def test_resume_continues_bit_for_bit(tiny_config, tmp_path):
    straight = Node(tiny_config("trainer.lr=1e-2", f"logging.run_dir={tmp_path / 'a'}"))
    straight.run(3)
    interrupted = Node(tiny_config("trainer.lr=1e-2", f"logging.run_dir={tmp_path / 'b'}"))
    interrupted.run(2)  # saves at the end
    resumed = Node(tiny_config("trainer.lr=1e-2", f"logging.run_dir={tmp_path / 'b'}"))
    assert resumed.resume() and resumed.step == 2
    # the next batch is the one the uninterrupted run drew, and so are the weights after it
    assert resumed.sampler.sample(2, 2) == straight.sampler.sample(2, 2)
    resumed.run(3)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_is_refused_without_touching_the_model(tiny_config):
    node = Node(tiny_config())
    path = node.save()
    blob = path / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    fresh = Node(tiny_config("model.tiny.init_seed=5"))
    before = _weights(fresh)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        fresh.resume(path)
    assert all(torch.equal(v, before[k]) for k, v in _weights(fresh).items())


def test_missing_manifest_and_incompatible_model_are_refused(tiny_config):
    node = Node(tiny_config())
    path = node.save()
    bigger = Node(tiny_config("model.tiny.hidden_size=256", "model.tiny.intermediate_size=512"))
    with pytest.raises(CheckpointError, match="incompatible"):
        bigger.resume(path)
    (path / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointError, match="no MANIFEST"):
        node.resume(path)


def test_half_written_checkpoint_is_ignored(tiny_config):
    node = Node(tiny_config())
    good = node.save()
    torn = good.parent / "step_00000099"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    assert checkpoint.latest(good.parent) == good


KILLER = r"""
import sys, torch
from pathlib import Path
sys.path.insert(0, {root!r})
from node.config import load_config
from node import checkpoint
from node.policy import load_policy
cfg = load_config([{tiny!r}], ["model.cache_dir={cache}"])
policy = load_policy(cfg.model)
opt = torch.optim.AdamW(policy.model.parameters())
step = 0
while True:
    step += 1
    with torch.no_grad():
        for p in policy.model.parameters():
            p.fill_(float(step))
    checkpoint.save(Path({ckpt!r}), step, step, policy.model, opt, "x: 1\n", "tiny", keep=2)
    print(step, flush=True)
"""


def test_kill_9_at_any_moment_leaves_a_loadable_checkpoint(tiny_config, model_cache, tmp_path):
    ckpt = tmp_path / "ckpts"
    script = KILLER.format(root=str(ROOT), tiny=str(ROOT / "configs" / "tiny.yaml"), cache=model_cache, ckpt=str(ckpt))
    for delay_lines in (2, 5):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            seen = 0
            while seen < delay_lines:
                line = proc.stdout.readline()
                assert line, f"checkpoint writer died early (exit {proc.wait()})"
                seen += 1
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # mid-write, most likely
            proc.wait()
        last = checkpoint.latest(ckpt)
        assert last is not None
        node = Node(tiny_config())
        restored = checkpoint.load(last, node.policy.model, None)
        value = float(next(node.policy.model.parameters()).flatten()[0])
        assert value == float(restored.step)  # the weights are those of the step it claims


def test_ctrl_c_saves_and_exits_cleanly(model_cache, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "node.cli", "run", "-c", str(ROOT / "configs" / "tiny.yaml"),
           f"model.cache_dir={model_cache}", f"logging.run_dir={run_dir}", "trainer.steps=500",
           "checkpoint.every=1000", "logging.progress=plain"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        assert wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2, 120)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    last = checkpoint.latest(run_dir / "checkpoints")
    assert last is not None and json.loads((last / "state.json").read_text())["step"] == steps[-1]
    assert "stopping after this step" in out
