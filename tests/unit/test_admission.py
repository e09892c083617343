"""The admission stage: every verdict, with hand-made groups and a real reasoning-gym task."""

from __future__ import annotations

import random

import pytest

from node.admission import Admission, AdmissionConfig
from node.rollout.base import Completion, Group
from node.tasks.reasoning_gym_task import ReasoningGymTask
from protocol import Completion as WireCompletion
from protocol import RolloutGroup, SamplingParams, TaskRef

NOW = 1_800_000_000_000  # ms


@pytest.fixture(scope="module")
def task():
    return ReasoningGymTask("basic_arithmetic", 20, 7, {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                        "max_digits": 1, "operators": ["+"]})  # fmt: skip


def wire(task, index: int, answers: list[str], claims: list[float] | None = None, *, version: int = 0,
         age_s: float = 1.0, dataset: str = "basic_arithmetic") -> RolloutGroup:  # fmt: skip
    p = task.prompt(index)
    comps = tuple(
        WireCompletion(text=f"<answer>{a}</answer>",
                       claimed_rewards={} if claims is None else {"correctness": claims[i]})  # fmt: skip
        for i, a in enumerate(answers)
    )
    return RolloutGroup(
        swarm_id="s", task=TaskRef(dataset=dataset, seed=7, index=index, question=p.question), ground_truth=None,
        completions=comps, model_id="m", tokenizer_hash="", policy_version=version,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16), origin="peer",
        created_ms=int(NOW - age_s * 1000),
    )  # fmt: skip


def localize(w: RolloutGroup, prompt, origin: str) -> Group:
    comps = [Completion(prompt, [1], [5, 6], [], wc.text, "stop", 0, peer_id=origin) for wc in w.completions]
    return Group(prompt, comps)


def make(task, **kw) -> Admission:
    return Admission(AdmissionConfig(**kw), {"basic_arithmetic": task}, {"correctness": 1.0}, 16, localize, "me")


def right_wrong(task, index: int) -> list[str]:
    answer = task.prompt(index).answer
    return [answer, str(int(answer) + 1)]


def test_rescored_locally_and_admitted(task):
    adm = make(task)
    assert adm.offer("g1", "peer", wire(task, 0, right_wrong(task, 0)), NOW) == "admitted"
    (cand,) = adm.take(4, random.Random(0), NOW)
    # our verifier's rewards, not anybody's claim: right = 1, wrong = 0
    assert cand.group.rewards == [1.0, 0.0]
    assert cand.origin == "peer" and adm.pool == []


def test_a_lie_is_refused_and_reported(task):
    adm = make(task)
    lie = wire(task, 1, right_wrong(task, 1), claims=[1.0, 1.0])  # claims the wrong answer is right
    assert adm.offer("g", "liar", lie, NOW) == "reward_mismatch"
    assert adm.pop_reports() == [("liar", "reward_mismatch")]
    assert adm.pop_reports() == []
    honest = wire(task, 1, right_wrong(task, 1), claims=[1.0, 0.0])
    assert adm.offer("h", "honest", honest, NOW) == "admitted"


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(dataset="chess"), "unknown_task"),
        (dict(age_s=700.0), "stale"),
    ],
)
def test_refusals(task, kwargs, expected):
    adm = make(task)
    assert adm.offer("g", "peer", wire(task, 2, right_wrong(task, 2), **kwargs), NOW) == expected
    assert adm.counts[expected] == 1 and adm.pool == []


def test_zero_variance_unknown_prompt_and_own(task):
    adm = make(task)
    a = task.prompt(3).answer
    assert adm.offer("z", "peer", wire(task, 3, [a, a]), NOW) == "zero_variance"
    w = wire(task, 3, right_wrong(task, 3))
    other = RolloutGroup(**{f: getattr(w, f) for f in w.__slots__ if f != "task"},
                         task=TaskRef(dataset="basic_arithmetic", seed=7, index=3, question="Calculate 99 + 99."))
    assert adm.offer("u", "peer", other, NOW) == "unknown_prompt"
    assert adm.offer("o", "me", w, NOW) == "own"


def test_version_lag_drops_old_groups_at_take_time(task):
    adm = make(task, max_version_lag=2)
    assert adm.offer("old", "peer", wire(task, 4, right_wrong(task, 4), version=1), NOW) == "admitted"
    assert adm.offer("new", "peer", wire(task, 5, right_wrong(task, 5), version=4), NOW) == "admitted"
    taken = adm.take(4, random.Random(0), NOW)
    assert [c.group_id for c in taken] == ["new"]  # 4 - 1 > 2: the old one went stale
    assert adm.counts["stale"] == 1


def test_per_peer_cap_and_uniform_choice(task):
    adm = make(task, per_peer_cap=2)
    for i in range(6):
        adm.offer(f"a{i}", "A", wire(task, i, right_wrong(task, i)), NOW)
    adm.offer("b0", "B", wire(task, 6, right_wrong(task, 6)), NOW)
    taken = adm.take(4, random.Random(1), NOW)
    origins = sorted(c.origin for c in taken)
    assert origins == ["A", "A", "B"]  # A capped at 2, B has one: 3 < 4 asked
    assert len(adm.pool) == 4  # the rest stays for later steps
    # uniform: over many draws every one of A's groups gets picked
    picked = set()
    for seed in range(40):
        fresh = make(task, per_peer_cap=1)
        for i in range(6):
            fresh.offer(f"a{i}", "A", wire(task, i, right_wrong(task, i)), NOW)
        picked |= {c.group_id for c in fresh.take(1, random.Random(seed), NOW)}
    assert picked == {f"a{i}" for i in range(6)}


def test_pool_is_bounded_oldest_out(task):
    adm = make(task, pool_size=2)
    for i in range(3):
        adm.offer(f"g{i}", "peer", wire(task, i, right_wrong(task, i)), NOW)
    assert [c.group_id for c in adm.pool] == ["g1", "g2"] and adm.counts["pool_overflow"] == 1
