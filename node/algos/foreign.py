"""Foreign-sample corrections: per-row decisions about peers' completions, made once per training
step over the whole batch, before the first optimizer step (issue 13, item 3).

Everything here is a pure function of per-row summaries the trainer already has: each row's
source (0 = ours, k > 0 = the k-th peer origin of the batch, `node.batching.source_ids`), its
advantage, its mean per-token log-likelihood under our proximal policy (the recorded pass) and
under its behaviour policy.  Notation, for row i with valid tokens t = 1..n_i:

    l_i = (1/n_i) sum_t log pi_prox(y_t)                 mean token log-likelihood under us
    r_i = (1/n_i) sum_t (log pi_prox(y_t) - log mu(y_t))  log of the geometric-mean ratio

``r_i`` is GSPO's length-normalised sequence ratio ``log s_i`` (Zheng et al. 2025, "Group Sequence
Policy Optimization"; catalog A4), taken at pi_prox instead of pi_theta: a per-token rate, so it
does not explode with length the way the product ``sum_t`` does.

Four switches (`AlgorithmConfig`, all off by default; none measured yet, see docs/sapo.md):

1. **Likelihood gate** (``foreign_gate``: off | drop | weight).  A foreignness per peer row,
   ``foreign_gate_stat``:
   - ``likelihood``: ``d_i = mean_{own j} l_j - l_i``, how many nats per token the row is less
     likely under us than our own rows of the same batch are.  Needs no behaviour log-probs, so it
     works for text from another model or tokenizer (re-tokenized, behaviour = our policy).
   - ``ratio``: ``d_i = -r_i``, the per-token log-ratio against the sender's behaviour log-probs;
     meaningful only when they are comparable (same tokenizer, ``swarm.peer_logprobs=reuse``).
     For re-tokenized rows ``mu`` is our own policy and ``d_i ~ 0``, so this gate never acts.
   With threshold ``tau`` (``foreign_gate_threshold``, nats per token) and temperature ``T``:
   ``drop`` keeps a peer row iff ``d_i <= tau`` (the row leaves the batch; its group's advantages
   are already computed, as with MC-GRPO's pivot); ``weight`` multiplies its token losses by
   ``g_i = exp(-max(d_i - tau, 0) / T)`` in (0, 1].  Our own rows are never gated.
   Provenance and what is adapted: with ``stat=ratio, tau=0, T=1``, ``g_i = min(1, s_i)``, a
   sequence-level truncated IS weight at cap 1 on GSPO's geometric-mean ratio (TIS: Ionides 2008;
   Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training", which
   truncates token ratios at C = 2); ``drop`` is the masked variant (MIS: weights outside the
   bound are zeroed rather than clamped, same authors' follow-up, [M]) and close in spirit to
   IcePop (Ring-1T, inclusionAI 2025, [M]), which masks *tokens* whose train/sampler probability
   ratio leaves a band.  Ours is sequence-level and one-sided (a row more likely under us than
   under its sampler is not foreign), and the ``likelihood`` statistic replaces the sampler's
   log-probs by our own rows' typical log-likelihood, which is our adaptation for samples whose
   behaviour log-probs we cannot compare [R].

2. **ESS check** (``foreign_ess``: off | scale | drop_foreign).  Row weights
   ``w_i = exp(r_i) * g_i`` (g_i = 1 unless the gate weights), over the rows kept;
   ``ESS / n = (sum w)^2 / (n sum w^2)`` (Kong 1992; as VCPO, mit-han-lab, catalog D4, but on the
   length-normalised ratio: the product weights give ESS ~ 1 for any real mismatch over hundreds of
   tokens).  Below ``foreign_ess_min``: ``scale`` multiplies the step's learning rate by ESS / n
   (a loss multiplier would mostly cancel under Adam's normalisation, so the step size is what
   we scale; VCPO takes sqrt(ESS / n), ``ess_lr``: use one or the other), ``drop_foreign``
   trains this step on our own rows only.

3. **Per-source advantage normalisation** (``source_adv_norm``: off | scale | standardize), over
   the kept rows of each source s (ours, each peer origin):
   - ``scale``: ``A_i <- A_i * rms_all / rms_s`` with ``rms`` the root-mean-square advantage:
     every source gets the batch's overall advantage scale, a peer whose groups are systematically
     easier or harder (or scaled by another estimator setting) cannot dominate, the mean step
     size is unchanged, and signs and within-source ratios are kept.
   - ``standardize``: ``A_i <- (A_i - mean_s) / (std_s + adv_eps)`` (population std), Dr. MAS's
     per-agent normalisation (catalog A18, [R]).  A source with one row gets 0.
   Sources whose advantages are all 0 are left at 0.

4. **Staleness on the origin's clock** lives in `node.algos.offpolicy.corrections`
   (``staleness_clock``); the lag itself is computed in `node.batching.sampler_lags`.

Order in `plan_rows`: gate, then ESS over what the gate kept (with its weights), then per-source
normalisation over the rows that will be trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from node.algos.config import AlgorithmConfig
from node.algos.offpolicy import ess_ratio


@dataclass
class RowPlan:
    """What the trainer does with each row of one training step."""

    keep: Tensor  # [N] bool: rows to train on
    weight: Tensor  # [N] float: multiplies each row's token losses (gate weight; 1 otherwise)
    advantages: Tensor  # [N] float: after per-source normalisation
    lr_scale: float  # multiplies the learning rate of every optimizer step of this training step
    metrics: dict[str, float] = field(default_factory=dict)


def needs_prox(cfg: AlgorithmConfig) -> bool:
    """Whether the switches need the proximal pass (``l_i``, ``r_i``) even under ``loglinear``."""
    return cfg.foreign_gate != "off" or cfg.foreign_ess != "off"


def row_means(values: list[list[float]]) -> Tensor:
    """[N] mean of each row's per-token values (0 for an empty row)."""
    return torch.tensor([sum(v) / len(v) if v else 0.0 for v in values], dtype=torch.float64)


