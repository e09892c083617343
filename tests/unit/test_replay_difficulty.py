"""Difficulty estimates: the decayed Beta update, peer evidence, the table, Thompson draws and the
calibration scores, on hand-worked numbers."""

from __future__ import annotations

import random

import pytest

from node.replay.difficulty import Calibration, DifficultyTable, beta_mean, beta_update

# --- beta_update ------------------------------------------------------------------------------


def test_decayed_update_hand_case():
    # Beta(3, 1), lambda = 0.5, prior (1, 1), 2 successes of 4:
    #   alpha = 0.5 * 3 + 0.5 * 1 + 2 = 4,   beta = 0.5 * 1 + 0.5 * 1 + 2 = 3
    assert beta_update(3.0, 1.0, 2, 4, decay=0.5, prior=(1.0, 1.0)) == (4.0, 3.0)
    # lambda = 0 forgets everything but the prior: alpha = 1 + 3, beta = 1 + 1
    assert beta_update(30.0, 10.0, 3, 4, decay=0.0, prior=(1.0, 1.0)) == (4.0, 2.0)


def test_evidence_weight_counts_rho_n():
    # a peer's group weighs rho = 0.3: from Beta(1, 1), no decay, 2 of 4 ->
    #   alpha = 1 + 0.3 * 2 = 1.6,  beta = 1 + 0.3 * 2 = 1.6: 0.3 * 4 = 1.2 pseudo-counts in all
    a, b = beta_update(1.0, 1.0, 2, 4, decay=1.0, prior=(1.0, 1.0), weight=0.3)
    assert (a, b) == (pytest.approx(1.6), pytest.approx(1.6))
    assert a + b - 2 == pytest.approx(0.3 * 4)
    # fractional successes (a graded reward): 1.5 of 2 at weight 1 -> (1 + 1.5, 1 + 0.5)
    assert beta_update(1.0, 1.0, 1.5, 2, 1.0, (1.0, 1.0)) == (2.5, 1.5)


def test_decay_one_never_forgets():
    # lambda = 1: the posterior is the prior plus every count: 3 + 2 + 0 + 4 = 9, 1 + 2 + 4 + 0 = 7
    a, b = 3.0, 1.0
    for s, n in ((2, 4), (0, 4), (4, 4)):
        a, b = beta_update(a, b, s, n, decay=1.0, prior=(1.0, 1.0))
    assert (a, b) == (9.0, 7.0)
    assert beta_mean(a, b) == 9 / 16


# --- DifficultyTable ----------------------------------------------------------------------------


def test_table_observe_from_a_start_prior_then_a_peer_group():
    table = DifficultyTable(prior=(1.0, 1.0), decay=0.5, rho=0.25)
    # first observation starts from start = (2, 1), not the prior; 3 of 4 at step 7:
    #   alpha = 0.5 * 2 + 0.5 * 1 + 3 = 4.5,  beta = 0.5 * 1 + 0.5 * 1 + 1 = 2,  evidence = 0 + 4
    est = table.observe("p", 3, 4, step=7, start=(2.0, 1.0))
    assert (est.alpha, est.beta, est.evidence, est.seen, est.last_step) == (4.5, 2.0, 4.0, 1, 7)
    assert est.mean == pytest.approx(4.5 / 6.5)
    # a peer's group, 1 of 4 at step 8 (weight 0.25); `start` is ignored once the prompt is known:
    #   alpha = 0.5 * 4.5 + 0.5 + 0.25 * 1 = 3.0,  beta = 0.5 * 2 + 0.5 + 0.25 * 3 = 2.25
    #   evidence = 0.5 * 4 + 0.25 * 4 = 3
    est = table.observe("p", 1, 4, step=8, local=False, start=(100.0, 100.0))
    assert (est.alpha, est.beta, est.evidence, est.seen, est.last_step) == (3.0, 2.25, 3.0, 2, 8)
    # without a start the prior is the start: 0.5 * 1 + 0.5 * 1 + 0 = 1, 1 + 2 = 3
    q = table.observe("q", 0, 2, step=8)
    assert (q.alpha, q.beta) == (1.0, 3.0)
    assert len(table) == 2 and "p" in table and "r" not in table and table.get("r") is None


