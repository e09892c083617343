"""Rollout allocation: how many completions ``G_i`` each selected prompt gets under a per-step budget.

An allocator is ``fn(p, budget, g_min, g_max) -> list[int]``: ``p`` holds the estimated pass rate of
each selected prompt (from `difficulty` or the predictor), ``budget`` the completions the step may
generate, and the answer one ``G_i`` per prompt with ``g_min <= G_i <= g_max``.  Pure python over
floats and ints, no torch: the node calls it once per step on at most a few dozen prompts.

Guarantees, for every allocator in `ALLOCATORS`:

- ``n * g_min > budget`` raises ``ValueError`` (the step cannot give every prompt its minimum);
- ``sum(G) == budget`` whenever ``budget <= n * g_max``; when ``budget > n * g_max`` every prompt
  gets ``g_max`` and the rest of the budget is left unused;
- the answer depends only on the arguments (ties are broken by prompt index, never by chance).

DARS (Yang et al. 2025) is two stages, so it is not a one-call allocator: stage 1 is `uniform` over
a share of the budget, stage 2 asks `dars_extra` for more rollouts on groups that came out hard and
trims the request with `fit_to_budget`.  The replay layer drives both stages.

Estimated pass rates are clipped to ``[P_CLIP, 1 - P_CLIP]`` before `knapsack` and `sqrt_rule` use
them.  Knapsack RL gives prompts it never saw solved a fallback allocation; the clip is our version
of that fallback (a prompt estimated at 0 would otherwise be worth nothing and get ``g_min`` for ever).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

P_CLIP = 0.01  # pass rates are clipped to [P_CLIP, 1 - P_CLIP] by knapsack and sqrt_rule
_BISECT_STEPS = 200  # halvings of the sqrt rule's scale: far past float precision


def _check(p: Sequence[float], budget: int, g_min: int, g_max: int) -> None:
    """Raise ``ValueError`` when the bounds are incoherent or ``n * g_min > budget``."""
    if g_min < 1 or g_min > g_max:
        raise ValueError(f"need 1 <= g_min <= g_max, got g_min={g_min}, g_max={g_max}")
    if len(p) * g_min > budget:
        raise ValueError(
            f"budget {budget} cannot give {len(p)} prompts g_min={g_min} each (needs {len(p) * g_min})"
        )


def _clip_p(x: float) -> float:
    """``clip(x, P_CLIP, 1 - P_CLIP)``: no prompt is treated as certainly solved or hopeless."""
    return min(max(float(x), P_CLIP), 1.0 - P_CLIP)


def uniform(p: Sequence[float], budget: int, g_min: int, g_max: int) -> list[int]:
    """``G_i = budget // n``, plus one for the first ``budget % n`` prompts, clipped to [g_min, g_max].

    Ignores ``p``: this is the node without allocation (GRPO's fixed G when ``budget = n G``).
    """
    _check(p, budget, g_min, g_max)
    n = len(p)
    if n == 0:
        return []
    base, rest = divmod(budget, n)
    return [min(max(base + (1 if i < rest else 0), g_min), g_max) for i in range(n)]


def knapsack_value(n: int, p: float) -> float:
    """Knapsack RL's worth of ``n`` rollouts on a prompt of pass rate ``p``.

    ``Value(n, p) = (1 - p^n - (1 - p)^n) * p (1 - p)^2``: the chance that the group is not all
    right or all wrong (so its GRPO gradient is non-zero) times ``InfoGain(p) ~ p (1 - p)^2``.
    """
    return (1.0 - p**n - (1.0 - p) ** n) * p * (1.0 - p) ** 2


def knapsack(p: Sequence[float], budget: int, g_min: int, g_max: int) -> list[int]:
    """Knapsack RL (Li et al. 2025): ``max sum_i Value(G_i, p_i)`` s.t. ``sum_i G_i <= budget``,
    ``g_min <= G_i <= g_max``, solved exactly by dynamic programming over (prompt, budget spent).

    Every prompt first takes ``g_min``; the DP then spreads the ``budget - n g_min`` extra units,
    ``best[i][c]`` being the best value of the first ``i`` prompts given at most ``c`` extra.  Ties
    are broken deterministically: extras are tried in increasing order and only a strictly better
    value replaces the incumbent, and backtracking settles the last prompt first, so on an exact tie
    later prompts take the smaller ``G_i`` and earlier prompts the larger.
    O(n * budget * (g_max - g_min)) time, O(n * budget) memory.
    """
    _check(p, budget, g_min, g_max)
    n = len(p)
    span = g_max - g_min
    cap = min(budget - n * g_min, n * span)  # more extra than n * span can never be spent
    gains = [[knapsack_value(g_min + e, _clip_p(q)) for e in range(span + 1)] for q in p]
    best = [0.0] * (cap + 1)  # best[c] over the prompts seen so far, at most c extra units
    choice: list[list[int]] = []  # choice[i][c]: extra units prompt i takes when c are left for 0..i
    for i in range(n):
        row = gains[i]
        new = [0.0] * (cap + 1)
        pick = [0] * (cap + 1)
        for c in range(cap + 1):
            top, arg = best[c] + row[0], 0
            for e in range(1, min(span, c) + 1):
                v = best[c - e] + row[e]
                if v > top:
                    top, arg = v, e
            new[c], pick[c] = top, arg
        best = new
        choice.append(pick)
    out = [0] * n
    c = cap
    for i in range(n - 1, -1, -1):
        e = choice[i][c]
        out[i] = g_min + e
        c -= e
    return out


def _largest_remainder(x: Sequence[float], total: int, lo: int, hi: int) -> list[int]:
    """Round reals ``x`` (each in [lo, hi], summing to about ``total``) to integers in [lo, hi] summing
    to ``total``: floor each, then give one unit to the largest fractional parts (ties: lower index)
    until the sum is reached, or take one from the smallest if the floors overshoot."""
    out = [min(max(math.floor(v), lo), hi) for v in x]
    frac = [v - math.floor(v) for v in x]
    short = total - sum(out)
    up = sorted(range(len(x)), key=lambda i: (-frac[i], i))
    while short > 0 and any(o < hi for o in out):
        for i in up:
            if short > 0 and out[i] < hi:
                out[i] += 1
                short -= 1
    down = sorted(range(len(x)), key=lambda i: (frac[i], i))
    while short < 0 and any(o > lo for o in out):
        for i in down:
            if short < 0 and out[i] > lo:
                out[i] -= 1
                short += 1
    return out


def sqrt_rule(p: Sequence[float], budget: int, g_min: int, g_max: int) -> list[int]:
    """Square-root allocation (Rollout-GDRO, "square-root optimal allocation"):
    ``G_i = clip(lam * sqrt(v_i), g_min, g_max)``, ``v_i = p_i (1 - p_i)``, which minimises
    ``sum_i v_i / G_i`` (the summed variance of the groups' mean rewards) for a fixed total.

    Rollout-GDRO applies the rule to difficulty bins weighted by an adversary and finds the scale by
    dual ascent across steps; we apply it per prompt with equal weights and find ``lam`` each step by
    bisection so that the clipped reals sum to ``budget`` (capped at ``n g_max``), then round by
    largest remainder so the integers sum to it exactly.
    """
    _check(p, budget, g_min, g_max)
    n = len(p)
    if n == 0:
        return []
    total = min(budget, n * g_max)
    s = [math.sqrt(q * (1.0 - q)) for q in map(_clip_p, p)]

    def spent(lam: float) -> float:
        return sum(min(max(lam * si, g_min), g_max) for si in s)

    lo, hi = 0.0, g_max / min(s)  # spent(hi) == n * g_max >= total
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if spent(mid) < total:
            lo = mid
        else:
            hi = mid
    x = [min(max(hi * si, g_min), g_max) for si in s]
    return _largest_remainder(x, total, g_min, g_max)


def dars_extra(acc: Sequence[float], n1: int, g_max: int, schedule: str = "et") -> list[int]:
    """DARS stage 2 (Yang et al. 2025, "Depth-Breadth Synergy in RLVR"): extra rollouts per group.

    With stage-1 accuracy ``a`` over ``n1`` rollouts: ``a >= 0.5`` gets nothing; ``a = 0`` is read as
    ``a = 0.5 / n1``; ``S = 2 a (1 - a)`` (GRPO's cumulative advantage per rollout).
    Equal treatment (``et``): ``dN = ceil((0.5 n1 - n1 S) / S)``, lifting ``(n1 + dN) S`` to the
    peak ``0.5 n1`` of a group at ``a = 0.5``; hardness-weighted (``hw``):
    ``dN = ceil((2 (1 - a) 0.5 n1 - n1 S) / S)``.  ``dN`` is clipped to ``[0, g_max - n1]``.
    Our one change: ``ceil`` ignores a 1e-9 excess, so float noise on an exact integer quotient
    does not buy a rollout.
    """
    if schedule not in ("et", "hw"):
        raise ValueError(f"unknown DARS schedule {schedule!r}; valid: 'et', 'hw'")
    if n1 < 1:
        raise ValueError(f"n1 must be >= 1, got {n1}")
    room = max(g_max - n1, 0)
    out = []
    for a in acc:
        if a >= 0.5:
            out.append(0)
            continue
        a = 0.5 / n1 if a <= 0 else float(a)
        s = 2.0 * a * (1.0 - a)
        target = 0.5 * n1 if schedule == "et" else 2.0 * (1.0 - a) * 0.5 * n1
        dn = math.ceil((target - n1 * s) / s - 1e-9)
        out.append(min(max(dn, 0), room))
    return out


def fit_to_budget(extra: Sequence[int], remaining: int) -> list[int]:
    """Trim requests ``extra`` to ``remaining`` units.

    Unchanged if ``sum(extra) <= remaining``.  Otherwise ``out_i = floor(extra_i * remaining / T)``
    (``T = sum(extra)``, integer arithmetic), and the ``remaining - sum(out)`` units left over go
    one each to the largest requests (ties: lower index).  Then ``sum(out) == remaining`` and
    ``out_i <= extra_i``.
    """
    if remaining < 0:
        raise ValueError(f"remaining must be >= 0, got {remaining}")
    if any(e < 0 for e in extra):
        raise ValueError(f"requests must be >= 0, got {list(extra)}")
    total = sum(extra)
    if total <= remaining:
        return list(extra)
    out = [e * remaining // total for e in extra]
    left = remaining - sum(out)
    for i in sorted(range(len(extra)), key=lambda i: (-extra[i], i)):
        if left == 0:
            break
        if out[i] < extra[i]:
            out[i] += 1
            left -= 1
    return out


Allocator = Callable[[Sequence[float], int, int, int], list[int]]

ALLOCATORS: dict[str, Allocator] = {"uniform": uniform, "knapsack": knapsack, "sqrt": sqrt_rule}


def allocate(name: str, p: Sequence[float], budget: int, g_min: int, g_max: int) -> list[int]:
    """Run the allocator registered as ``name``; a bad name lists the valid ones."""
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; valid: {', '.join(sorted(ALLOCATORS))}")
    return ALLOCATORS[name](p, budget, g_min, g_max)
