"""Pass-rate predictor: n-gram embedding, kernel attention by hand, clustered prompts, state round trip."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch

from node.replay.predictor import PassRatePredictor, attention_predict, ngram_embedding

# --- embedding ----------------------------------------------------------------------------------


def test_embedding_deterministic_and_unit_norm():
    a = ngram_embedding("Solve for x: 3x + 5 = 17.")
    b = ngram_embedding("Solve for x: 3x + 5 = 17.")
    assert a.dtype == torch.float32 and a.shape == (512,)
    assert torch.equal(a, b)
    assert a.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert ngram_embedding("abc", dim=64, orders=(1, 2)).shape == (64,)


def test_embedding_same_in_another_process():
    # crc32, not Python's salted hash(): a fresh interpreter (new hash seed) gives the same vector
    code = "from node.replay.predictor import ngram_embedding; print(ngram_embedding('Find all primes p').tolist())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert torch.equal(
        torch.tensor(json.loads(out.stdout), dtype=torch.float32), ngram_embedding("Find all primes p")
    )


def test_embedding_hand_case():
    # "aa" with orders (1,): one unigram "a" counted twice -> log1p(2) in one bucket -> unit vector
    e = ngram_embedding("aa", dim=16, orders=(1,))
    assert (e > 0).sum() == 1 and e.max().item() == 1.0


def test_embedding_empty_is_zero():
    assert torch.equal(ngram_embedding(""), torch.zeros(512))


def test_shared_ngrams_mean_higher_cosine():
    a = ngram_embedding("What is the sum of 12 and 30?")
    b = ngram_embedding("What is the sum of 17 and 45?")
    c = ngram_embedding("Prove that every planar graph is 4-colourable.")
    assert float(a @ b) > 0.8
    assert float(a @ b) > float(a @ c) + 0.3


# --- attention ----------------------------------------------------------------------------------


def test_attention_hand_case():
    # refs e0, e1 orthogonal, query = e0: s = (1, 0); w0 = e^10 / (e^10 + 1) = 1 / (1 + e^-10)
    # p = w0 * 1 + w1 * 0 = 0.9999546
    refs = torch.eye(2)
    p = attention_predict(refs[:1], refs, torch.tensor([1.0, 0.0]), temperature=0.1, top_k=2)
    assert p.shape == (1,)
    assert p.item() == pytest.approx(1 / (1 + math.exp(-10)), abs=1e-12)


def test_attention_top1_is_nearest_exactly():
    g = torch.Generator().manual_seed(0)
    refs = torch.nn.functional.normalize(torch.randn(10, 8, generator=g), dim=1)
    query = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    p_ref = torch.rand(10, generator=g, dtype=torch.float64)
    p = attention_predict(query, refs, p_ref, temperature=0.1, top_k=1)
    nearest = (query @ refs.T).argmax(dim=1)
    assert torch.equal(p, p_ref[nearest])


def test_attention_matches_naive_loop():
    g = torch.Generator().manual_seed(1)
    refs = torch.nn.functional.normalize(torch.randn(7, 4, generator=g), dim=1)
    query = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    p_ref = torch.rand(7, generator=g, dtype=torch.float64)
    got = attention_predict(query, refs, p_ref, temperature=0.5, top_k=3)
    for q in range(3):
        s = [float(query[q] @ refs[k]) for k in range(7)]
        top = sorted(range(7), key=lambda k: -s[k])[:3]
        z = [math.exp(s[k] / 0.5) for k in top]
        want = sum(zk * float(p_ref[k]) for zk, k in zip(z, top)) / sum(z)
        assert got[q].item() == pytest.approx(want, abs=1e-6)


def test_attention_top_k_larger_than_refs():
    # top_k = 5 > K = 2 uses both; equal scores -> plain mean
    refs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p_ref = torch.tensor([0.2, 0.6], dtype=torch.float64)
    p = attention_predict(torch.tensor([[1.0, 0.0]]), refs, p_ref, 0.1, 5)
    assert p.item() == pytest.approx(0.4, abs=1e-12)


def test_attention_no_refs_raises():
    with pytest.raises(ValueError):
        attention_predict(torch.ones(1, 4), torch.zeros(0, 4), torch.zeros(0), 0.1, 4)


# --- predictor ----------------------------------------------------------------------------------


def clustered(rng: random.Random, n: int) -> list[tuple[str, str, float]]:
    """Two families of prompts: sums (easy, p = 0.9) and proofs about n^k (hard, p = 0.1)."""
    out = []
    for i in range(n):
        a, b, k = rng.randint(1, 999), rng.randint(1, 999), rng.randint(2, 9)
        out.append((f"sum{i}", f"What is {a} plus {b}? Answer with a number.", 0.9))
        out.append((f"proof{i}", f"Prove that n^{k} - n is divisible by {k} for every integer n.", 0.1))
    return out


def test_clustered_beats_global_mean():
    rng = random.Random(0)
    pred = PassRatePredictor(max_refs=64, temperature=0.1, top_k=8)
    for pid, text, p in clustered(rng, 20):
        pred.update(pid, text, p)
    held_out = clustered(rng, 10)
    guesses = pred.predict([text for _, text, _ in held_out])
    mae = sum(abs(g - p) for g, (_, _, p) in zip(guesses, held_out)) / len(held_out)
    base = pred.global_mean()
    assert base == pytest.approx(0.5)
    mae_base = sum(abs(base - p) for _, _, p in held_out) / len(held_out)  # 0.4
    assert mae < 0.02 and mae < mae_base / 10


def test_clustered_letters():
    # the brief's toy: "aaaa<i>" at 0.9, "zzzz<i>" at 0.1, held-out members of each
    pred = PassRatePredictor(max_refs=100, temperature=0.1, top_k=8)
    for i in range(20):
        pred.update(f"a{i}", f"aaaa{i}", 0.9)
        pred.update(f"z{i}", f"zzzz{i}", 0.1)
    got = pred.predict([f"aaaa{i}" for i in range(30, 40)] + [f"zzzz{i}" for i in range(30, 40)])
    mae = sum(abs(g - 0.9) for g in got[:10]) / 20 + sum(abs(g - 0.1) for g in got[10:]) / 20
    assert mae < 0.05  # the global mean (0.5) is off by 0.4


def test_none_without_refs():
    pred = PassRatePredictor(max_refs=4, temperature=0.1, top_k=2)
    assert pred.predict(["anything", "else"]) == [None, None]
    assert pred.global_mean() is None and len(pred) == 0
    pred.update("x", "anything", 0.25)
    assert pred.predict([]) == []
    assert pred.predict(["anything"]) == [0.25]


def test_eviction_and_refresh():
    pred = PassRatePredictor(max_refs=3, temperature=0.1, top_k=2)
    for i in range(3):
        pred.update(f"id{i}", f"text {i}", i / 10)
    pred.update("id0", "text 0 again", 0.5)  # refresh: id0 becomes the most recent
    pred.update("id3", "text 3", 0.3)  # evicts the least recent, now id1
    assert len(pred) == 3
    assert [pid for pid, _, _ in pred.state_dict()] == ["id2", "id0", "id3"]
    assert pred.state_dict()[1] == ("id0", "text 0 again", 0.5)
    assert pred.global_mean() == pytest.approx((0.2 + 0.5 + 0.3) / 3)


def test_query_cache_is_bounded():
    pred = PassRatePredictor(max_refs=2, temperature=0.1, top_k=2)
    pred.update("a", "alpha", 0.5)
    pred.predict([f"query {i}" for i in range(50)])
    assert len(pred._cache) <= 8


def test_predictions_follow_updates():
    pred = PassRatePredictor(max_refs=8, temperature=0.1, top_k=1)
    pred.update("a", "What is 2 plus 2?", 0.9)
    pred.update("b", "Prove the Riemann hypothesis.", 0.0)
    assert pred.predict(["What is 3 plus 2?"]) == [0.9]
    pred.update("a", "What is 2 plus 2?", 0.6)  # the cached stack must be rebuilt
    assert pred.predict(["What is 3 plus 2?"]) == [0.6]


def test_state_round_trip_bit_for_bit():
    rng = random.Random(3)
    pred = PassRatePredictor(max_refs=25, temperature=0.1, top_k=8)
    for pid, text, _ in clustered(rng, 20):
        pred.update(pid, text, rng.random())  # 40 updates, 15 evicted
    queries = [text for _, text, _ in clustered(rng, 5)]
    before = pred.predict(queries)
    state = json.loads(json.dumps(pred.state_dict()))  # as a checkpoint would store it
    fresh = PassRatePredictor(max_refs=25, temperature=0.1, top_k=8)
    fresh.update("stale", "replaced by the load", 1.0)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == pred.state_dict()
    assert fresh.predict(queries) == before
    assert fresh.global_mean() == pred.global_mean()


def test_bad_inputs():
    pred = PassRatePredictor(max_refs=2, temperature=0.1, top_k=2)
    with pytest.raises(ValueError):
        pred.update("a", "text", 1.5)
    with pytest.raises(ValueError):
        pred.update("a", "text", float("nan"))
    with pytest.raises(ValueError):
        pred.load_state_dict([("a", "text")])
    with pytest.raises(ValueError):
        PassRatePredictor(max_refs=0, temperature=0.1, top_k=2)