def test_thompson_reproducible_and_unbiased():
    table = DifficultyTable(prior=(1.0, 1.0), decay=0.5, rho=0.3)
    table.observe("p", 3, 4, step=0, start=(2.0, 1.0))  # Beta(4.5, 2) as above, mean 0.6923
    a = [table.thompson("p", random.Random(11)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # same seed, same draw
    rng1, rng2 = random.Random(5), random.Random(5)
    assert [table.thompson("p", rng1) for _ in range(50)] == [table.thompson("p", rng2) for _ in range(50)]
    # the mean of many draws approaches alpha / (alpha + beta): sd of Beta(4.5, 2) is
    # sqrt(4.5 * 2 / (6.5^2 * 7.5)) = 0.169, so over 20000 draws the standard error is 0.0012
    rng = random.Random(0)
    draws = [table.thompson("p", rng) for _ in range(20000)]
    assert sum(draws) / len(draws) == pytest.approx(4.5 / 6.5, abs=0.01)
    # an unseen prompt draws from `start` (default the prior): Beta(9, 1) has mean 0.9
    draws = [table.thompson("new", rng, start=(9.0, 1.0)) for _ in range(20000)]
    assert sum(draws) / len(draws) == pytest.approx(0.9, abs=0.01)
    draws = [table.thompson("new", rng) for _ in range(20000)]
    assert sum(draws) / len(draws) == pytest.approx(0.5, abs=0.01)


def test_table_state_round_trip():
    table = DifficultyTable(prior=(1.0, 1.0), decay=0.5, rho=0.3)
    table.observe("p", 3, 4, step=2, start=(2.0, 1.0))
    table.observe("q", 1, 8, step=3, local=False)
    other = DifficultyTable(prior=(1.0, 1.0), decay=0.5, rho=0.3)
    other.load_state_dict(table.state_dict())
    assert other.state_dict() == table.state_dict()
    assert other.get("q") == table.get("q")
    # the same next observation lands on the same numbers
    assert other.observe("q", 2, 4, 4) == table.observe("q", 2, 4, 4)


# --- Calibration --------------------------------------------------------------------------------


def test_calibration_brier_and_global_baseline_hand_case():
    cal = Calibration()
    assert cal.global_mean() == 0.5  # nothing seen: the baseline guesses 0.5
    # group 1, unseen, predicted 0.8, realized 3/4: Brier (0.8 - 0.75)^2 = 0.0025;
    #   baseline 0.5 -> (0.5 - 0.75)^2 = 0.0625; then the global mean is 3 / 4
    cal.record(0.8, 0.75, 4, unseen=True)
    assert cal.global_mean() == 0.75
    # group 2, seen, predicted 0.3, realized 0/4: Brier 0.09; baseline 0.75 -> 0.5625;
    #   the global mean becomes 3 / 8
    cal.record(0.3, 0.0, 4, unseen=False)
    assert cal.global_mean() == 0.375
    m = cal.metrics()
    assert m["replay/brier"] == pytest.approx((0.0025 + 0.09) / 2)  # 0.04625
    assert m["replay/brier_global"] == pytest.approx((0.0625 + 0.5625) / 2)  # 0.3125
    assert m["replay/brier_unseen"] == pytest.approx(0.0025)
    assert m["replay/brier_unseen_global"] == pytest.approx(0.0625)
    assert m["replay/predicted"] == pytest.approx(0.55)  # (0.8 + 0.3) / 2
    assert m["replay/realized"] == pytest.approx(0.375)  # (0.75 + 0) / 2
    # the step's means reset; the cumulative scores stay
    again = cal.metrics()
    assert "replay/predicted" not in again and again["replay/brier"] == m["replay/brier"]
    # state round trip: the next record scores against the same global mean
    other = Calibration()
    other.load_state_dict(cal.state_dict())
    assert other.state_dict() == cal.state_dict() and other.global_mean() == 0.375
    assert Calibration().metrics() == {}
