"""Typed records at the trainer <-> algorithm seam.  Shapes: N completions, B rows, T tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class AdvantageInputs:
    """Everything an advantage estimator may look at, for one training batch."""

    rewards: Tensor  # [N] float: total reward per completion (weighted sum of components)
    group_ids: Tensor  # [N] long: completions of one prompt (one group) share an id
    components: Tensor | None = None  # [N, K] float: each reward component, unweighted
    component_weights: Tensor | None = None  # [K] float: the weights that made `rewards`
    correct: Tensor | None = None  # [N] bool: verifier said correct (PSR/NSR/W-REINFORCE, XRPO, ACE)
    seq_logprobs: Tensor | None = None  # [N] mean token log pi_theta of each completion (XRPO)
    ref_seq_logprobs: Tensor | None = None  # [N] mean token log pi_ref of each completion (ACE)
    baseline_rewards: Tensor | None = None  # [N] reward of the prompt's greedy rollout (ReMax)
    lengths: Tensor | None = None  # [N] completion lengths in tokens (GDPO whitens over tokens if given)


@dataclass
class AdvantageOutputs:
    """What `api.advantages_with_keep` returns: finite advantages and the rows to train on.

    Estimators mark a row "do not train on this" by returning NaN for it (MC-GRPO's median
    pivot); the api turns that into `keep = False` and advantage 0, so nothing NaN leaves.
    """

    advantages: Tensor  # [N] float, finite
    keep: Tensor  # [N] bool: False for rows the trainer must drop before building the batch


@dataclass
class LossInputs:
    """Per-token inputs of a policy loss for one micro-batch.

    `global_tokens` / `global_seqs` count the whole optimizer step's batch, so the loss of
    each micro-batch is already divided by the right denominator and micro-batch losses
    simply add up under gradient accumulation.
    """

    policy_logprobs: Tensor  # [B, T] log pi_theta(y_t), carries grad
    old_logprobs: Tensor  # [B, T] log pi_old(y_t): proximal policy at the start of this step, detached
    behavior_logprobs: Tensor  # [B, T] log mu(y_t): whoever sampled (other peer / older version)
    advantages: Tensor  # [B, T] advantage per token (sequence advantages broadcast)
    mask: Tensor  # [B, T] float {0, 1}: completion tokens that are trained on
    global_tokens: float  # valid tokens in the whole step's batch
    global_seqs: float  # sequences in the whole step's batch
    max_len: int  # constant length normaliser for `seq-mean-token-sum-norm` (Dr. GRPO)
    ref_logprobs: Tensor | None = None  # [B, T] log pi_ref(y_t), detached
    entropy: Tensor | None = None  # [B, T] entropy of pi_theta at each position
    behavior_versions: Tensor | None = None  # [B] or [B, T] long: OUR version that produced behavior_logprobs
    policy_version: int = 0  # version of pi_theta before this step
    sources: Tensor | None = None  # [B] long: 0 = our own sample, k > 0 = the k-th peer in the step's batch
    row_weights: Tensor | None = (
        None  # [B] float, detached: multiplies each row's token losses (foreign gate)
    )
    sampler_lags: Tensor | None = (
        None  # [B] long: versions the row's sampler moved since (origin's clock for peers)
    )


@dataclass
class LossOutputs:
    loss: Tensor  # scalar, already divided by the step's global denominator
    metrics: dict[str, float] = field(default_factory=dict)  # flat, summed over micro-batches


@dataclass(frozen=True)
class Requirements:
    """What the trainer/node must compute for a config (see `api.requirements`): the union of
    what the chosen estimator, modifiers and loss declared when registered, plus what the
    config's coefficients switch on."""

    ref_logprobs: bool  # per-token log pi_ref of each completion before advantages (KL-in-reward, ACE)
    ref_in_loss: bool  # the trainer adds KL(pi_theta || pi_ref) to the loss (needs a reference model)
    entropy: bool  # per-token entropy of pi_theta (entropy bonus or high-entropy mask)
    entropy_grad: bool  # the entropy carries gradient (an entropy bonus)
    old_logprobs: bool  # a proximal forward pass before the update; False with the log-linear approximation
    behavior_versions: bool  # LossInputs.behavior_versions (loglinear proximal, staleness mask)
    baseline_rewards: bool  # one greedy rollout per prompt (ReMax)
    seq_logprobs: bool  # AdvantageInputs.seq_logprobs (XRPO, ACE)
    components: bool  # AdvantageInputs.components/component_weights (GDPO)
    extra_rollouts_per_group: int  # MC-GRPO samples G+1 and trains on G

    @property
    def reference_model(self) -> bool:
        return self.ref_logprobs or self.ref_in_loss
