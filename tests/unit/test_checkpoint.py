"""Checkpoints: round trip, bit-for-bit resume, corrupt and incompatible ones refused,
atomicity under kill -9."""

from __future__ import annotations

import json
import os
import shutil
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
    script = KILLER.format(
        root=str(ROOT), tiny=str(ROOT / "configs" / "tiny.yaml"), cache=model_cache, ckpt=str(ckpt)
    )
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
    cmd = [
        sys.executable,
        "-m",
        "node.cli",
        "run",
        "-c",
        str(ROOT / "configs" / "tiny.yaml"),
        f"model.cache_dir={model_cache}",
        f"logging.run_dir={run_dir}",
        "trainer.steps=500",
        "checkpoint.every=1000",
        "logging.progress=plain",
    ]
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


# -- a bare model: the checkpoint API on its own -----------------------------------------------
def _save_bare(ckpt: Path, step: int, keep: int = 5, components=None) -> Path:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return checkpoint.save(ckpt, step, step, model, opt, "x: 1\n", "bare", keep=keep, components=components)


def _bare() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def _same(a, b) -> bool:
    """Equal bit for bit, types included (a tuple is not a list, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        bits = [t.contiguous().view(-1).view(torch.uint8) for t in (a, b)]  # NaN == NaN here
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(*bits)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_component_state_round_trips_bit_for_bit(tmp_path):
    import random

    rng = random.Random(7)
    rng.random()
    version, mt, gauss = rng.getstate()
    components = {
        "sampler": {
            "rng": [version, list(mt), gauss],  # a random.Random state, tuple made a list
            "order": [[3, 1, 2], [], [0]],
            "epoch": 4,
            "cursor": 0.1 + 0.2,  # a float that is not round in binary
            "name": "gsm8k",
            "gen": torch.Generator().manual_seed(3).get_state(),
        },
        "admission": {
            "counts": {"accepted": 5, "refused": {"stale": 2}},
            "seen": torch.arange(6, dtype=torch.int64),
        },
        "weights": {"w": torch.randn(3, 5, dtype=torch.bfloat16), "nan": torch.tensor([float("nan")])},
    }
    path = _save_bare(tmp_path, 1, components=components)
    restored = checkpoint.load(path, *_bare())
    assert _same(restored.components, components)
    assert torch.isnan(restored.components["weights"]["nan"]).all()
    again = random.Random()
    sampler_rng = restored.components["sampler"]["rng"]
    again.setstate((sampler_rng[0], tuple(sampler_rng[1]), sampler_rng[2]))
    assert again.random() == rng.random()  # the restored state continues the same stream
    assert "components.pt" in json.loads((path / "MANIFEST.json").read_text())["files"]


def test_checkpoint_without_components_restores_none(tmp_path):
    path = _save_bare(tmp_path, 1)
    assert not (path / "components.pt").exists()  # the format older checkpoints have
    assert checkpoint.load(path, *_bare()).components == {}


def test_component_state_is_covered_by_the_manifest(tmp_path):
    path = _save_bare(tmp_path, 1, components={"sampler": {"cursor": 3}})
    blob = path / "components.pt"
    data = bytearray(blob.read_bytes())
    data[-30] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="components.pt: checksum mismatch"):
        checkpoint.load(path, *_bare())


def test_component_state_that_cannot_be_stored_safely_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"components\['sampler'\]\['rng'\] is a Random"):
        import random

        _save_bare(tmp_path, 1, components={"sampler": {"rng": random.Random(0)}})
    assert checkpoint.list_checkpoints(tmp_path) == []


# -- falling back past corrupt checkpoints -------------------------------------------------------
def _truncate_weights(path: Path) -> None:
    blob = path / "model.safetensors"
    blob.write_bytes(blob.read_bytes()[:100])


def _flip_optimizer_byte(path: Path) -> None:
    blob = path / "optimizer.pt"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    shutil.rmtree(path)
    path.mkdir()


CORRUPTIONS = {
    "truncated weights": (_truncate_weights, "model.safetensors: checksum mismatch"),
    "flipped byte in optimizer.pt": (_flip_optimizer_byte, "optimizer.pt: checksum mismatch"),
    "missing state.json": (lambda p: (p / "state.json").unlink(), "state.json: missing"),
    "garbage MANIFEST": (
        lambda p: (p / "MANIFEST.json").write_bytes(b"\xff\x00{garbage"),
        "unreadable manifest",
    ),
    "empty dir": (_empty, "no MANIFEST.json"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_latest_falls_back_to_the_previous_good_one(case, tmp_path, caplog):
    corrupt, reason = CORRUPTIONS[case]
    good = _save_bare(tmp_path, 1, components={"sampler": {"cursor": 1}})
    model, opt = _bare()
    checkpoint.load(good, model, None)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    bad = _save_bare(tmp_path, 2, components={"sampler": {"cursor": 2}})
    corrupt(bad)
    model, opt = _bare()
    with caplog.at_level("WARNING", logger="node.checkpoint"):
        restored = checkpoint.load_latest(tmp_path, model, opt, "bare")
    assert restored is not None and restored.step == 1 and restored.components == {"sampler": {"cursor": 1}}
    assert [(p.name, reason in why) for p, why in restored.skipped] == [("step_00000002", True)]
    assert "step_00000002 is corrupt" in caplog.text
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    # set aside, kept for inspection, and never counted again
    assert (tmp_path / "corrupt-step_00000002").is_dir() and not bad.exists()
    assert checkpoint.load_latest(tmp_path, *_bare()).skipped == []


def test_fallback_goes_newest_to_oldest_and_names_every_file_when_none_is_good(tmp_path):
    for step in (1, 2, 3):
        _save_bare(tmp_path, step)
    _flip_optimizer_byte(tmp_path / "step_00000003")
    _truncate_weights(tmp_path / "step_00000002")
    restored = checkpoint.load_latest(tmp_path, *_bare())
    assert restored.step == 1 and [p.name for p, _ in restored.skipped] == ["step_00000003", "step_00000002"]
    _flip_optimizer_byte(tmp_path / "step_00000001")
    with pytest.raises(CheckpointError, match="no good checkpoint") as err:
        checkpoint.load_latest(tmp_path, *_bare())
    assert "step_00000001/optimizer.pt: checksum mismatch" in str(err.value)
    assert (tmp_path / "step_00000001").is_dir()  # nothing set aside when nothing loaded


def test_an_incompatible_latest_is_an_error_not_a_fallback(tmp_path):
    _save_bare(tmp_path, 1)
    _save_bare(tmp_path, 2)
    with pytest.raises(checkpoint.IncompatibleCheckpoint, match="holds model 'bare'"):
        checkpoint.load_latest(tmp_path, *_bare(), "another")
    assert checkpoint.load_latest(tmp_path / "none", *_bare()) is None


def test_a_half_deleted_checkpoint_never_counts(tmp_path, monkeypatch):
    for step in (1, 2):
        _save_bare(tmp_path, step, keep=2)
    real_rmtree = shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # a kill -9 after the weights went, before the manifest
        if (Path(path) / "model.safetensors").is_file():
            (Path(path) / "model.safetensors").unlink()
            raise KeyboardInterrupt("killed")
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        _save_bare(tmp_path, 3, keep=2)  # deletes step 1
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert (tmp_path / "step_00000001").exists() is False
    _save_bare(tmp_path, 4, keep=2)  # the next save clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]
