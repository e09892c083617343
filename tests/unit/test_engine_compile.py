"""`rollout.compile`: the transformers engine with a static KV cache and a compiled decode step,
inside transformers' `generate` or in our whole-step loop (`rollout.decode_loop=whole_step`).

On CPU this compiles for real (inductor, a C++ compiler), so the tests pay a compile of the
tiny model per loop (tens of seconds on a busy 2-core machine).
"""

from __future__ import annotations

import pytest
import torch

from node.config import RolloutConfig
from node.policy import load_policy
from node.records import Request, SamplingParams
from node.rollout import Renderer, build_engine
from node.rollout.hf import WIDTH_STEP, HFEngine, use_compile
from node.tasks import build_tasks


def test_auto_compiles_on_cuda_only():
    assert use_compile("auto", torch.device("cuda")) and not use_compile("auto", torch.device("cpu"))
    assert use_compile("on", torch.device("cpu")) and not use_compile("off", torch.device("cuda"))
    assert RolloutConfig().compile == "auto"
    with pytest.raises(ValueError):
        RolloutConfig(compile="yes")


@pytest.mark.parametrize("mode", ["on", "off", "auto"])
@pytest.mark.parametrize("loop", ["transformers", "whole_step"])
def test_the_config_switch_reaches_the_engine(tiny_config, mode, loop):
    cfg = tiny_config(f"rollout.compile={mode}", f"rollout.decode_loop={loop}")
    policy = load_policy(cfg.model)
    engine = build_engine(
        cfg.rollout, policy, Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    )
    assert engine.compiled == (mode == "on")  # the tests run on CPU: auto leaves it off
    assert engine.whole_step == (mode == "on" and loop == "whole_step")


@pytest.fixture
def engines(tiny_config):
    cfg = tiny_config("rollout.max_new_tokens=12")
    policy = load_policy(cfg.model)
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    task = build_tasks(cfg.tasks)[0]
    prompts = sorted((task.prompt(i) for i in range(40)), key=lambda p: len(p.question))
    requests = renderer.requests([prompts[0], prompts[-1]])  # two lengths: left padding matters
    args = (policy.model, policy.tokenizer, renderer.stop_ids, 8, policy.device)
    return (
        requests,
        HFEngine(*args, compile="off"),
        HFEngine(*args, "on"),
        HFEngine(*args, "on", "whole_step"),
    )


def _same(got_groups, want_groups) -> None:
    """The same tokens, the same stops at the same tokens, log-probs within 1e-4."""
    got, want = _rows(got_groups), _rows(want_groups)
    assert [(ids, r) for ids, _, r in got] == [(ids, r) for ids, _, r in want]
    for (_, lp_got, _), (_, lp_want, _) in zip(got, want):
        assert lp_got == pytest.approx(lp_want, abs=1e-4)


def _rows(groups):
    return [(c.completion_ids, c.behavior_logprobs, c.finish_reason) for g in groups for c in g.completions]


@pytest.mark.parametrize("loop", ["transformers", "whole_step"])
def test_compiled_greedy_decoding_equals_eager(engines, loop):
    requests, eager, *compiled = engines
    compiled = compiled[loop == "whole_step"]
    assert not eager.compiled and compiled.compiled and compiled.whole_step == (loop == "whole_step")
    greedy = SamplingParams(12, greedy=True)
    _same(compiled.generate(requests, 2, greedy), eager.generate(requests, 2, greedy))

    # the first call of a shape was timed and reported once; a second call reuses the graph
    (shape,) = compiled.compile_s
    assert shape[0] == 4 and (shape[1] - (0 if compiled.whole_step else 12)) % WIDTH_STEP == 0
    assert compiled.metrics()["rollout/compile_s"] > 0 and compiled.metrics() == {}
    compiled.generate(requests, 2, greedy)
    assert len(compiled.compile_s) == 1 and compiled.metrics() == {}
    if compiled.whole_step:  # a narrower batch and fewer new tokens fit the same cache and graph
        (decoder,) = compiled._decoders.values()
        narrow = [requests[0], Request(requests[0].prompt, requests[0].prompt_ids[:-3])]
        short = SamplingParams(5, greedy=True)
        _same(compiled.generate(narrow, 2, short), eager.generate(narrow, 2, short))
        assert compiled._decoders == {4: decoder} and len(compiled.compile_s) == 1
    assert eager.metrics() == {}


@pytest.mark.parametrize("loop", ["transformers", "whole_step"])
def test_compiled_sampling_keeps_stops_and_logprobs(engines, loop):
    requests, _, *compiled = engines
    compiled = compiled[loop == "whole_step"]
    torch.manual_seed(0)
    groups = compiled.generate(requests + [Request(requests[0].prompt, requests[0].prompt_ids)], 2,
                               SamplingParams(12, temperature=1.0))  # fmt: skip
    for ids, logps, reason in _rows(groups):
        assert 1 <= len(ids) <= 12 and len(logps) == len(ids) and all(lp <= 0 for lp in logps)
        if reason == "stop":
            assert ids[-1] in compiled.stop_ids and not set(ids[:-1]) & compiled.stop_ids
        else:
            assert len(ids) == 12 and not set(ids) & compiled.stop_ids


def test_whole_step_decodes_through_lora_adapters(tiny_config):
    """A LoRA model (peft) decodes through its base model, whose layers carry the adapters."""
    cfg = tiny_config("rollout.max_new_tokens=6", "model.lora.enabled=true", "model.lora.r=4")
    policy = load_policy(cfg.model)
    with torch.no_grad():  # adapters start as a no-op (B = 0): make them matter
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    requests = renderer.requests([build_tasks(cfg.tasks)[0].prompt(i) for i in range(2)])
    args = (policy.model, policy.tokenizer, renderer.stop_ids, 8, policy.device)
    greedy = SamplingParams(6, greedy=True)
    want_groups = HFEngine(*args, compile="off").generate(requests, 1, greedy)
    want = _rows(want_groups)
    got = HFEngine(*args, "on", "whole_step").generate(requests, 1, greedy)
    with policy.model.disable_adapter():
        base = _rows(HFEngine(*args, compile="off").generate(requests, 1, greedy))
    flat = lambda rows: [x for _, lps, _ in rows for x in lps]  # noqa: E731
    assert len(flat(base)) != len(flat(want)) or flat(base) != pytest.approx(flat(want), abs=1e-3)
    _same(got, want_groups)
