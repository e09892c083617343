"""Misbehaviour found above the swarm layer, which the node reports into the peer scores.

The node's admission stage judges every arriving group against its own verifier, and checks the
outcome summary its announcer sent for it; the verdicts that prove a peer lied map to one of
these reasons, and `SwarmPeer.report` charges the penalty `ScoreParams.penalties[reason]` for
it (swarm/scoring.py).
"""

from __future__ import annotations

from enum import Enum


class Misconduct(str, Enum):
    REWARD_MISMATCH = "reward_mismatch"  # a claimed reward that the receiver's own verifier contradicts
    # an announced outcome summary (prompt key, success count) that the fetched, re-scored group
    # contradicts (node/exchange.py `summary_agrees`); charged to the peer that signed the announce
    SUMMARY_MISMATCH = "summary_mismatch"
