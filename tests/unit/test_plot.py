"""`swarmrl plot`: which panels a run's metrics get, the replay layer's among them."""

from __future__ import annotations

import json

import pytest

from node.cli import main
from node.plot import panels, plot_run


def write(tmp_path, rows) -> None:
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_panels_of_a_run_without_the_replay_layer_are_the_old_ones():
    rows = [{"step": i, "reward_mean": 0.1, "grad_norm": 1.0} for i in range(3)]
    assert panels(rows) == [(("reward_mean",), "reward (mean)"), (("grad_norm",), "grad norm")]


def test_replay_panels_and_the_brier_baseline_on_the_same_axes(tmp_path):
    rows = [
        {
            "step": i,
            "reward_mean": i / 10,
            "replay/nonzero_share": 0.5,
            "replay/replay_share": 0.25,
            "replay/brier": 0.2 - i / 100,
            "replay/brier_global": 0.25,
        }  # fmt: skip
        for i in range(1, 8)
    ]
    rows[0] = {k: v for k, v in rows[0].items() if not k.startswith("replay/brier")}  # no score at step 1
    shown = dict((title, keys) for keys, title in panels(rows))
    assert shown == {
        "reward (mean)": ("reward_mean",),
        "groups with signal": ("replay/nonzero_share",),
        "Brier: estimate vs global mean": ("replay/brier", "replay/brier_global"),
        "replayed share of groups": ("replay/replay_share",),
    }
    # the baseline alone never makes a panel
    assert panels([{"step": 0, "replay/brier_global": 0.25}]) == []
    write(tmp_path, rows)
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_many_panels_wrap_and_none_is_a_clear_error(tmp_path):
    keys = ["reward_mean", "reward/correctness", "reward/format", "entropy", "completion_len", "grad_norm",
            "replay/nonzero_share", "replay/brier", "replay/brier_global", "replay/replay_share"]  # fmt: skip
    write(tmp_path, [{"step": i, **{k: 0.5 for k in keys}} for i in range(4)])
    assert len(panels([{k: 0.5 for k in keys}])) == 9
    assert plot_run(tmp_path).is_file()  # two rows of six, three left empty
    write(tmp_path, [{"step": 0, "loss": 1.0}])
    with pytest.raises(ValueError, match="none of the plotted metrics"):
        plot_run(tmp_path)
