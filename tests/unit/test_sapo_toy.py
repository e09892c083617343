"""The pure half of the toy SAPO agent (`benchmarks/sapo/sharing.py`), with hand-worked numbers:
completions survive the text codec, external groups are re-scored from the question alone (a
liar's claims are ignored unless trusting claims), zero-variance and stale groups are dropped,
selection respects the per-peer cap and is uniform, and recomputed log-probs equal the
sampler's.  No network, a random tiny model: well under a second."""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.sapo.sharing import (  # noqa: E402
    Candidate,
    admit,
    completion_text,
    completion_tokens,
    drift,
    external_rollouts,
    fresh,
    liar_rewrite,
    parse_question,
    problems_of,
    select_external,
    to_wire,
    usable,
)
from benchmarks.toy.seqmodel import DIGIT0, EOS, FMT, PAD, PROMPT_LEN, GPTConfig, TinyGPT, sample, score  # noqa: E402
from protocol import TaskRef, token_array  # noqa: E402


def row(*toks: int) -> torch.Tensor:
    return torch.tensor(list(toks) + [PAD] * (8 - len(toks)))


def d(text: str) -> list[int]:
    return [DIGIT0 + int(c) for c in text]


# 123 + 456 = 579, written least significant digit first: "975".
RIGHT_FMT, RIGHT_BARE, WRONG_FMT, WRONG_SHORT = (row(FMT, *d("975"), EOS), row(*d("975"), EOS),
                                                  row(FMT, *d("976"), EOS), row(FMT, *d("97"), EOS))  # fmt: skip


def test_text_codec_round_trip_and_rejects_malformed() -> None:
    assert completion_text(RIGHT_FMT) == ">975"
    assert torch.equal(completion_tokens(">975"), RIGHT_FMT)
    truncated = torch.tensor(d("12345678"))  # no EOS within MAX_NEW = 8: sent whole, not closed
    assert completion_text(truncated) == "12345678"
    assert torch.equal(completion_tokens("12345678"), truncated)
    assert torch.equal(completion_tokens(""), row(EOS))
    for bad in ("123456789", ">9$7", "x12", ">9 7"):
        assert completion_tokens(bad) is None


def test_parse_question() -> None:
    assert parse_question("0123+0456") == (123, 456)
    for bad in ("123+0456", "0123-0456", "0123+0456+1", "0123+045\uff16", None, ""):
        assert parse_question(bad) is None


def group(comps: list[torch.Tensor], claims: list[float], q: tuple[int, int] = (123, 456)):
    return to_wire(q[0], q[1], torch.stack(comps), torch.tensor(claims), "s", "tiny", 3)


def test_admit_rescores_locally_and_ignores_a_liars_claims() -> None:
    # Truth: right (formatted), right (bare digits also count), wrong digit, missing digit.
    liar = group([RIGHT_FMT, RIGHT_BARE, WRONG_FMT, WRONG_SHORT], [0.0, 0.0, 1.0, 1.0])
    c = admit(liar, "peerL", round_=5)
    assert c is not None and (c.a, c.b, c.round) == (123, 456, 5)
    assert c.truth.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert c.rewards.tolist() == [1.0, 1.0, 0.0, 0.0]  # the claims [0, 0, 1, 1] are not used
    assert c.lies == 4 and c.informative
    trusting = admit(liar, "peerL", round_=5, trust_claims=True)
    assert trusting is not None and trusting.rewards.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_admit_drops_malformed_groups_and_flags_zero_variance() -> None:
    assert admit(group([RIGHT_FMT, RIGHT_BARE], [1.0, 1.0]), "p", 0).informative is False
    g = group([RIGHT_FMT, WRONG_FMT], [1.0, 0.0])
    assert admit(replace(g, task=TaskRef(question="0123+0456", verifier="exact")), "p", 0) is None
    assert admit(replace(g, task=TaskRef(question="123+456", verifier="toy_add")), "p", 0) is None
    garbled = replace(g, completions=(g.completions[0], replace(g.completions[1], text=">9$7")))
    assert admit(garbled, "p", 0) is None


def cand(origin: str, rnd: int = 0) -> Candidate:
    z = torch.zeros(2)
    return Candidate(origin, 1, 2, torch.stack([RIGHT_FMT, WRONG_FMT]), torch.tensor([1.0, 0.0]), z, z, rnd)


def test_select_respects_per_peer_cap() -> None:
    pool = [cand("A") for _ in range(5)] + [cand("B")]
    assert usable(pool, 2) == 3
    for seed in range(20):
        taken = select_external(pool, 4, 2, random.Random(seed))
        assert sorted(c.origin for c in taken) == ["A", "A", "B"]  # A capped at 2, only one B
    assert len(select_external(pool, 4, 5, random.Random(0))) == 4


