"""The compiled engine's sampling step (node/rollout/decode.py `sample`), by hand-worked numbers.

pi = (0.2, 0.5, 0.3) at T = 1 (not sorted, so the nucleus must map ranks back to tokens).  Nucleus
p = 0.7: the mass ranked above each token is (0.8, 0, 0.5), so token 0 (0.8 >= 0.7) is dropped and
tokens 1 and 2 draw 0.5/0.8 = 0.625 and 0.3/0.8 = 0.375.
The whole engine against transformers' `generate` is tests/unit/test_engine_compile.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from node.rollout.decode import sample

PI = torch.tensor([[0.2, 0.5, 0.3]])


def test_greedy_takes_the_argmax_and_records_its_log_prob():
    token, logp = sample(PI.log() + 7.0, 1.0, 1.0, True, None)  # a shift does not change pi
    assert token.tolist() == [1] and logp.item() == pytest.approx(math.log(0.5), abs=1e-6)


def test_temperature_scales_the_recorded_distribution():
    # T = 2: pi_T ~ sqrt(pi) = (0.4472, 0.7071, 0.5477) / 1.7020
    noise = torch.tensor([[0.01, 0.99, 0.01]])  # Gumbel noise favours token 1
    token, logp = sample(PI.log(), 2.0, 1.0, False, noise)
    assert token.tolist() == [1] and logp.item() == pytest.approx(math.log(0.7071 / 1.7020), abs=1e-3)


def test_the_nucleus_drops_the_tail_whatever_the_noise():
    noise = torch.tensor([[1 - 1e-6, 1e-6, 1e-6]])  # without the nucleus, token 0 wins
    assert sample(PI.log(), 1.0, 1.0, False, noise)[0].tolist() == [0]
    token, logp = sample(PI.log(), 1.0, 0.7, False, noise)
    assert token.tolist() in ([1], [2])
    # the recorded log-prob is the full distribution's, not the renormalised nucleus's
    assert logp.item() == pytest.approx(math.log(PI[0, token.item()].item()), abs=1e-6)


def test_draws_follow_pi_renormalised_over_the_nucleus():
    torch.manual_seed(0)
    n = 40_000
    logits = PI.log().expand(n, 3)
    token, _ = sample(logits, 1.0, 0.7, False, torch.rand(n, 3).clamp_(min=1e-20))
    freq = torch.bincount(token, minlength=3).float() / n
    assert freq[0] == 0
    assert abs(freq[1] - 0.625) < 0.01 and abs(freq[2] - 0.375) < 0.01  # 4 s.e. = 0.0097
    token, _ = sample(logits, 1.0, 1.0, False, torch.rand(n, 3).clamp_(min=1e-20))
    freq = torch.bincount(token, minlength=3).float() / n
    assert torch.allclose(freq, PI[0], atol=0.01)