def foreignness(
    prox_mean: Tensor, behavior_mean: Tensor, own: Tensor, stat: str
) -> tuple[Tensor, float | None]:
    """[N] ``d_i`` (nats per token, larger = more foreign) and the own-row reference ``mean l_own``
    (None when the batch has no own rows: then ``likelihood`` cannot judge and returns all 0)."""
    if stat == "ratio":
        return behavior_mean - prox_mean, None
    if stat != "likelihood":
        raise ValueError(f"unknown foreign_gate_stat {stat!r}")
    if not bool(own.any()):
        return torch.zeros_like(prox_mean), None
    ref = float(prox_mean[own].mean())
    return ref - prox_mean, ref


def gate(
    d: Tensor, foreign: Tensor, mode: str, threshold: float, temperature: float
) -> tuple[Tensor, Tensor]:
    """([N] keep bool, [N] weight) of the likelihood gate; own rows (``foreign`` False) pass at 1."""
    keep = torch.ones_like(foreign)
    weight = torch.ones_like(d)
    if mode == "off":
        return keep, weight
    if mode == "drop":
        return ~foreign | (d <= threshold), weight
    if mode == "weight":
        g = torch.exp(-(d - threshold).clamp(min=0) / temperature)
        return keep, torch.where(foreign, g, weight)
    raise ValueError(f"unknown foreign_gate {mode!r}")


