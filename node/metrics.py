"""Per-step metrics: JSONL in the run dir always, TensorBoard when installed, and a live
progress display (rich on a terminal, plain lines otherwise)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None = None):
        self.path = run_dir / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines of steps that the restored checkpoint does not contain.

        Crash-safe: the kept lines go to a temporary file that is fsynced and then renamed over
        the old one (and the directory fsynced), so a kill -9 at any moment leaves either the
        old file or the new one, never a short one.
        """
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):  # left by a kill -9 here
            stale.unlink(missing_ok=True)
        old = self.path.read_bytes()
        kept = []
        for line in old.splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line + b"\n")
            except (ValueError, AttributeError):
                continue  # a line torn by a crash, or not a record
        new = b"".join(kept)
        if new == old:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, "time": time.time(), **metrics}
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a swarmrl run directory?")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _fmt(metrics: dict[str, Any], key: str, spec: str = ".3f") -> str:
    v = metrics.get(key)
    return format(v, spec) if isinstance(v, (int, float)) else "-"


class Progress:
    """Live view of training: step, reward, tokens/s and ETA."""

    def __init__(self, total: int, start: int, mode: str):
        self.total = total
        self.start = start
        self.rich = mode == "rich" or (mode == "auto" and sys.stdout.isatty())
        self.t0 = time.time()
        self._progress = None
        if self.rich:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("[bold]step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task("train", total=total, completed=start, info="starting")
            self._progress.start()

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        info = (
            f"reward {_fmt(metrics, 'reward_mean')}  correct {_fmt(metrics, 'reward/correctness')}  "
            f"gen {_fmt(metrics, 'gen_tokens_per_s', '.0f')} tok/s  train {_fmt(metrics, 'train_tokens_per_s', '.0f')} tok/s"
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
            return
        done = step - self.start
        eta = (time.time() - self.t0) / max(done, 1) * (self.total - step)
        print(f"step {step}/{self.total}  {info}  eta {eta:.0f}s", flush=True)

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
