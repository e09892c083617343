"""The transformers rollout engine on the tiny model: shapes, masks, logprob agreement."""

from __future__ import annotations

import pytest
import torch

from node.batching import first_completion_position, pack, token_logprobs
from node.policy import load_policy
from node.records import Request, SamplingParams
from node.rollout import Renderer, build_engine
from node.tasks import build_tasks


@pytest.fixture
def parts(tiny_config):
    cfg = tiny_config("rollout.max_new_tokens=12")
    policy = load_policy(cfg.model)
    task = build_tasks(cfg.tasks)[0]
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    engine = build_engine(cfg.rollout, policy, renderer)
    engine.renderer = renderer  # for _prompts
    return cfg, policy, task, engine


def _prompts(task, n, engine):
    # different lengths, so the batch really needs left padding
    prompts = [task.prompt(i) for i in range(40)]
    prompts.sort(key=lambda p: len(p.question))
    return engine.renderer.requests([prompts[0], prompts[-1]][:n])


def test_groups_have_g_completions_with_aligned_fields(parts):
    cfg, policy, task, engine = parts
    torch.manual_seed(0)
    groups = engine.generate(_prompts(task, 2, engine), 3, SamplingParams(12, temperature=1.0))
    assert [len(g.completions) for g in groups] == [3, 3]
    stops = engine.stop_ids
    for g in groups:
        for c in g.completions:
            assert 1 <= len(c.completion_ids) <= 12
            assert len(c.behavior_logprobs) == len(c.completion_ids)
            assert all(lp <= 0 for lp in c.behavior_logprobs)
            assert policy.tokenizer.pad_token_id not in c.prompt_ids  # prompts are stored unpadded
            if c.finish_reason == "stop":
                assert c.completion_ids[-1] in stops and not set(c.completion_ids[:-1]) & stops
            else:
                assert len(c.completion_ids) == 12 and not set(c.completion_ids) & stops


def test_packed_rows_are_contiguous_and_masked_on_the_completion(parts):
    _, policy, task, engine = parts
    torch.manual_seed(1)
    comps = [c for g in engine.generate(_prompts(task, 2, engine), 2, SamplingParams(12)) for c in g.completions]
    batch = pack(comps, torch.arange(len(comps), dtype=torch.float), policy.tokenizer.pad_token_id)
    for r, c in enumerate(comps):
        p, n = len(c.prompt_ids), len(c.completion_ids)
        assert batch.input_ids[r, : p + n].tolist() == c.prompt_ids + c.completion_ids  # no pad between
        assert batch.attention_mask[r].sum() == p + n and batch.attention_mask[r, : p + n].all()
        # position j predicts token j+1: the mask covers exactly the completion tokens
        assert batch.mask[r].nonzero().flatten().tolist() == list(range(p - 1, p + n - 1))
        assert torch.all(batch.advantages[r][batch.mask[r] == 1] == r)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_equal_trainer_logprobs(parts, temperature):
    _, policy, task, engine = parts
    torch.manual_seed(2)
    comps = [c for g in engine.generate(_prompts(task, 2, engine), 3, SamplingParams(12, temperature)) for c in g.completions]
    batch = pack(comps, torch.zeros(len(comps)), policy.tokenizer.pad_token_id)
    policy.model.eval()
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model, batch.input_ids, batch.attention_mask, temperature, False, first_completion_position(comps))
    m = batch.mask.bool()
    assert m.sum() == sum(len(c.completion_ids) for c in comps)
    torch.testing.assert_close(logp[m], batch.behavior_logprobs[m], atol=1e-5, rtol=0)


def test_greedy_is_deterministic(parts):
    _, _, task, engine = parts
    prompts = _prompts(task, 2, engine)
    a = engine.generate(prompts, 2, SamplingParams(12, greedy=True))
    b = engine.generate(prompts, 2, SamplingParams(12, greedy=True))
    ids = [[c.completion_ids for c in g.completions] for g in a]
    assert ids == [[c.completion_ids for c in g.completions] for g in b]
    assert all(g[0] == g[1] for g in ids)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_engine_keeps_only_sampled_logprobs_equal_to_the_trainers(parts, top_p, monkeypatch):
    """No step's full logits are asked for (`output_logits`/`output_scores`); the recorded values
    are still log_softmax(logits / T) over the whole vocabulary (top-p only shapes the draw),
    equal to the trainer's recomputation."""
    _, policy, task, engine = parts
    real = policy.model.generate

    def generate(**kw):
        assert not kw.get("output_logits") and not kw.get("output_scores")
        out = real(**kw)
        assert getattr(out, "logits", None) is None and getattr(out, "scores", None) is None
        return out

    monkeypatch.setattr(policy.model, "generate", generate)
    torch.manual_seed(3)
    sampling = SamplingParams(12, temperature=0.8, top_p=top_p)
    comps = [c for g in engine.generate(_prompts(task, 2, engine), 3, sampling) for c in g.completions]
    batch = pack(comps, torch.zeros(len(comps)), policy.tokenizer.pad_token_id)
    policy.model.eval()
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model, batch.input_ids, batch.attention_mask, 0.8, False, first_completion_position(comps), chunk=7)
    m = batch.mask.bool()
    torch.testing.assert_close(logp[m], batch.behavior_logprobs[m], atol=1e-4, rtol=0)


def test_bucketing_by_length_keeps_the_order_of_groups_and_completions(parts):
    """Requests of interleaved lengths, batches smaller than the work: every group comes back at
    its request's index with its own prompt, and a group's completions in the order of a run with
    one request at a time (same seed, same rows per batch)."""
    _, _, task, engine = parts
    base = engine.renderer.requests([task.prompt(i) for i in range(4)])
    # cut the prompts' heads so that lengths interleave: 0 longest, 3 shortest, 1 and 2 between
    requests = [Request(r.prompt, r.prompt_ids[cut:]) for r, cut in zip(base, (0, 6, 2, 9))]
    assert sorted(range(4), key=lambda i: len(requests[i].prompt_ids)) == [3, 1, 2, 0]
    engine.batch_size = 2
    seen, real = [], engine._generate_batch
    engine._generate_batch = lambda ids, sampling: seen.append([len(i) for i in ids]) or real(ids, sampling)
    groups = engine.generate(requests, 2, SamplingParams(6, greedy=True))
    assert [n for batch in seen for n in batch] == sorted(len(r.prompt_ids) for r in requests for _ in range(2))
    engine._generate_batch = real
    assert [g.prompt for g in groups] == [r.prompt for r in requests]
    for r, g in zip(requests, groups):
        assert [c.prompt_ids for c in g.completions] == [r.prompt_ids, r.prompt_ids]
        alone = engine.generate([r], 2, SamplingParams(6, greedy=True))[0]
        assert [c.completion_ids for c in g.completions] == [c.completion_ids for c in alone.completions]
