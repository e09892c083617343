"""The `algorithm` section of the config: which estimator and loss run, and their knobs.

Pure pydantic, no torch, so that `swarmrl config show` and `--help` stay instant.  Names are
checked against the registries by a test (`tests/unit/test_algos_registry.py`).  Presets with
each paper's defaults live in `configs/algorithms/*.yaml`; `docs/algorithms.md` has one section
per name below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AdvantageName = Literal["grpo", "dr_grpo", "rloo", "remax", "mc_grpo", "gdpo", "w_reinforce", "psr", "nsr"]
ModifierName = Literal["tsallis", "xrpo", "ace"]
LossName = Literal["ppo_clip", "gspo", "cispo"]
AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


class AlgorithmConfig(BaseModel):
    """GRPO-family objective: advantage estimator (+ modifiers) + policy loss + regularisers,
    off-policy corrections, and the DAPO sampling/shaping switches the node applies."""

    model_config = ConfigDict(extra="forbid")

    # --- advantages -------------------------------------------------------------------------
    advantage: AdvantageName = Field("grpo", description="advantage estimator (registry name)")
    adv_scale: Literal["group", "batch", "none"] = Field(
        "group", description="grpo: divide by the group's std, the batch's std, or not at all"
    )
    adv_eps: float = Field(1e-6, gt=0, description="added to the std before dividing")
    adv_modifiers: list[ModifierName] = Field(
        default_factory=list, description="advantage modifiers applied in order after the estimator"
    )
    adv_clip: float | None = Field(None, gt=0, description="clip final advantages to [-c, c]; None = off")
    correct_threshold: float = Field(
        0.5, description="reward >= this counts as correct when the verifier's `correct` flag is absent"
    )
    mc_mad_eps: float = Field(1e-3, gt=0, description="mc_grpo: added to the MAD (paper: 1e-3)")
    mc_clip: float = Field(1.0, gt=0, description="mc_grpo: clip advantages to [-c, c] (MAD is often 0)")
    w_lambda: float = Field(0.1, ge=0, description="w_reinforce: advantage of a correct answer (wrong = -1)")
    tsallis_q: float = Field(0.75, ge=0, le=1, description="tsallis: exponent q of the P_hat^-q weight")
    tsallis_floor: float = Field(0.05, gt=0, le=1, description="tsallis: floor on P_hat before ^-q")
    xrpo_lambda: float = Field(0.2, ge=0, description="xrpo: weight of the novelty bonus")
    xrpo_kappa: float = Field(2.0, gt=0, description="xrpo: cap on the standardised novelty")
    ace_alpha: float = Field(0.5, ge=0, description="ace: strength of the overconfident-error penalty")

    # --- policy loss --------------------------------------------------------------------------
    loss: LossName = Field("ppo_clip", description="policy loss (registry name)")
    clip_low: float = Field(0.2, ge=0, le=1, description="ratio clip below: 1 - clip_low")
    clip_high: float = Field(0.2, ge=0, description="ratio clip above: 1 + clip_high (DAPO: 0.28)")
    dual_clip: float | None = Field(None, gt=1, description="dual-clip constant c for A < 0 (verl: 3)")
    agg: AggMode = Field("token-mean", description="how token losses are aggregated")
    kl_coef: float = Field(0.0, ge=0, description="weight of KL(pi_theta || pi_ref) in the loss; 0 = off")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="per-token KL estimator")
    kl_reward_coef: float = Field(0.0, ge=0, description="weight of the KL penalty subtracted from rewards")
    kl_reward_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="estimator for the reward KL")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight")
    entropy_mask_rho: float | None = Field(
        None, gt=0, le=1, description="train only on the top-rho entropy tokens (80/20 rule: 0.2); None = off"
    )

    # --- off-policy corrections (node/algos/offpolicy.py) -------------------------------------
    prox_logprobs: Literal["recompute", "loglinear"] = Field(
        "recompute",
        description="proximal (old) log-probs: the trainer's forward pass, or AReaL's log-linear approximation",
    )
    is_level: Literal["off", "token", "sequence"] = Field(
        "off", description="behaviour weight sg(pi_prox / mu): off, per token (AReaL decoupled), per sequence"
    )
    is_cap: float | None = Field(None, gt=0, description="truncation threshold C of the behaviour weight")
    is_mode: Literal["truncate", "mask"] = Field(
        "truncate", description="above the cap: clamp the weight to C, or drop the token/sequence"
    )
    m2po_tau: float | None = Field(None, gt=0, description="M2PO second-moment threshold (0.04); None = off")
    minpro: bool = Field(False, description="MinPRO: weight tokens by min(1, min prefix ratio)")
    max_staleness: int | None = Field(
        None, ge=0, description="drop rows sampled more than this many versions ago"
    )
    ess_lr: bool = Field(False, description="VCPO: scale the step's LR by sqrt(ESS / B / ess_base_ratio)")
    ess_base_ratio: float = Field(1.0, gt=0, le=1, description="VCPO: ESS ratio that maps to the full LR")
    staleness_clock: Literal["ours", "origin"] = Field(
        "ours",
        description="max_staleness counts our versions since the row's behaviour log-probs (ours), or, for a "
        "peer's row, the origin's versions since it sampled it: its newest version seen minus the row's (origin)",
    )

    # --- foreign-sample corrections (node/algos/foreign.py; all off: unmeasured) -------------
    foreign_gate: Literal["off", "drop", "weight"] = Field(
        "off", description="peer rows far outside what we would generate: keep, drop, or down-weight"
    )
    foreign_gate_stat: Literal["likelihood", "ratio"] = Field(
        "likelihood",
        description="foreignness of a peer row in nats/token: our own rows' mean token log-likelihood minus "
        "the row's (likelihood), or minus its per-token log-ratio against its behaviour log-probs (ratio; "
        "only meaningful with swarm.peer_logprobs=reuse)",
    )
    foreign_gate_threshold: float = Field(
        1.0, ge=0, description="foreignness (nats/token) above which the gate drops or down-weights"
    )
    foreign_gate_temperature: float = Field(
        1.0,
        gt=0,
        description="weight gate: exp(-(foreignness - threshold) / temperature) above the threshold",
    )
    foreign_ess: Literal["off", "scale", "drop_foreign"] = Field(
        "off",
        description="when ESS/n of the rows' geometric-mean IS weights falls below foreign_ess_min: "
        "scale the step's LR by ESS/n, or train this step on our own rows only",
    )
    foreign_ess_min: float = Field(0.5, gt=0, le=1, description="ESS/n below which foreign_ess acts")
    source_adv_norm: Literal["off", "scale", "standardize"] = Field(
        "off",
        description="normalise advantages within each source (ours, each peer): to the batch's RMS (scale), "
        "or to zero mean and unit std (standardize, Dr. MAS)",
    )

    # --- DAPO extras the node applies (node/algos/dapo.py) ------------------------------------
    dynamic_sampling: bool = Field(False, description="drop zero-variance groups, regenerate to refill")
    filter_signal: Literal["correctness", "reward"] = Field(
        "correctness",
        description="what a zero-variance filter (dynamic sampling, peer admission) compares within a group: "
        "the verifier's correctness (a group all wrong in different formats has no signal) or the total reward",
    )
    max_gen_rounds: int = Field(10, ge=1, description="dynamic sampling: cap on generation rounds per step")
    overlong_buffer_frac: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="overlong shaping: buffer as a fraction of max length (DAPO: 4096/20480=0.2)",
    )
    overlong_penalty: float = Field(1.0, ge=0, description="overlong shaping: penalty reached at max length")
    mask_truncated: bool = Field(
        False, description="drop completions cut off at max length (overlong filtering)"
    )
