"""Foreign-sample corrections (node/algos/foreign.py): each piece hand-worked, the vectorised
normalisation against a naive loop, and the defaults leaving a batch untouched."""

from __future__ import annotations

import math

import pytest
import torch

from node.algos.config import AlgorithmConfig
from node.algos.foreign import foreignness, gate, needs_prox, plan_rows, row_means, source_normalize


def close(a, b, tol=1e-5) -> None:
    assert torch.allclose(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol
    ), (a, b)


def test_row_means():
    close(row_means([[-1.0, -3.0], [], [-0.5]]), [-2.0, 0.0, -0.5])


def test_likelihood_foreignness_hand_worked():
    # own rows l = -1, -2: reference -1.5; d = -1.5 - l = [-0.5, 0.5, 2.5, 0.0]
    prox = torch.tensor([-1.0, -2.0, -4.0, -1.5], dtype=torch.float64)
    own = torch.tensor([True, True, False, False])
    d, ref = foreignness(prox, prox, own, "likelihood")
    assert ref == -1.5
    close(d, [-0.5, 0.5, 2.5, 0.0])
    # no own row in the batch: nothing to compare with, nobody is foreign
    d, ref = foreignness(prox, prox, torch.zeros(4, dtype=torch.bool), "likelihood")
    assert ref is None
    close(d, [0, 0, 0, 0])


def test_ratio_foreignness_hand_worked():
    # r = prox - mu per token: 0 and -2.5 -> d = [0, 2.5] (a row we find 2.5 nats/token less likely)
    d, _ = foreignness(
        torch.tensor([-1.0, -3.0]), torch.tensor([-1.0, -0.5]), torch.tensor([True, False]), "ratio"
    )
    close(d, [0.0, 2.5])


def test_gate_hand_worked():
    d = torch.tensor([-0.5, 0.5, 2.5, 0.0, 3.0], dtype=torch.float64)
    foreign = torch.tensor([False, False, True, True, False])  # row 4 is ours: never gated
    keep, w = gate(d, foreign, "drop", 1.0, 1.0)
    assert keep.tolist() == [True, True, False, True, True]
    close(w, [1, 1, 1, 1, 1])
    # weight, tau = 1, T = 2: row 2 exp(-(2.5 - 1) / 2) = exp(-0.75) = 0.472367; row 3 below tau: 1
    keep, w = gate(d, foreign, "weight", 1.0, 2.0)
    assert keep.all()
    close(w, [1, 1, 0.472367, 1, 1])
    keep, w = gate(d, foreign, "off", 1.0, 2.0)
    assert keep.all() and (w == 1).all()
    # tau = 0, T = 1 on the ratio statistic is min(1, s_i): GSPO's geometric-mean ratio truncated at 1
    s = torch.tensor([0.3, 1.7], dtype=torch.float64)
    _, w = gate(-s.log(), torch.tensor([True, True]), "weight", 0.0, 1.0)
    close(w, [0.3, 1.0])


def test_source_normalize_scale_hand_worked():
    # own [1, -1] (rms 1), peer [2, -2] (rms 2); batch rms sqrt(10 / 4) = 1.581139: both sources to it
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0])
    src = torch.tensor([0, 0, 1, 1])
    close(source_normalize(adv, src, "scale", 1e-6), [1.581139, -1.581139, 1.581139, -1.581139])
    # a source of zeros stays zero; the other is scaled to the batch rms sqrt(2 / 4) = 0.707107
    close(
        source_normalize(torch.tensor([1.0, -1.0, 0.0, 0.0]), src, "scale", 1e-6), [0.707107, -0.707107, 0, 0]
    )
    close(source_normalize(adv, src, "off", 1e-6), adv)


def test_source_normalize_standardize_hand_worked():
    # own [1, -1]: mean 0, std 1; peer [3, 1]: mean 2, std 1 -> [1, -1]; a lone row (source 2) -> 0
    adv = torch.tensor([1.0, -1.0, 3.0, 1.0, 5.0])
    out = source_normalize(adv, torch.tensor([0, 0, 1, 1, 2]), "standardize", 1e-6)
    close(out, [1, -1, 1, -1, 0])


def test_source_normalize_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(40, generator=g, dtype=torch.float64) * 3
    src = torch.randint(0, 4, (40,), generator=g)
    rms_all = math.sqrt(sum(a * a for a in adv.tolist()) / 40)
    for mode in ("scale", "standardize"):
        want = []
        for a, s in zip(adv.tolist(), src.tolist()):
            mine = [x for x, t in zip(adv.tolist(), src.tolist()) if t == s]
            mean = sum(mine) / len(mine)
            if mode == "scale":
                want.append(a * rms_all / math.sqrt(sum(x * x for x in mine) / len(mine)))
            else:
                std = math.sqrt(sum((x - mean) ** 2 for x in mine) / len(mine))
                want.append((a - mean) / (std + 1e-6))
        close(source_normalize(adv, src, mode, 1e-6), want, tol=1e-9)


def plan_batch():
    """Two own rows (l = -1, -2) and two recomputed peer rows (l = -1.5, -3.5; mu = our policy, r = 0).
    Likelihood reference -1.5, so the peers' d = [0, 2]."""
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0])
    src = torch.tensor([0, 0, 1, 1])
    prox = torch.tensor([-1.0, -2.0, -1.5, -3.5], dtype=torch.float64)
    return adv, src, prox, prox.clone()


