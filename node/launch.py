"""Starting one node on several ranks and ending it: `swarmrl run --gpus N` re-launches itself under
torchrun (`relaunch`); under torchrun every rank runs `run_ranks`, which joins the process group,
lets rank 0 run the node while the others serve it (node/distributed.py), and tears the group down.
Configurations that cannot run on several ranks are refused before anything starts
(`unsupported`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.distributed as dist

from node.distributed import init, is_main, release, serve, worker_config
from node.status import STATUS_FILE


def relaunch(args: Any, nproc: int, run_dir: Path) -> int:
    """`swarmrl run --gpus N ...` -> `python -m torch.distributed.run --nproc-per-node N -m
    node.cli run ...` (the same arguments, without --gpus); returns its exit status.

    Stopping: torchrun runs in a session of its own (and starts each rank in one of its own), so a
    terminal's Ctrl-C reaches this process alone, which hands it on as one process would take it:
    SIGTERM to rank 0 (its PID from `run_dir`/status.json), which finishes the step, saves a
    checkpoint and releases the other ranks.  Before rank 0 has written its status, or on a second
    Ctrl-C, SIGTERM goes to torchrun, which ends every rank (the last periodic checkpoint stands).
    SIGTERM to this process (`docker stop`, `lab down`) is handled the same way."""
    argv = ["run", *[a for c in args.config for a in ("--config", c)]]
    argv += ["--resume"] * bool(args.resume) + ["--eval"] * bool(args.eval)
    argv += ["--steps", str(args.steps)] if args.steps else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "node.cli", *argv, *args.overrides]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True)
    asked = 0

    def stop(signum: int, frame: Any) -> None:
        nonlocal asked
        asked += 1
        rank0 = _rank0(run_dir, proc.pid) if asked == 1 else None
        target = rank0 or proc.pid
        print(f"[node] stopping: {'rank 0 finishes its step and saves' if rank0 else 'ending every rank'}"
              + ("; Ctrl-C again ends every rank" if rank0 else ""), file=sys.stderr, flush=True)  # fmt: skip
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()  # a handled signal does not interrupt the wait (PEP 475)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _rank0(run_dir: Path, launcher: int) -> int | None:
    """Rank 0's PID, from the status file it writes, if it is one of `launcher`'s processes (a
    status file of an earlier run names a process that is gone, or another one)."""
    try:
        pid = int(json.loads((run_dir / STATUS_FILE).read_text())["pid"])
        children = {c.pid for c in psutil.Process(launcher).children(recursive=True)}
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return pid if pid in children else None


def unsupported(cfg, nproc: int) -> str | None:
    """Why `cfg` cannot run as one node on `nproc` ranks of this host, or None."""
    device = cfg.model.device
    if not (device == "cuda" or (device == "auto" and torch.cuda.is_available())):
        if device == "mps" or (device == "auto" and torch.backends.mps.is_available()):
            return (
                "several ranks need CUDA GPUs (NCCL) or CPU processes (gloo), not mps: pass model.device=cpu"
            )
        return None  # ranks are CPU processes (gloo): any number runs
    gpus = torch.cuda.device_count()
    if nproc > gpus:
        return (f"{nproc} ranks need {nproc} GPUs, one each; this machine shows {gpus} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")  # fmt: skip
    if cfg.rollout.backend == "vllm":
        # vLLM's in-process executor takes its GPU index from the device name ("cuda" -> 0), not
        # from LOCAL_RANK: every rank's engine would land on GPU 0 (read in vLLM 0.32's
        # uniproc_executor.py; no vLLM was available on a multi-GPU host to try it)
        return ("rollout.backend=vllm on several GPUs is not supported yet (vLLM's in-process engine "
                "would put every rank's copy on GPU 0); use rollout.backend=transformers, or one GPU")  # fmt: skip
    return None


def _vllm_owns_teardown() -> bool:
    """Whether an in-process vLLM built its groups on ours: it destroys them at exit, the default
    group included, and fails ("Invalid process group specified") if we destroyed them first."""
    state = sys.modules.get("vllm.distributed.parallel_state")
    return state is not None and getattr(state, "_WORLD", None) is not None


def run_ranks(cfg, lead: Callable[[], int]) -> int:
    """Under torchrun: join the group; rank 0 runs `lead` (the node), the others serve it."""
    problem = unsupported(cfg, int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))))
    if problem:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    init(cfg.model.device)
    try:
        if is_main():  # build or convert the model folder once, before every rank reads it
            from node.policy import resolve_source

            resolve_source(cfg.model)
        dist.barrier()
        if is_main():
            try:
                code = lead()
            finally:
                release()
        else:
            from node.node import Node

            serve(Node(worker_config(cfg)))
            code = 0
        # Every rank reaches teardown together: rank 0 destroying the groups while another rank
        # still finishes its last collective aborted rank 0 at exit ("terminate called without an
        # active exception", SIGABRT) in about 3 of 4 runs of test_resume_across_rank_counts.
        dist.barrier()
        return code
    finally:
        if not _vllm_owns_teardown():
            dist.destroy_process_group()
