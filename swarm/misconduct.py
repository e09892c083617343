"""Misbehaviour found above the swarm layer, which the node reports into the peer scores.

The node's admission stage judges every arriving group against its own verifier; the verdicts
that prove the origin lied map to one of these reasons, and `SwarmPeer.report` charges the
penalty `ScoreParams.penalties[reason]` for it (swarm/scoring.py).
"""

from __future__ import annotations

from enum import Enum


class Misconduct(str, Enum):
    REWARD_MISMATCH = "reward_mismatch"  # a claimed reward that the receiver's own verifier contradicts
