"""Per-step metrics: JSONL in the run dir always, the configured trackers (node/trackers.py:
TensorBoard, W&B, MLflow, trackio), a table of sample completions every `logging.samples_every`
steps, and a live progress display (rich on a terminal, plain lines otherwise).

The run dir is the record: `metrics.jsonl` (one line per step) and `samples.jsonl` (one line per
sample row) are written whatever trackers are installed, and `--resume` cuts both back to the
restored step, so a resumed run's files read as if it had never stopped."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.trackers import TrackerSet

if TYPE_CHECKING:
    from node.records import Group

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
SAMPLE_COLUMNS = ["step", "task", "prompt", "completion", "reward", "answer"]  # the trackers' table


class MetricsLog:
    def __init__(
        self, run_dir: Path, tensorboard: bool = False, resume_step: int | None = None,
        trackers: TrackerSet | None = None,
    ):  # fmt: skip
        """`tensorboard=True` is the old switch: it opens a TensorBoard tracker (warning when the
        package is missing); new code passes `trackers` from `node.trackers.open_trackers`."""
        self.path = run_dir / METRICS_FILE
        self.samples_path = run_dir / SAMPLES_FILE
        if resume_step is not None:
            for path in (self.path, self.samples_path):
                if path.is_file():
                    truncate_after(path, resume_step)
        self._file = open(self.path, "a", buffering=1)
        self._samples = None  # opened at the first sample table
        if trackers is None and tensorboard:
            from node.trackers import TensorBoard, installed, warn

            trackers = TrackerSet([TensorBoard(run_dir)] if installed("tensorboard") else [])
            if not trackers.trackers:
                warn("TensorBoard is not installed: no events written (pip install tensorboard)")
        self.trackers = trackers or TrackerSet()

    def _truncate_after(self, step: int) -> None:
        truncate_after(self.path, step)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, "time": time.time(), **metrics}
        self._file.write(json.dumps(record) + "\n")
        self.trackers.log(step, metrics)

    def write_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """A table of sample completions: one JSON line per row in samples.jsonl, and one table
        (SAMPLE_COLUMNS) to each tracker that shows tables."""
        if not rows:
            return
        if self._samples is None:
            self._samples = open(self.samples_path, "a", buffering=1)
        for row in rows:
            self._samples.write(json.dumps({"step": step, **row}) + "\n")
        table = [[step if c == "step" else row.get(c) for c in SAMPLE_COLUMNS] for row in rows]
        self.trackers.table(step, "samples", list(SAMPLE_COLUMNS), table)

    def close(self) -> None:
        self._file.close()
        if self._samples is not None:
            self._samples.close()
        self.trackers.close()


def sample_rows(groups: list[Group], n: int) -> list[dict[str, Any]]:
    """Up to `n` completions of a step to show, round robin over its groups (one per prompt
    first, then a second of each, ...), so a few rows cover as many prompts as they can."""
    rows: list[dict[str, Any]] = []
    depth = max((len(g.completions) for g in groups), default=0)
    for i in range(depth):
        for g in groups:
            if len(rows) == n:
                return rows
            if i < len(g.completions):
                c = g.completions[i]
                rows.append({
                    "task": g.prompt.task, "prompt": g.prompt.question, "completion": c.text,
                    "reward": round(c.reward, 6), "answer": g.prompt.answer, "origin": c.origin,
                    "components": c.reward_components,
                })  # fmt: skip
    return rows


def truncate_after(path: Path, step: int) -> None:
    """On resume, drop lines of steps that the restored checkpoint does not contain.

    Crash-safe: the kept lines go to a temporary file that is fsynced and then renamed over
    the old one (and the directory fsynced), so a kill -9 at any moment leaves either the
    old file or the new one, never a short one.
    """
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a kill -9 here
        stale.unlink(missing_ok=True)
    old = path.read_bytes()
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    """Live view of training: step, reward, tokens/s and ETA.

    On a terminal the line is fitted to its width: the step count and the ETA always show;
    the other fields go in priority order (reward, bar, correctness, elapsed, tokens/s) while
    they fit, so an 80-column terminal never crops the step count or the ETA away.
    """

    BAR = 40  # widest progress bar; narrower or none when the terminal is short of room

    def __init__(self, total: int, start: int, mode: str, console=None):
        self.total = total
        self.start = start
        self.rich = mode == "rich" or (mode == "auto" and sys.stdout.isatty())
        self.t0 = time.time()
        self._progress = None
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class _Bar(BarColumn):  # a bar of width 0 draws nothing (rich draws at least one cell)
                def render(self, task):  # noqa: ANN001, ANN202 (rich's signature)
                    return Text("") if self.bar_width == 0 else super().render(task)

            self._bar = _Bar(bar_width=self.BAR)
            self._progress = RichProgress(
                TextColumn("[bold]step"),
                MofNCompleteColumn(),
                self._bar,
                TextColumn("{task.fields[info]}"),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._progress.add_task("train", total=total, completed=start, info="starting")
            self._progress.start()

    def _fit(self, fields: list[tuple[str, str]], width: int) -> str:
        """The info text for a terminal `width` wide; sets the bar's width as a side effect.

        `fields` are (name, text) in priority order; "bar" stands for the progress bar."""
        digits = len(str(self.total))
        # "step" + " N/M" + " eta" + " H:MM:SS" (room for 99 hours) + one spare column
        room = 4 + 1 + (2 * digits + 1) + 1 + 3 + 1 + 8 + 1
        left = width - room
        kept, bar = [], 0
        for name, text in fields:
            if name == "bar":  # 10 cells at its turn, widened with what is left at the end
                bar = 10 if left >= 11 else 0
                left -= bar + 1 if bar else 0
            elif len(text) + 2 <= left:  # two spaces between fields (or one and a column gap)
                kept.append((name, text))
                left -= len(text) + 2
        self._bar.bar_width = bar + min(self.BAR - bar, left) if bar else 0
        return "  ".join(text for _, text in kept)

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        elapsed = time.time() - self.t0
        fields = [
            ("reward", f"reward {_fmt(metrics, 'reward_mean')}"),
            ("bar", ""),
            ("correct", f"correct {_fmt(metrics, 'reward/correctness')}"),
            ("elapsed", f"elapsed {int(elapsed) // 3600}:{int(elapsed) % 3600 // 60:02d}:{int(elapsed) % 60:02d}"),
            ("gen", f"gen {_fmt(metrics, 'gen_tokens_per_s', '.0f')} tok/s"),
            ("train", f"train {_fmt(metrics, 'train_tokens_per_s', '.0f')} tok/s"),
        ]
        if self._progress is not None:
            info = self._fit(fields, self._progress.console.width)
            self._progress.update(self._task, completed=step, info=info)
            return
        done = step - self.start
        eta = elapsed / max(done, 1) * (self.total - step)
        info = "  ".join(text for name, text in fields if name not in ("bar", "elapsed"))
        print(f"step {step}/{self.total}  {info}  eta {eta:.0f}s", flush=True)

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
