"""Prompt selectors on hand-built candidates with known pass rates, and their updates."""

from __future__ import annotations

import math
import random

import pytest

from node.records import Prompt
from node.replay.config import ReplayConfig
from node.replay.select import GDRO, View, build_selector, gumbel_top


def prompts(means: list[float]) -> tuple[list[Prompt], View]:
    """Candidates c0, c1, ... with the given estimated pass rates; Thompson draws from a posterior
    of 10^6 pseudo-counts (sd <= 0.0005), so a draw is the mean to three decimals."""
    ps = [Prompt(f"t:0:{i}", "t", f"c{i}", "") for i in range(len(means))]
    mean = {p.prompt_id: m for p, m in zip(ps, means)}
    view = View(
        mean=lambda p: mean[p.prompt_id],
        draw=lambda p, rng: rng.betavariate(mean[p.prompt_id] * 1e6, (1 - mean[p.prompt_id]) * 1e6),
    )
    return ps, view


def names(picked: list[Prompt]) -> list[str]:
    return [p.question for p in picked]


MEANS = [0.1, 0.45, 0.9, 0.55, 0.3, 0.95]


def test_uniform_keeps_the_first_n():
    ps, view = prompts(MEANS)
    assert names(build_selector(ReplayConfig()).pick(ps, 2, view, random.Random(0))) == ["c0", "c1"]


def test_mopps_picks_nearest_the_target():
    # (r - 0.5)^2 with r ~ the mean: c1 and c3 (0.05 away), then c4 (0.2), then c0 / c2 (0.4)
    sel = build_selector(ReplayConfig(select="mopps", target=0.5))
    ps, view = prompts(MEANS)
    for seed in range(5):
        assert names(sel.pick(ps, 2, view, random.Random(seed))) == ["c1", "c3"]
        assert names(sel.pick(ps, 3, view, random.Random(seed))) == ["c1", "c3", "c4"]  # candidate order
    # the target moves the choice: 0.9 -> c2 (0) and c5 (0.05)
    sel = build_selector(ReplayConfig(select="mopps", target=0.9))
    assert names(sel.pick(ps, 2, view, random.Random(0))) == ["c2", "c5"]
    # same rng, same picks, also with wide posteriors where the draws matter
    wide = View(mean=view.mean, draw=lambda p, rng: rng.betavariate(1, 1))
    assert sel.pick(ps, 3, wide, random.Random(7)) == sel.pick(ps, 3, wide, random.Random(7))


def test_dots_with_tiny_tau_is_greedy():
    # score -|p - 0.5|: c1, c3 at -0.05; at tau = 1e-6 the gap to c4 (-0.2) is 1.5e5 in logits,
    # far beyond any Gumbel noise
    sel = build_selector(ReplayConfig(select="dots", target=0.5, dots_tau=1e-6))
    ps, view = prompts(MEANS)
    for seed in range(5):
        assert names(sel.pick(ps, 3, view, random.Random(seed))) == ["c1", "c3", "c4"]


def test_gumbel_top_draws_from_the_softmax():
    # scores (log 1, log 3), tau 1, n = 1: P(index 1) = 3 / (1 + 3) = 0.75; 20000 draws -> se 0.003
    rng = random.Random(0)
    hits = sum(gumbel_top([0.0, math.log(3)], 1, 1.0, rng) == [1] for _ in range(20000))
    assert hits / 20000 == pytest.approx(0.75, abs=0.015)
    assert gumbel_top([0.3, 0.1, 0.2], 3, 1.0, random.Random(0)) == [0, 1, 2]  # all, sorted


def test_curriculum_band_first_then_nearest():
    # band [0.7, 0.9] around 0.8: c1 (0.75) and c3 (0.85) inside; then by distance to 0.8:
    # c4 (0.95, 0.15), c5 (0.6, 0.2), c2 (0.5, 0.3), c0 (0.1, 0.7)
    sel = build_selector(ReplayConfig(select="curriculum", band_start=0.8, band_width=0.2))
    ps, view = prompts([0.1, 0.75, 0.5, 0.85, 0.95, 0.6])
    assert names(sel.pick(ps, 2, view, random.Random(0))) == ["c1", "c3"]
    assert names(sel.pick(ps, 4, view, random.Random(0))) == ["c1", "c3", "c4", "c5"]