def test_select_is_uniform() -> None:
    pool = [cand(o) for o in "ABCD"]
    counts = {o: 0 for o in "ABCD"}
    for seed in range(2000):
        for c in select_external(pool, 2, 1, random.Random(seed)):
            counts[c.origin] += 1
    # Each is chosen with probability 2/4: 1000 of 2000 expected, s.d. ~22.
    assert all(abs(n - 1000) < 110 for n in counts.values()), counts


def test_fresh_drops_groups_older_than_max_age() -> None:
    pool = [cand("A", 3), cand("A", 5), cand("A", 6)]
    assert [c.round for c in fresh(pool, 7, max_age=2)] == [5, 6]


def test_liar_rewrite_claims_the_opposite_of_the_truth() -> None:
    gen = torch.Generator().manual_seed(0)
    problems = problems_of([(123, 456)] * 6)
    comp = torch.stack([RIGHT_FMT] * 6)
    out, claims = liar_rewrite(problems, comp, gen)
    truth = score(problems, out)[0].float()
    assert torch.equal(claims, 1 - truth)
    assert 0 < int(truth.sum()) < 6  # some answers replaced by wrong ones, some kept
    c = admit(to_wire(123, 456, out, claims, "s", "m", 0), "liar", 0)
    assert c is not None and torch.equal(c.rewards, truth) and c.lies == 6


def test_recomputed_logprobs_equal_the_samplers() -> None:
    """A group sent through the wire and recomputed by the same weights gives back the sampler's
    tokens, mask and behaviour log-probs: the receiver trains on exactly what was sampled."""
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(n_layer=1, d_model=32))
    gen = torch.Generator().manual_seed(1)
    roll = sample(model, problems_of([(123, 456), (7, 8)]), 4, gen)
    comp = roll.tokens[:, PROMPT_LEN:]
    cands = []
    for g in range(2):
        rows = roll.group_ids == g
        a, b = int(roll.problems.a[rows][0]), int(roll.problems.b[rows][0])
        wire = to_wire(a, b, comp[rows], roll.correct[rows].float(), "s", "m", 0)
        c = admit(wire, "peer", 0)
        assert c is not None
        cands.append(c)
    ext = external_rollouts(model, cands, version=0)
    assert torch.equal(ext.tokens, roll.tokens)
    assert torch.equal(ext.mask, roll.mask)
    assert torch.equal(ext.correct, roll.correct) and torch.equal(ext.truncated, roll.truncated)
    assert torch.allclose(ext.behavior_logprobs, roll.behavior_logprobs, atol=1e-5)


def test_all_correct_claims_from_a_liar_give_no_gradient_either_way() -> None:
    """Why our liar inverts claims instead of claiming 1.0 everywhere: a constant claim is a
    zero-variance group, dropped even by a receiver that trusts claims."""
    c = admit(
        group([WRONG_FMT, WRONG_SHORT, WRONG_FMT, WRONG_SHORT], [1.0] * 4), "liar", 0, trust_claims=True
    )
    assert c is not None and not c.informative


def test_peer_logprobs_travel_with_the_group_and_drift_is_measured() -> None:
    """A sender's behaviour log-probs arrive intact (for `--peer-logprobs reuse`), a token list
    that disagrees with the text is refused, and `drift` compares them with our recomputation."""
    torch.manual_seed(0)
    sender, receiver = TinyGPT(GPTConfig(n_layer=1, d_model=32)), TinyGPT(GPTConfig(n_layer=1, d_model=32))
    roll = sample(sender, problems_of([(123, 456)]), 4, torch.Generator().manual_seed(1))
    comp = roll.tokens[:, PROMPT_LEN:]
    wire = to_wire(123, 456, comp, roll.correct.float(), "s", "m", 0, roll.behavior_logprobs)
    c = admit(wire, "peer", 0)
    assert c is not None and c.behavior is not None
    assert torch.allclose(c.behavior, roll.behavior_logprobs, atol=1e-6)
    recomputed = external_rollouts(receiver, [c], version=0)
    assert drift(recomputed.behavior_logprobs, c.behavior, recomputed.mask)["ext_far_tokens"] > 0
    first = wire.completions[0]
    forged = replace(first, token_ids=token_array([DIGIT0] * len(first.token_ids)))
    c2 = admit(replace(wire, completions=(forged, *wire.completions[1:])), "peer", 0)
    assert c2 is not None and c2.behavior is None  # tokens disagree with the text: recompute


def test_drift_hand_worked() -> None:
    # Two sequences: log-ratios (0.5, -0.1 | masked 3.0) and (0.0, -1.0): sums 0.4 and -1.0,
    # mean -0.3; token ratios e^0.5 = 1.65, e^-0.1 = 0.905, 1, e^-1 = 0.37 -> 2 of 4 off by > 0.2.
    local = torch.tensor([[0.5, -0.1, 3.0], [0.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = drift(local, torch.zeros(2, 3), mask)
    assert out["ext_seq_logratio"] == pytest.approx(-0.3)
    assert out["ext_far_tokens"] == pytest.approx(0.5)
