"""`swarmrl run --eval` (what `make run` does): the evaluation runs after a finished run only,
not after Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from node.cli import main

ROOT = Path(__file__).resolve().parents[2]


class FakeNode:
    """Stands in for node.node.Node: `run` stops at `stop_at` as a Ctrl-C would (Node._on_sigint)."""

    stop_at = 10

    def __init__(self, cfg):
        self.run_dir = Path(cfg.logging.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.step, self.sharing, self.checkpoints_skipped, self.last_groups = 0, None, [], []

    def status(self, metrics, steps):
        return {"step": self.step, "steps": steps}

    def run(self, steps, on_step=None):
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *a: interrupted.append(True))
        try:
            while self.step < steps and not interrupted:
                self.step += 1
                if self.step == self.stop_at:
                    signal.raise_signal(signal.SIGINT)
        finally:
            signal.signal(signal.SIGINT, previous)

    def resume(self):
        return False

    def close(self):
        pass


@pytest.mark.parametrize("stop_at, evaluated", [(3, False), (99, True)])
def test_eval_is_skipped_after_an_interrupt(monkeypatch, tmp_path, capsys, stop_at, evaluated):
    import node.evaluate
    import node.node

    calls = []
    monkeypatch.setattr(node.node, "Node", type("Stopped", (FakeNode,), {"stop_at": stop_at}))
    monkeypatch.setattr(node.evaluate, "evaluate_target", lambda *a, **k: calls.append(a))
    rc = main(["run", "--eval", "-c", str(ROOT / "configs" / "tiny.yaml"), "trainer.steps=10",
               f"logging.run_dir={tmp_path / 'run'}", "logging.progress=plain"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert bool(calls) == evaluated
    if not evaluated:
        assert "interrupted at step 3/10: skipping the evaluation" in out
