"""What a peer's group is worth to this node: the score `swarm.take: information` ranks the pool by.

SAPO (Amini et al. 2025) takes a step's J peer groups uniformly from what was shared.  Uniform
choice ignores what the receiver already knows: a group on a prompt we always solve teaches
nothing, while a peer's success on a prompt we fail is the "aha moment" the paper credits for
the gain.  This module scores one admitted group for one receiver; `ReplayBuffer.take_best`
takes the best J with per-origin caps and some uniform exploration.

The value of a group of n completions with success fraction s (the filter signal, clipped to
[0, 1], as the difficulty table counts it) on a prompt whose pass rate we estimate at p_hat:

    value = signal x (1 - p_hat) x 2 sqrt(s (1 - s)) x exp(-lag / tau) x r x exp(-drift / scale)

- signal: 1 if the group has variance on `algorithm.filter_signal`, else 0 (no gradient;
  admission already refuses such groups, this keeps the function honest on its own);
- (1 - p_hat): how often we fail the prompt.  A prompt we solve teaches little, one we fail
  teaches most if the group holds a success, which a group with signal always does;
- 2 sqrt(s (1 - s)): the group's mean |advantage| under GRPO's std-normalised advantages
  (successes get (1 - s)/sigma, failures -s/sigma, sigma = sqrt(s (1 - s)); the mean of the
  absolute values is 2 s (1 - s) / sigma).  It is 1 at s = 1/2 and 0 without signal, so it
  measures how hard the group pushes, whatever the receiver knows;
- exp(-lag / tau): lag is how many of the origin's own versions the group is behind the newest
  group seen from that origin (the origin's counter is only compared with itself);
- r: the origin's reliability (`node/replay/peer_stats.py`: admitted vs proven lies, Laplace mean);
- exp(-drift / scale): drift is the origin's moving average of how much less likely its text
  is under our policy than our own samples (nats per token, `peer_stats.py`); `scale` is
  `swarm.take_drift_scale` (0 turns the term off).

Known departures: p_hat is the replay layer's Beta mean, which also folds in admitted peers'
groups and outcome summaries at weight `replay.rho`: our estimate, not our policy alone.  Drift
is measured on the groups the node takes (a forward pass it makes anyway), not per candidate, so
an origin's drift is known only after some of its groups were taken; exploration
(`swarm.take_epsilon`) keeps that evidence coming.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from node.replay.buffer import BufferEntry
from node.replay.layer import success_fraction


def peer_value(
    p_hat: float, success: float, has_signal: bool, lag: int, tau: float, reliability: float = 1.0,
    drift_factor: float = 1.0,
) -> float:
    """The formula in the module docstring; `success` and `p_hat` are clipped to [0, 1];
    `drift_factor` is exp(-drift / scale) (`peer_stats.drift_factor`)."""
    if not has_signal:
        return 0.0
    s = min(max(success, 0.0), 1.0)
    fail = 1.0 - min(max(p_hat, 0.0), 1.0)
    decay = math.exp(-max(lag, 0) / tau)
    return fail * 2.0 * math.sqrt(s * (1.0 - s)) * decay * reliability * drift_factor


def entry_values(
    entries: Sequence[BufferEntry],
    p_hats: Sequence[float],
    newest: Mapping[str, int],
    signal: str | None,
    tau: float,
    reliability: Mapping[str, float] | None = None,
    drift: Mapping[str, float] | None = None,
) -> list[float]:
    """`peer_value` of each pooled entry; `p_hats[i]` is our pass-rate estimate of entry i's prompt,
    `newest[origin]` the newest version seen from that origin (its lag is 0 when none is known);
    `reliability` and `drift` (the factor exp(-drift / scale)) by origin, 1 where absent."""
    rel, dft = reliability or {}, drift or {}
    return [
        peer_value(
            p,
            success_fraction(e.group, signal),
            e.group.has_signal(signal),
            newest.get(e.origin, e.origin_version) - e.origin_version,
            tau,
            rel.get(e.origin, 1.0),
            dft.get(e.origin, 1.0),
        )
        for e, p in zip(entries, p_hats, strict=True)
    ]