def test_curriculum_centre_moves():
    sel = build_selector(ReplayConfig(select="curriculum", band_start=0.8, band_width=0.2, band_step=0.02))
    sel.update([(0.8, 1.0), (0.8, 0.8)])  # realized 0.9 > 0.8: harder, 0.8 - 0.02
    assert sel.centre == pytest.approx(0.78)
    sel.update([(0.8, 0.6)])  # 0.6 < 0.78 - 0.1 = 0.68: easier, back to 0.80
    assert sel.centre == pytest.approx(0.80)
    sel.update([(0.8, 0.75)])  # 0.70 <= 0.75 <= 0.80: inside the lower half, stays
    assert sel.centre == pytest.approx(0.80)
    sel.update([])
    assert sel.metrics() == {"replay/band_centre": pytest.approx(0.80)}
    # the band stays inside [0, 1]: centre 0.85, half width 0.15, easier -> 0.87 clipped to 0.85
    edge = build_selector(ReplayConfig(select="curriculum", band_start=0.85, band_width=0.3))
    edge.update([(0.5, 0.0)])
    assert edge.centre == pytest.approx(0.85)
    other = build_selector(ReplayConfig(select="curriculum"))
    other.load_state_dict(sel.state_dict())
    assert other.centre == sel.centre


def test_gdro_weights_hand_case():
    sel = build_selector(ReplayConfig(select="gdro", gdro_bins=5, gdro_eta=2.0, gdro_explore=0.1))
    assert sel.weights() == pytest.approx([0.2] * 5)  # equal losses: uniform
    # L = (1, 0.5, 0, 0, 0): exp(2 L) = (7.389056, 2.718282, 1, 1, 1), sum 13.107338
    #   q_0 = 0.9 * 7.389056 / 13.107338 + 0.1 / 5 = 0.507361 + 0.02 = 0.527361
    #   q_1 = 0.9 * 2.718282 / 13.107338 + 0.02 = 0.206648,  q_2..4 = 0.9 / 13.107338 + 0.02 = 0.088664
    sel.loss = [1.0, 0.5, 0.0, 0.0, 0.0]
    q = sel.weights()
    assert q == pytest.approx([0.527361, 0.206648, 0.088664, 0.088664, 0.088664], abs=1e-6)
    assert sum(q) == pytest.approx(1.0)
    assert sel.metrics()["replay/gdro_q0"] == pytest.approx(0.527361, abs=1e-6)


def test_gdro_update_is_an_ema_of_the_bins_failure_rate():
    sel = build_selector(ReplayConfig(select="gdro", gdro_bins=5, gdro_ema=0.9))
    # bins of the estimate before: 0.1, 0.15 -> bin 0; 0.7 -> bin 3; 1.0 -> bin 4 (the last bin is closed)
    #   bin 0: failures (1 - 0, 1 - 0.5) mean 0.75 -> 0.9 * 0.5 + 0.1 * 0.75 = 0.525
    #   bin 3: failure 0 -> 0.45;  bin 4: failure 0.5 -> 0.5;  bins 1, 2 untouched
    sel.update([(0.1, 0.0), (0.15, 0.5), (0.7, 1.0), (1.0, 0.5)])
    assert sel.loss == pytest.approx([0.525, 0.5, 0.5, 0.45, 0.5])
    other = GDRO(ReplayConfig(select="gdro"))
    other.load_state_dict(sel.state_dict())
    assert other.loss == sel.loss


def test_gdro_pick_follows_the_adversary():
    # all weight on bin 0 (eta large, no exploration): its candidates c1 (0.1), c3 (0.05) first,
    # in candidate order; once bin 0 is empty the other bins supply the rest
    sel = build_selector(ReplayConfig(select="gdro", gdro_eta=50.0, gdro_explore=0.0))
    sel.loss = [1.0, 0.0, 0.0, 0.0, 0.0]
    ps, view = prompts([0.9, 0.1, 0.5, 0.05])
    for seed in range(5):
        assert names(sel.pick(ps, 2, view, random.Random(seed))) == ["c1", "c3"]
        three = names(sel.pick(ps, 3, view, random.Random(seed)))
        assert len(set(three)) == 3 and {"c1", "c3"} <= set(three)
    assert names(sel.pick(ps, 9, view, random.Random(0))) == ["c0", "c1", "c2", "c3"]  # n > candidates


def test_build_selector_names_the_valid_ones():
    bad = ReplayConfig().model_copy(update={"select": "nope"})
    with pytest.raises(ValueError, match="unknown replay.select 'nope'; valid: uniform, mopps, dots"):
        build_selector(bad)
    with pytest.raises(ValueError):
        ReplayConfig(select="nope")
