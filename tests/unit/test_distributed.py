"""One node on two ranks (gloo, CPU, the tiny model) against one process on the same batch.

The claim (node/distributed.py): a rank's partial loss is its rows' share of the 1-rank loss
(denominators over the whole mini-batch), scaled by the world size because DDP/FSDP2 average, so
the update after one step equals the 1-rank update up to float summation order.  The batch here
is 7 rows in micro-batches of 3 and mini-batches of 4 over 2 epochs: 4 optimizer steps whose
mini-batches split 2+2 and 1+2 over the ranks, a padding pass on the rank with fewer rows, and a
proximal pass that is sharded and gathered.  Tolerance: 1e-5 absolute on every weight after the
update (the step moves weights by ~1e-3) and on the loss.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from node import checkpoint
from node.collect import collect
from node.config import load_config
from node.node import Node

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ("trainer.micro_batch_size=3", "trainer.mini_batch_size=4", "trainer.ppo_epochs=2", "model.threads=1")
TOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(node: Node) -> tuple[list, torch.Tensor]:
    """7 completions of the tiny model and fixed advantages that move the weights."""
    torch.manual_seed(5)
    groups = collect(
        node.engine, node.renderer, node.replay, node.tasks, node.cfg, node.req, 0, node.sampling
    ).groups
    rows = [c for g in groups for c in g.completions][:7]
    return rows, torch.linspace(-1.5, 1.5, len(rows))


def _rank(r: int, world: int, port: int, cfg, batch_file: str, out_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(world))
    import torch.distributed as dist

    from node import distributed

    dist.init_process_group("gloo")
    try:
        node = Node(cfg if r == 0 else distributed.worker_config(cfg))
        if r > 0:
            distributed.serve(node)
        else:
            rows, adv = torch.load(batch_file, weights_only=False)
            metrics = node.trainer.update(rows, adv)
            distributed.release()
        state = {k: v.detach().clone() for k, v in node.policy.model.state_dict().items()}
        if hasattr(next(iter(state.values())), "full_tensor"):  # FSDP2: whole tensors (collective)
            state = {k: v.full_tensor() for k, v in state.items()}
        torch.save((state, metrics if r == 0 else None), f"{out_file}.{r}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_update_equals_one_rank(tiny_config, tmp_path, parallel):
    cfg = tiny_config(*TRAIN, f"trainer.parallel={parallel}")
    one = Node(cfg)
    init = {k: v.clone() for k, v in one.policy.model.state_dict().items()}
    rows, adv = _batch(one)
    torch.save((rows, adv), tmp_path / "batch.pt")
    m1 = one.trainer.update(rows, adv)
    assert m1["optimizer_steps"] == 4.0
    mp.spawn(_rank, args=(2, free_port(), cfg, str(tmp_path / "batch.pt"), str(tmp_path / "out")), nprocs=2)
    (w0, m2), (w1, _) = (torch.load(tmp_path / f"out.{r}", weights_only=False) for r in (0, 1))
    w = one.policy.model.state_dict()
    assert any((w[k] - init[k]).abs().max() > 100 * TOL for k in w), "no update: the test checks nothing"
    for k in w:
        torch.testing.assert_close(w0[k], w[k], atol=TOL, rtol=0, msg=k)
        torch.testing.assert_close(w1[k], w0[k], atol=1e-7, rtol=0, msg=k)  # the ranks agree
    assert abs(m2["loss"] - m1["loss"]) < TOL and abs(m2["grad_norm"] - m1["grad_norm"]) < 1e-4
    assert m2["optimizer_steps"] == 4.0


def _swarmrl(*args: str, run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "node.cli", "run", "-c", str(ROOT / "configs" / "tiny.yaml"), *args,
           f"logging.run_dir={run_dir}", "logging.progress=plain", "checkpoint.every=1", "model.threads=1"]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


@pytest.mark.slow
def test_resume_across_rank_counts(tmp_path, model_cache):
    """2 ranks -> checkpoint -> resume on 1 -> resume on 2: each continues at the saved step, and
    the checkpoint is one set of whole tensors written by rank 0."""
    run, cache = tmp_path / "run", f"model.cache_dir={model_cache}"
    _swarmrl("--nproc", "2", "--steps", "1", cache, run_dir=run)
    assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == ["step_00000001"]
    out = _swarmrl("--resume", "--steps", "2", cache, run_dir=run)
    assert "resumed at step 1" in out.stdout
    out = _swarmrl("--nproc", "2", "--resume", "--steps", "3", cache, run_dir=run)
    assert "resumed at step 2" in out.stdout
    assert out.stdout.count("resumed at step") == 1  # rank 0 alone prints, logs and checkpoints
    assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == [
        "step_00000002",
        "step_00000003",
    ]
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(steps) == 3
    node = Node(load_config([ROOT / "configs" / "tiny.yaml"], [cache, f"logging.run_dir={run}"]))
    assert node.resume() and node.step == 3 and node.trainer.version == 3