def test_defaults_leave_a_batch_untouched():
    cfg = AlgorithmConfig()
    assert not needs_prox(cfg) and cfg.source_adv_norm == "off" and cfg.staleness_clock == "ours"
    adv, src, prox, beh = plan_batch()
    own = torch.zeros(4, dtype=torch.long)
    plan = plan_rows(adv, own, prox, beh, cfg)
    assert plan.keep.all() and (plan.weight == 1).all() and plan.lr_scale == 1.0 and plan.metrics == {}
    close(plan.advantages, adv)
    # peer rows with everything off: untouched, but diagnosed
    plan = plan_rows(adv, src, prox, beh, cfg)
    assert plan.keep.all() and (plan.weight == 1).all() and plan.lr_scale == 1.0
    close(plan.advantages, adv)
    assert plan.metrics["foreign/rows"] == 2 and plan.metrics["foreign/gated_rows"] == 0
    close(plan.metrics["foreign/likelihood_gap"], 1.0)  # mean of [0, 2]
    close(plan.metrics["foreign/ess"], 1.0)


def test_plan_weight_gate_and_ess_hand_worked():
    # tau = 0.5, T = 1: peer weights [1, exp(-1.5) = 0.223130]; r = 0 everywhere, so w = gate weights
    # ESS / n = (3.223130)^2 / (4 * (3 + 0.049787)) = 10.388568 / 12.199148 = 0.851582
    adv, src, prox, beh = plan_batch()
    cfg = AlgorithmConfig(
        foreign_gate="weight", foreign_gate_threshold=0.5, foreign_ess="scale", foreign_ess_min=0.9
    )
    plan = plan_rows(adv, src, prox, beh, cfg)
    close(plan.weight, [1, 1, 1, 0.223130])
    assert plan.keep.all() and plan.metrics["foreign/gated_rows"] == 1
    close(plan.metrics["foreign/ess"], 0.851582)
    close(plan.lr_scale, 0.851582)  # below 0.9: the step shrinks by ESS / n
    close(plan.metrics["foreign/gate_weight"], (1 + 0.223130) / 2)
    assert plan_rows(adv, src, prox, beh, cfg.model_copy(update={"foreign_ess_min": 0.8})).lr_scale == 1.0


def test_plan_drop_gate_then_ess_drop_foreign():
    adv, src, prox, beh = plan_batch()
    cfg = AlgorithmConfig(foreign_gate="drop", foreign_gate_threshold=1.0)
    plan = plan_rows(adv, src, prox, beh, cfg)
    assert plan.keep.tolist() == [True, True, True, False] and plan.metrics["foreign/gated_rows"] == 1
    # ratio statistic: a reused peer row claims mu = -0.5 per token where we give it -3.5 -> d = 3 > 1
    beh2 = beh.clone()
    beh2[3] = -0.5
    plan = plan_rows(adv, src, prox, beh2, cfg.model_copy(update={"foreign_gate_stat": "ratio"}))
    assert plan.keep.tolist() == [True, True, True, False]
    close(plan.metrics["foreign/mean_seq_logratio"], -1.5)  # mean of [0, -3]
    # ESS on the reused row's weight exp(-3) = 0.049787 with the gate off: (3.049787)^2 / (4 * 3.002479)
    # = 0.774454 < 0.8 -> drop_foreign trains on our rows only
    cfg = AlgorithmConfig(foreign_ess="drop_foreign", foreign_ess_min=0.8)
    plan = plan_rows(adv, src, prox, beh2, cfg)
    close(plan.metrics["foreign/ess"], 0.774454)
    assert plan.keep.tolist() == [True, True, False, False] and plan.lr_scale == 1.0
    assert plan.metrics["foreign/ess_dropped_rows"] == 2


def test_plan_source_norm_runs_over_kept_rows():
    # the gate drops peer row 3, so the peer source is the lone row [2] -> scale: batch rms over
    # [1, -1, 2] = sqrt(2), peer rms 2 -> 2 * sqrt(2) / 2 = 1.414214; own rms 1 -> x sqrt(2)
    adv, src, prox, beh = plan_batch()
    cfg = AlgorithmConfig(foreign_gate="drop", foreign_gate_threshold=1.0, source_adv_norm="scale")
    plan = plan_rows(adv, src, prox, beh, cfg)
    close(plan.advantages[:3], [1.414214, -1.414214, 1.414214])
    close(plan.metrics["foreign/adv_rms_peer"], 2.0)
    # without log-probs (log-linear proximal, no pass) only the normalisation can run
    plan = plan_rows(adv, src, None, None, AlgorithmConfig(source_adv_norm="scale"))
    close(plan.advantages, [1.581139, -1.581139, 1.581139, -1.581139])


@pytest.mark.parametrize("key", ["foreign_gate", "foreign_ess", "source_adv_norm", "staleness_clock"])
def test_bad_switch_values_are_refused(key):
    with pytest.raises(ValueError):
        AlgorithmConfig.model_validate({key: "sometimes"})


def test_gate_and_ess_check_need_the_proximal_pass_even_under_loglinear():
    from node.algos.api import requirements

    assert not requirements(AlgorithmConfig(prox_logprobs="loglinear")).old_logprobs
    for kw in ({"foreign_gate": "drop"}, {"foreign_ess": "scale"}):
        assert requirements(AlgorithmConfig(prox_logprobs="loglinear", **kw)).old_logprobs
    assert not requirements(AlgorithmConfig(prox_logprobs="loglinear", source_adv_norm="scale")).old_logprobs
