"""Metrics log: resume drops the steps the checkpoint does not hold, and a kill -9 during
that rewrite loses no line up to the resume step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from node.metrics import METRICS_FILE, MetricsLog, read_metrics

ROOT = Path(__file__).resolve().parents[2]


def _write_run(run_dir: Path, steps: int) -> bytes:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "time": 0.0, "reward_mean": s / 10}) for s in range(1, steps + 1)]
    data = ("\n".join(lines) + "\n").encode()
    (run_dir / METRICS_FILE).write_bytes(data)
    return data


def test_resume_drops_later_steps_and_torn_lines(tmp_path):
    data = _write_run(tmp_path, 6)
    (tmp_path / METRICS_FILE).write_bytes(data + b'{"step": 7, "ti')  # torn by a crash
    log = MetricsLog(tmp_path, tensorboard=False, resume_step=4)
    log.write(5, {"reward_mean": 9.0})
    log.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["reward_mean"] == 9.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_FILE]  # no temporary file left


def test_resume_at_the_last_step_leaves_the_file_untouched(tmp_path):
    data = _write_run(tmp_path, 3)
    before = (tmp_path / METRICS_FILE).stat().st_ino
    MetricsLog(tmp_path, tensorboard=False, resume_step=3).close()
    assert (tmp_path / METRICS_FILE).read_bytes() == data
    assert (tmp_path / METRICS_FILE).stat().st_ino == before


# The child resumes a metrics log; the first write to any file opened for writing in the run
# dir puts down half its bytes, flushes them to disk and then kill -9s the process: the worst
# moment of the rewrite, whatever way the rewrite is done.
CRASHER = r"""
import builtins, io, os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from node.metrics import MetricsLog

run_dir = Path({run_dir!r})
real_open = io.open

class HalfThenDie:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

def dying_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if Path(os.fsdecode(file)).parent == run_dir and any(c in mode for c in "wax+"):
        return HalfThenDie(f)
    return f

io.open = builtins.open = dying_open
MetricsLog(run_dir, tensorboard=False, resume_step={resume})
print("survived", flush=True)
"""


def test_kill_9_during_the_resume_rewrite_loses_no_line(tmp_path):
    data = _write_run(tmp_path, 2000)
    script = CRASHER.format(root=str(ROOT), run_dir=str(tmp_path), resume=1500)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # it did die mid-rewrite
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps[:1500] == list(range(1, 1501))  # every line up to the resume step survived
    assert (tmp_path / METRICS_FILE).read_bytes() == data  # the old file, whole
    # the next resume finishes the job and sweeps the killed writer's leftovers
    MetricsLog(tmp_path, tensorboard=False, resume_step=1500).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 1501))
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_FILE]
