"""Rollout allocation: hand-worked cases, the knapsack DP against brute force, budget invariants."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from node.replay.allocate import (
    ALLOCATORS,
    allocate,
    dars_extra,
    fit_to_budget,
    knapsack,
    knapsack_value,
    sqrt_rule,
    uniform,
)


def total_value(g, p) -> float:
    return sum(knapsack_value(n, min(max(q, 0.01), 0.99)) for n, q in zip(g, p))


def brute_force(p, budget, g_min, g_max) -> float:
    """Best total value over every allocation (the DP must reach it)."""
    best = -math.inf
    for g in itertools.product(range(g_min, g_max + 1), repeat=len(p)):
        if sum(g) <= budget:
            best = max(best, total_value(g, p))
    return best


# --- knapsack -----------------------------------------------------------------------------------


def test_knapsack_value_hand_point():
    # n = 2, p = 0.5: P(non-zero) = 1 - 0.25 - 0.25 = 0.5; InfoGain = 0.5 * 0.25 = 0.125 -> 0.0625
    assert knapsack_value(2, 0.5) == pytest.approx(0.0625, abs=1e-15)
    # n = 3, p = 0.2: 1 - 0.008 - 0.512 = 0.48; 0.2 * 0.64 = 0.128 -> 0.06144
    assert knapsack_value(3, 0.2) == pytest.approx(0.06144, abs=1e-15)
    # all-or-nothing groups carry no gradient
    assert knapsack_value(5, 0.0) == 0.0 and knapsack_value(5, 1.0) == 0.0


def test_knapsack_hand_case():
    # p = [0.5, 0.05, 0.95], budget 12, G in [2, 8]: each prompt takes 2, 6 extra units remain.
    # Marginal value of one more rollout, n -> n + 1:
    #   p = 0.5:  0.125 * 2 * 0.5^(n+1)   -> 0.03125, 0.015625, 0.0078125, 0.00390625, 0.001953, ...
    #   p = 0.05: 0.045125 * (0.95^n - 0.95^(n+1) + 0.05^n - 0.05^(n+1))
    #                                     -> 0.002143 (2->3), 0.001940 (3->4), ...
    #   p = 0.95: 0.002375 * (same bracket) -> 0.000113 (2->3), ...
    # All three are concave, so the six best increments are optimal: four to p = 0.5 (2 -> 6),
    # then 0.002143 (p = 0.05, 2 -> 3), then 0.001953 (p = 0.5, 6 -> 7) beats 0.001940.
    p = [0.5, 0.05, 0.95]
    g = knapsack(p, 12, 2, 8)
    assert g == [7, 3, 2]
    assert total_value(g, p) == pytest.approx(brute_force(p, 12, 2, 8), abs=1e-15)


@pytest.mark.parametrize("seed", range(8))
def test_knapsack_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 4)
    g_min = rng.randint(1, 3)
    g_max = g_min + rng.randint(0, 5)
    budget = rng.randint(n * g_min, n * g_max + 3)
    p = [rng.choice([0.0, 1.0, rng.random()]) for _ in range(n)]
    g = knapsack(p, budget, g_min, g_max)
    assert all(g_min <= x <= g_max for x in g) and sum(g) <= budget
    assert total_value(g, p) == pytest.approx(brute_force(p, budget, g_min, g_max), rel=1e-12, abs=1e-15)


def test_knapsack_ties_go_to_earlier_prompts():
    # Two equal prompts, 5 extra units: (3, 2) and (2, 3) extra are worth exactly the same
    # (row[3] + row[2] == row[2] + row[3] in floats).  Backtracking decides the last prompt first and
    # it keeps the smaller share on an exact tie, so the earlier prompt gets the odd unit.
    assert knapsack([0.3, 0.3], 9, 2, 8) == [5, 4]
    # budget beyond n * g_max: everyone gets g_max, the rest is unused
    assert knapsack([0.5, 0.5], 100, 2, 8) == [8, 8]


def test_knapsack_unsolved_prompts_still_get_rollouts():
    # p = 0 would be worth nothing; clipped to 0.01 it competes for budget like any other prompt
    g = knapsack([0.0, 0.0], 20, 2, 16)
    assert sum(g) == 20


# --- square-root rule ---------------------------------------------------------------------------


def test_sqrt_rule_hand_case():
    # v = p (1 - p) = 0.25, 0.25, 0.09 -> sqrt = 0.5, 0.5, 0.3 (sum 1.3); lam = 26 / 1.3 = 20
    # -> 10, 10, 6, all inside [2, 32]
    assert sqrt_rule([0.5, 0.5, 0.1], 26, 2, 32) == [10, 10, 6]


def test_sqrt_rule_clips_and_refills():
    # p = 0 is clipped to 0.01: sqrt(v) = 0.5, 0.5, sqrt(0.0099) = 0.0995.
    # Uncapped, lam = 30 / 1.0995 = 27.29 -> 13.64, 13.64, 2.71; the first two cap at g_max = 12,
    # which leaves 6 for the third: at lam = 6 / 0.0995 = 60.3 the first two stay capped
    # (0.5 * 60.3 > 12) and the third gets exactly 6, so [12, 12, 6]
    assert sqrt_rule([0.5, 0.5, 0.0], 30, 2, 12) == [12, 12, 6]
    # the floor binds instead: lam = 20 / 1.0995 = 18.2 -> 9.1, 9.1, 1.8 < g_min = 3; with the third
    # at 3 the others share 17 (lam = 17) -> 8.5 each, rounded by largest remainder (tie: lower index) -> [9, 8, 3]
    assert sqrt_rule([0.5, 0.5, 0.0], 20, 3, 12) == [9, 8, 3]


@pytest.mark.parametrize("seed", range(20))
def test_sqrt_rule_sum_and_bounds(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    g_min = rng.randint(1, 4)
    g_max = g_min + rng.randint(0, 30)
    budget = rng.randint(n * g_min, n * g_max + 10)
    p = [rng.random() for _ in range(n)]
    g = sqrt_rule(p, budget, g_min, g_max)
    assert sum(g) == min(budget, n * g_max)
    assert all(g_min <= x <= g_max for x in g)
    # larger variance never gets fewer rollouts than smaller variance by more than the rounding unit
    v = [min(max(q, 0.01), 0.99) * (1 - min(max(q, 0.01), 0.99)) for q in p]
    for i, j in itertools.permutations(range(n), 2):
        if v[i] > v[j]:
            assert g[i] >= g[j] - 1


# --- every allocator ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALLOCATORS))
@pytest.mark.parametrize("seed", range(10))
def test_budget_and_bounds(name, seed):
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    g_min = rng.randint(1, 4)
    g_max = g_min + rng.randint(0, 12)
    budget = rng.randint(n * g_min, n * g_max + 5)
    p = [rng.random() for _ in range(n)]
    g = allocate(name, p, budget, g_min, g_max)
    assert len(g) == n and all(g_min <= x <= g_max for x in g)
    assert sum(g) == min(budget, n * g_max)
    assert g == allocate(name, p, budget, g_min, g_max)


def test_uniform_remainder():
    # 11 = 3 * 3 + 2: the first two prompts get the remainder
    assert uniform([0.1, 0.5, 0.9], 11, 2, 8) == [4, 4, 3]
    # clipped at g_max
    assert uniform([0.1, 0.5], 40, 2, 8) == [8, 8]


def test_bad_name_lists_valid():
    with pytest.raises(ValueError, match="knapsack, sqrt, uniform"):
        allocate("dars", [0.5], 8, 2, 8)


@pytest.mark.parametrize("name", sorted(ALLOCATORS))
def test_budget_below_minimum_raises(name):
    with pytest.raises(ValueError, match=r"budget 5 .* 3 prompts g_min=2 .*needs 6"):
        allocate(name, [0.5, 0.5, 0.5], 5, 2, 8)


def test_empty():
    assert all(allocate(name, [], 10, 2, 8) == [] for name in ALLOCATORS)


# --- DARS ---------------------------------------------------------------------------------------


def test_dars_hand_cases():
    # n1 = 4, a = 0 -> a = 0.5 / 4 = 0.125, S = 2 * 0.125 * 0.875 = 0.21875
    #   ET: ceil((2 - 0.875) / 0.21875) = ceil(5.142...) = 6
    #   HW: ceil((2 * 0.875 * 0.5 * 4 - 0.875) / 0.21875) = ceil(2.625 / 0.21875) = ceil(12.0) = 12
    # n1 = 4, a = 0.25 -> S = 0.375
    #   ET: ceil((2 - 1.5) / 0.375) = ceil(1.33) = 2
    #   HW: ceil((2 * 0.75 * 2 - 1.5) / 0.375) = ceil(4.0) = 4
    # a >= 0.5 -> 0
    assert dars_extra([0.0, 0.25, 0.5, 1.0], 4, 32, "et") == [6, 2, 0, 0]
    assert dars_extra([0.0, 0.25, 0.5, 1.0], 4, 32, "hw") == [12, 4, 0, 0]


def test_dars_clipped_to_g_max():
    # n1 = 8, a = 0 -> a = 1/16, S = 0.1171875; HW: ceil((7.5 - 0.9375) / 0.1171875) = 56 > 32 - 8
    assert dars_extra([0.0], 8, 32, "hw") == [24]
    assert dars_extra([0.0], 8, 8, "et") == [0]


def test_dars_bad_schedule():
    with pytest.raises(ValueError, match="'et', 'hw'"):
        dars_extra([0.0], 4, 32, "xx")


# --- fit_to_budget ------------------------------------------------------------------------------


def test_fit_to_budget_unchanged_when_it_fits():
    assert fit_to_budget([3, 0, 5], 8) == [3, 0, 5]
    assert fit_to_budget([3, 0, 5], 100) == [3, 0, 5]


def test_fit_to_budget_hand_case():
    # T = 20, remaining 7: floors 10*7//20 = 3, 6*7//20 = 2, 4*7//20 = 1 (sum 6); the one left over
    # goes to the largest request (10) -> [4, 2, 1]
    assert fit_to_budget([10, 6, 4], 7) == [4, 2, 1]
    # ties between equal requests go to the lower index: floors 1, 1, 1 (sum 3), 2 left -> [2, 2, 1]
    assert fit_to_budget([3, 3, 3], 5) == [2, 2, 1]
    assert fit_to_budget([3, 3, 3], 0) == [0, 0, 0]


@pytest.mark.parametrize("seed", range(20))
def test_fit_to_budget_random(seed):
    rng = random.Random(seed)
    extra = [rng.randint(0, 30) for _ in range(rng.randint(1, 20))]
    remaining = rng.randint(0, sum(extra))
    out = fit_to_budget(extra, remaining)
    assert sum(out) == remaining
    assert all(0 <= o <= e for o, e in zip(out, extra))
