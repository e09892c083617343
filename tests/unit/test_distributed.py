"""One node on two ranks (gloo, CPU, the tiny model) against one process on the same batch.

The claim (node/distributed.py): a rank's partial loss is its rows' share of the 1-rank loss
(denominators over the whole mini-batch), scaled by the world size because DDP/FSDP2 average, so
the update after one step equals the 1-rank update up to float summation order.  The batch here
is 7 rows in micro-batches of 3 and mini-batches of 4 over 2 epochs: 4 optimizer steps whose
mini-batches split 2+2 and 1+2 over the ranks, a padding pass on the rank with fewer rows, and a
proximal pass that is sharded and gathered.  Tolerance: 2e-5 absolute on every weight and AdamW
moment after the update (measured: 5.3e-6 for DDP and FSDP2; Adam magnifies the summation-order
noise of small gradients, and the 4 steps move weights by up to 4e-3), 1e-5 on the loss (measured
5e-8), 1e-4 on the gradient norm (measured 4e-6).  The same processes then check the
checkpoint both ways: the one rank 0 writes loads into one process with the same weights and AdamW
state, and a 1-rank checkpoint resumed on two ranks takes the 1-rank run's next update.  The CLI
test runs `swarmrl run --nproc 2` -> resume on 1 -> resume on 2 through torchrun.

On a host with 2 GPUs the same tests run on CUDA over NCCL (float32 weights, one GPU per rank;
the CLI test at the default bf16); elsewhere, as in CI, on CPU over gloo.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.fsdp import FSDPModule

from node import checkpoint
from node.collect import collect
from node.config import load_config
from node.node import Node
from node.records import Request, SamplingParams
from swarm.testing import wait_for_sync

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ("trainer.micro_batch_size=3", "trainer.mini_batch_size=4", "trainer.ppo_epochs=2", "model.threads=1")
TOL = 2e-5  # weights and AdamW state (see the module docstring)
CUDA = torch.cuda.device_count() >= 2  # NCCL, a GPU per rank; else gloo on CPU
GREEDY = SamplingParams(max_new_tokens=2, greedy=True)
ON = ("model.device=cuda", "model.dtype=float32") if CUDA else ("model.device=cpu",)


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


def _state(node: Node) -> dict[str, torch.Tensor]:
    """Whole weights; under FSDP2 a collective that every rank calls (after `release`)."""
    state = {k: v.detach().clone() for k, v in node.policy.model.state_dict().items()}
    if any(hasattr(v, "full_tensor") for v in state.values()):  # FSDP2 shards: whole tensors (collective)
        state = {k: v.full_tensor() for k, v in state.items()}
    return {k: v.cpu() for k, v in state.items()}  # ranks' GPUs differ: compare on the host


def _rank(r: int, world: int, port: int, cfg, batch_file: str, out_file: str) -> None:
    """Rank 0: one update from the initial weights, save, resume the 1-rank checkpoint (step 5),
    one more update.  Rank 1: serves.  Each writes its weights; rank 0 its metrics too."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(r)
    import torch.distributed as dist

    from node import distributed

    distributed.init("cuda" if CUDA else "cpu")
    try:
        node = Node(cfg if r == 0 else distributed.worker_config(cfg))
        out: dict = {"sharded": isinstance(node.trainer.dp.module, FSDPModule)}
        seen = _weights_seen_by(node.engine.inner) if node.engine.own_copy else None
        if r > 0:
            distributed.serve(node)
        else:
            rows, adv = torch.load(batch_file, weights_only=False)
            out["first"] = node.trainer.update(rows, adv)
            whole, _ = distributed.whole(node.policy.model, node.trainer.optimizer)  # FSDP2: the ranks join
            out["after_first"] = {k: v.detach().cpu().clone() for k, v in whole.state_dict().items()}
            out["saved"] = str(node.save())  # step 0, written by rank 0 alone
            assert node.resume() and node.step == 5  # the 1-rank checkpoint put in our run dir
            distributed.share_checkpoint(node)
            out["second"] = node.trainer.update(rows, adv)
            node.engine.sync_weights(node.trainer.version)
            if seen is not None:  # FSDP2: the engine's copy, whole while it generates (a request a rank)
                node.engine.generate([Request(c.prompt, c.prompt_ids) for c in rows[:2]], 1, GREEDY)
            distributed.release()
        out["final"] = _state(node)
        if seen is not None:
            out["engine"] = seen[-1]
            out["engine_after"] = sum(p.numel() for p in node.engine.inner.model.parameters())
        torch.save(out, f"{out_file}.{r}")
    finally:
        dist.destroy_process_group()


