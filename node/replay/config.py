"""The `replay` section of the config: which prompts to generate, with what G, and what to
replay.  Pure pydantic, no torch.  `docs/replay.md` explains each switch; the defaults
(`uniform` everything, no replay) reproduce the node without this layer exactly (a test pins
it: `tests/unit/test_replay_pin.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SelectName = Literal["uniform", "mopps", "dots", "curriculum", "gdro"]
AllocateName = Literal["uniform", "knapsack", "dars", "sqrt"]


class ReplayConfig(BaseModel):
    """Difficulty estimates per prompt (a decayed Beta posterior, MoPPS/BOTS), a predictor for
    prompts never seen (DOTS-style attention), prompt selection, rollout allocation under a
    fixed budget of completions per step, and rollout replay of recent local groups (DOTS-RR)."""

    model_config = ConfigDict(extra="forbid")

    # --- selection ----------------------------------------------------------------------------
    select: SelectName = Field("uniform", description="prompt selection strategy (node/replay/select.py)")
    target: float = Field(0.5, gt=0, lt=1, description="mopps/dots: the pass rate selection aims at")
    candidates: int = Field(
        4,
        ge=1,
        description="candidate prompts drawn per selected one (MoPPS ts_ratio); the selector picks among them",
    )
    dots_tau: float = Field(
        1e-3, gt=0, description="dots: softmax temperature over -|p - target| (1e-3: almost greedy)"
    )
    band_start: float = Field(
        0.8, gt=0, lt=1, description="curriculum: centre of the pass-rate band at step 0"
    )
    band_width: float = Field(0.2, gt=0, le=1, description="curriculum: the band is centre +- width / 2")
    band_step: float = Field(0.02, gt=0, le=1, description="curriculum: how far the centre moves per step")
    gdro_bins: int = Field(5, ge=2, description="gdro: equal-width pass-rate bins")
    gdro_eta: float = Field(
        2.0, gt=0, description="gdro: inverse temperature of the adversary, q_b ∝ exp(eta L_b)"
    )
    gdro_ema: float = Field(0.9, ge=0, lt=1, description="gdro: EMA factor of each bin's loss")
    gdro_explore: float = Field(
        0.1, ge=0, le=1, description="gdro: mix of the uniform distribution over bins"
    )

    # --- difficulty estimates -----------------------------------------------------------------
    prior: tuple[float, float] = Field(
        (1.0, 1.0), description="Beta(alpha0, beta0) prior of a prompt's pass rate"
    )
    decay: float = Field(
        0.5,
        ge=0,
        le=1,
        description="MoPPS lambda: alpha <- lambda alpha + (1 - lambda) alpha0 + n s on each "
        "observation (1 = never forget)",
    )
    rho: float = Field(
        0.3, ge=0, le=1, description="weight of evidence from groups other policies sampled (peers)"
    )
    predictor: Literal["ngram", "none"] = Field(
        "ngram",
        description="pass rate of prompts never seen: attention over hashed character n-grams; none = prior mean",
    )
    predict_strength: float = Field(
        2.0, ge=0, description="pseudo-counts a prediction is worth as the prior of an unseen prompt"
    )
    predictor_temperature: float = Field(
        0.1, gt=0, description="softmax temperature over cosine similarities"
    )
    predictor_top_k: int = Field(32, ge=1, description="reference prompts each prediction attends to")
    predictor_refs: int = Field(2048, ge=1, description="most recently observed prompts kept as references")

    # --- retirement ---------------------------------------------------------------------------
    retire_solved: float | None = Field(
        0.9,
        gt=0,
        le=1,
        description="skip prompts whose estimated pass rate is at least this (no-positive-"
        "resampling); None = never",
    )
    retire_hopeless: float | None = Field(
        0.05, ge=0, lt=1, description="skip prompts estimated at or below this; None = never"
    )
    retire_evidence: float = Field(
        8.0, ge=0, description="observations (pseudo-counts) needed before retiring"
    )
    revisit: float = Field(0.1, ge=0, le=1, description="chance a retired prompt is offered again anyway")

    # --- allocation ---------------------------------------------------------------------------
    allocate: AllocateName = Field("uniform", description="completions per prompt under the step's budget")
    min_group: int = Field(2, ge=2, description="smallest G allocation gives a prompt")
    max_group: int = Field(32, ge=2, description="largest G allocation gives a prompt")
    dars_stage1: float = Field(
        0.5, gt=0, le=1, description="dars: share of the budget spent in the first stage"
    )
    dars_schedule: Literal["et", "hw"] = Field("et", description="dars: equal treatment or hardness-weighted")

    # --- rollout replay (DOTS-RR) -------------------------------------------------------------
    replay_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of each step's groups taken from recent local groups (0 = off)"
    )
    capacity: int = Field(512, ge=1, description="local groups kept for replay (oldest evicted first)")
    max_uses: int = Field(1, ge=1, description="times a stored group may be replayed")
    max_version_lag: int = Field(
        4, ge=0, description="replay only groups at most this many of our versions old"
    )

    @model_validator(mode="after")
    def _coherent(self) -> ReplayConfig:
        if self.min_group > self.max_group:
            raise ValueError(f"replay.min_group ({self.min_group}) > replay.max_group ({self.max_group})")
        if (
            self.retire_solved is not None
            and self.retire_hopeless is not None
            and self.retire_hopeless >= self.retire_solved
        ):
            raise ValueError("replay.retire_hopeless must be below replay.retire_solved")
        return self

    @property
    def active(self) -> bool:
        """False when everything is uniform and nothing is replayed: today's node."""
        return self.select != "uniform" or self.allocate != "uniform" or self.replay_fraction > 0