def source_normalize(adv: Tensor, sources: Tensor, mode: str, eps: float) -> Tensor:
    """[N] advantages normalised within each source (see the module docstring, switch 3)."""
    if mode == "off" or adv.numel() == 0:
        return adv
    out = adv.clone()
    rms_all = float(adv.to(torch.float64).square().mean().sqrt())
    for s in sources.unique().tolist():
        rows = sources == s
        a = adv[rows].to(torch.float64)
        if mode == "scale":
            rms = float(a.square().mean().sqrt())
            if rms > 0:
                out[rows] = (a * (rms_all / rms)).to(adv.dtype)
        elif mode == "standardize":
            std = float(a.std(unbiased=False)) if a.numel() > 1 else 0.0
            out[rows] = ((a - a.mean()) / (std + eps)).to(adv.dtype)
        else:
            raise ValueError(f"unknown source_adv_norm {mode!r}")
    return out


def _mean(x: Tensor) -> float:
    return float(x.to(torch.float64).mean()) if x.numel() else 0.0


def plan_rows(
    advantages: Tensor,
    sources: Tensor,
    prox_mean: Tensor | None,
    behavior_mean: Tensor | None,
    cfg: AlgorithmConfig,
) -> RowPlan:
    """Gate, ESS check and per-source normalisation for one training step's N rows.

    ``prox_mean`` / ``behavior_mean``: [N] ``l_i`` and ``(1/n_i) sum_t log mu``; None when the
    trainer has no proximal pass (then only per-source normalisation can run; `needs_prox`
    makes the trainer record the pass whenever the gate or the ESS check is on).  Metrics
    (``foreign/*``) are reported when the batch has peer rows or a switch is on.
    """
    n = advantages.numel()
    foreign = sources > 0
    keep = torch.ones(n, dtype=torch.bool)
    weight = torch.ones(n, dtype=torch.float64)
    scale = 1.0
    metrics: dict[str, float] = {}
    on = needs_prox(cfg) or cfg.source_adv_norm != "off"
    if not (on or bool(foreign.any())):
        return RowPlan(keep, weight.to(advantages.dtype), advantages, scale, metrics)
    metrics["foreign/rows"] = float(foreign.sum())
    if prox_mean is not None and behavior_mean is not None:
        own = ~foreign
        d, _ = foreignness(prox_mean, behavior_mean, own, cfg.foreign_gate_stat)
        keep, weight = gate(
            d, foreign, cfg.foreign_gate, cfg.foreign_gate_threshold, cfg.foreign_gate_temperature
        )
        log_r = prox_mean - behavior_mean
        metrics["foreign/mean_seq_logratio"] = _mean(log_r[foreign])
        metrics["foreign/own_seq_logp"] = _mean(prox_mean[own])
        metrics["foreign/peer_seq_logp"] = _mean(prox_mean[foreign])
        gap, _ = foreignness(prox_mean, behavior_mean, own, "likelihood")
        metrics["foreign/likelihood_gap"] = _mean(gap[foreign])
        metrics["foreign/gated_rows"] = float((foreign & (~keep | (weight < 1))).sum())
        metrics["foreign/gate_weight"] = _mean(weight[foreign & keep])
        ess = ess_ratio((log_r + weight.log())[keep])
        metrics["foreign/ess"] = ess
        if cfg.foreign_ess != "off" and ess < cfg.foreign_ess_min:
            if cfg.foreign_ess == "scale":
                scale = ess
            elif cfg.foreign_ess == "drop_foreign":
                metrics["foreign/ess_dropped_rows"] = float((keep & foreign).sum())
                keep = keep & ~foreign
            else:
                raise ValueError(f"unknown foreign_ess {cfg.foreign_ess!r}")
        metrics["foreign/ess_scale"] = scale
    adv = advantages.clone()
    if cfg.source_adv_norm != "off":
        adv[keep] = source_normalize(advantages[keep], sources[keep], cfg.source_adv_norm, cfg.adv_eps)
        for name, rows in (("own", keep & ~foreign), ("peer", keep & foreign)):
            metrics[f"foreign/adv_rms_{name}"] = math.sqrt(_mean(advantages[rows].square()))
    return RowPlan(keep, weight.to(advantages.dtype), adv, scale, metrics)