def _weights_seen_by(engine) -> list[dict]:
    """The weights `engine.generate` reads, recorded (on the host) at each of its calls."""
    seen: list[dict] = []
    generate = engine.generate

    def recording(*args):
        seen.append({k: v.detach().cpu().clone() for k, v in engine.model.state_dict().items()})
        return generate(*args)

    engine.generate = recording
    return seen


def _close(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=tol, rtol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_equal_one_rank_and_resume_across(tiny_config, tmp_path, parallel):
    """One update on 2 ranks = on 1 rank (weights, loss, grad norm); the 2-rank checkpoint loads
    into 1 rank with the same weights and AdamW state; a 1-rank checkpoint resumed on 2 ranks
    gives the second update the 1-rank run takes."""
    one = Node(tiny_config(*TRAIN, *ON, f"logging.run_dir={tmp_path / 'one'}"))
    init = {k: v.detach().cpu().clone() for k, v in one.policy.model.state_dict().items()}
    rows, adv = _batch(one)
    torch.save((rows, adv), tmp_path / "batch.pt")
    m1 = one.trainer.update(rows, adv)
    assert m1["optimizer_steps"] == 4.0
    after_first = _state(one)
    adam_first = copy.deepcopy(one.trainer.optimizer.state_dict()["state"])
    one.step = 5
    shutil.copytree(one.save(), tmp_path / "two" / "checkpoints" / "step_00000005")
    m1b = one.trainer.update(rows, adv)

    cfg = tiny_config(*TRAIN, *ON, f"trainer.parallel={parallel}", f"logging.run_dir={tmp_path / 'two'}")
    mp.spawn(_rank, args=(2, free_port(), cfg, str(tmp_path / "batch.pt"), str(tmp_path / "out")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"out.{r}", weights_only=False) for r in (0, 1))
    assert r0["sharded"] == r1["sharded"] == (parallel == "fsdp")
    assert ("engine" in r0) == ("engine" in r1) == (parallel == "fsdp")
    assert any((after_first[k] - init[k]).abs().max() > 100 * TOL for k in init), "no update: nothing checked"
    _close(r0["after_first"], after_first, TOL)
    assert (
        abs(r0["first"]["loss"] - m1["loss"]) < 1e-5
        and abs(r0["first"]["grad_norm"] - m1["grad_norm"]) < 1e-4
    )
    assert r0["first"]["optimizer_steps"] == 4.0
    # 2 ranks -> 1: the checkpoint holds whole weights and the whole AdamW state
    fresh = Node(tiny_config(*TRAIN, *ON, f"logging.run_dir={tmp_path / 'fresh'}"))
    checkpoint.load(Path(r0["saved"]), fresh.policy.model, fresh.trainer.optimizer)
    _close(_state(fresh), after_first, TOL)
    adam = fresh.trainer.optimizer.state_dict()["state"]
    assert adam.keys() == adam_first.keys()
    for i in adam:
        _close(adam[i], adam_first[i], TOL)
    # 1 rank -> 2: the resumed ranks take the 1-rank run's second update, and agree
    _close(r0["final"], _state(one), TOL)
    _close(r1["final"], r0["final"], 1e-7)
    for r in (r0, r1):  # the weights each rank generates from after the sync: the trained ones,
        if "engine" in r:  # held only while it generates
            _close(r["engine"], r0["final"], 0.0)
            assert r["engine_after"] == 0
    assert abs(r0["second"]["loss"] - m1b["loss"]) < 1e-5


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
    assert json.loads((run / "status.json").read_text())["ranks"] == 2
    shown = subprocess.run([sys.executable, "-m", "node.cli", "status", str(run)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120).stdout  # fmt: skip
    assert "ranks 2" in shown, shown
    out = _swarmrl("--resume", "--steps", "2", cache, run_dir=run)
    assert "resumed at step 1" in out.stdout
    assert json.loads((run / "status.json").read_text())["ranks"] == 1
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


def test_what_cannot_run_on_several_ranks_is_refused_before_any_rank_starts(tmp_path, capsys, monkeypatch):
    """vLLM on GPUs (its in-process executor would put every rank's engine on GPU 0), more ranks
    than GPUs, mps: refused with the reason, by `--gpus N` before torchrun starts anything (and
    by each rank under a hand-run torchrun).  CPU ranks (gloo) run anything, vLLM included
    (tests/vllm/test_vllm_ranks.py)."""
    from node import launch
    from node.cli import main

    spawned: list = []
    monkeypatch.setattr(launch, "relaunch", lambda *a: spawned.append(a) or 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    tiny = str(ROOT / "configs" / "tiny.yaml")
    args = ["run", "-c", tiny, f"logging.run_dir={tmp_path}"]
    assert main([*args, "--gpus", "2", "rollout.backend=vllm", "model.device=cuda"]) == 2 and spawned == []
    assert "rollout.backend=vllm on several GPUs is not supported" in capsys.readouterr().err
    assert main([*args, "--gpus", "4", "model.device=cuda"]) == 2 and spawned == []
    assert "4 ranks need 4 GPUs, one each; this machine shows 2" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config([ROOT / "configs" / "tiny.yaml"], ["rollout.backend=vllm", "model.device=cuda"])
    assert launch.run_ranks(cfg, lambda: 0) == 2 and "GPU 0" in capsys.readouterr().err
    assert main([*args, "--gpus", "2", "model.device=cuda"]) == 0 and len(spawned) == 1  # transformers: fine
    assert main([*args, "--gpus", "4", "rollout.backend=vllm", "model.device=cpu"]) == 0 and len(spawned) == 2
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "not mps" in launch.unsupported(load_config([ROOT / "configs" / "tiny.yaml"], []), 2)


@pytest.mark.slow
def test_ctrl_c_on_a_multi_rank_node_finishes_the_step_and_saves(tmp_path, model_cache):
    """A terminal's Ctrl-C reaches `swarmrl run --nproc 2` alone (torchrun and the ranks run in
    sessions of their own); it hands a SIGTERM to rank 0, which finishes its step, saves and
    releases rank 1: exit 0, a checkpoint of the last step, and no process of the run left."""
    import psutil

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "node.cli", "run", "--nproc", "2", "-c", str(ROOT / "configs" / "tiny.yaml"),
           f"logging.run_dir={run}", "logging.progress=plain", "checkpoint.every=1000", "model.threads=1",
           f"model.cache_dir={model_cache}", "trainer.steps=100000"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    tree: list[psutil.Process] = []

    def steps() -> int:
        return (run / "metrics.jsonl").read_text().count("\n") if (run / "metrics.jsonl").is_file() else 0

    try:
        assert wait_for_sync(lambda: steps() >= 2 or proc.poll() is not None, 600), proc.poll()
        tree = psutil.Process(proc.pid).children(recursive=True)
        ranks = [
            c for c in tree if "node.cli" in (cl := " ".join(c.cmdline())) and "distributed.run" not in cl
        ]
        assert len(ranks) == 2, [c.cmdline() for c in tree]
        os.kill(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground process
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert "rank 0 finishes its step and saves" in out
        final = json.loads((run / "status.json").read_text())["step"]
        assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == [f"step_{final:08d}"]
        assert final == steps()  # the step under way when Ctrl-C came was finished and logged
        alive = lambda: [c.pid for c in tree if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]  # noqa: E731
        assert wait_for_sync(lambda: not alive(), 60), alive()
    finally:  # the ranks run in sessions of their own: end what this test saw, by PID
        for c in [*tree, psutil.Process(proc.pid)] if proc.poll() is None else tree:
            with contextlib.suppress(psutil.Error):
                c.kill()


@pytest.mark.parametrize("own_weights", [False, True])
def test_fsdp_shards_the_policy_whatever_the_engine(tiny_config, tmp_path, monkeypatch, own_weights):
    """`trainer.parallel=fsdp` shards the policy (no DDP) both for the transformers engine, which
    gets a whole copy held only while it generates, and for an engine with weights of its own
    (vLLM), which gets none.  One gloo rank in this process."""
    import torch.distributed as dist

    from node import distributed

    monkeypatch.setattr(distributed, "_current", None)  # attach's process-wide state, put back after
    node = Node(tiny_config("trainer.parallel=fsdp", "model.device=cpu"))
    engine = SimpleNamespace() if own_weights else node.engine  # vLLM-like: no `model` to share
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        sharded = distributed.attach(engine, node.trainer, node.cfg)
        assert isinstance(node.trainer.dp.module, FSDPModule)
        assert sharded.own_copy == (not own_weights)
        if not own_weights:  # a copy apart from the trained module, empty until a generate call
            assert node.engine.model is not node.policy.model
            assert sum(p.numel() for p in node.engine.model.parameters()) == 0
    finally:
        distributed.release()
        dist.destroy_process_group()
