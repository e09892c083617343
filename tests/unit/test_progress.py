"""The live progress line keeps the step count and the ETA in a narrow terminal."""

from __future__ import annotations

import io
import re

import pytest
import rich
from rich.console import Console

from node.metrics import Progress

METRICS = {
    "reward_mean": 0.123,
    "reward/correctness": 0.5,
    "gen_tokens_per_s": 1234.0,
    "train_tokens_per_s": 23456.0,
}


def _render(progress: Progress, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(progress._progress.get_renderable())
    return console.file.getvalue()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_step_count_and_eta_survive_a_narrow_terminal(monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))  # the width rich reads when it is not on a terminal
    monkeypatch.setattr(rich, "_console", None)  # rich's shared console, made again with that width
    progress = Progress(1000, 0, "rich")
    progress._progress.stop()
    try:
        progress.update(700, METRICS)
        text = _render(progress, width)
    finally:
        progress.close()
    lines = text.splitlines()
    assert len(lines) == 1 and len(lines[0]) <= width, text
    assert "step" in text and "700/1000" in text, text
    assert re.search(r"eta (-:--:--|\d+:\d\d:\d\d)", text), text
    if width >= 80:  # the reward is the first field to keep after them
        assert "reward 0.123" in text, text
    if width >= 200:  # a wide terminal shows everything
        assert "train 23456 tok/s" in text and "━" in text, text
