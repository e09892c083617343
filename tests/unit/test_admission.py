"""Admission (the judges, with typed reasons) and the pool (staleness, caps, choice, state), with
hand-made groups and a real reasoning-gym task."""

from __future__ import annotations

import random

import pytest

from node.admission import Admission, AdmissionConfig, Reason
from node.records import Completion, Group
from node.replay.buffer import BufferConfig as PoolConfig
from node.replay.buffer import BufferEntry as PoolEntry
from node.replay.buffer import ReplayBuffer as GroupPool
from node.scoring import score_group
from node.tasks.reasoning_gym_task import ReasoningGymTask
from protocol import Completion as WireCompletion
from protocol import RolloutGroup, SamplingParams, TaskRef
from swarm.inbox import InboxItem
from swarm.misconduct import Misconduct

NOW = 1_800_000_000_000  # ms
WEIGHTS = {"correctness": 1.0, "format": 0.2}


@pytest.fixture(scope="module")
def task():
    return ReasoningGymTask("basic_arithmetic", 20, 7, {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                        "max_digits": 1, "operators": ["+"]})  # fmt: skip


def item(task, index: int, texts: list[str], claims: list[float] | None = None, *, version: int = 0,
         age_s: float = 1.0, dataset: str = "basic_arithmetic", origin: str = "peer", gid: str = "g") -> InboxItem:  # fmt: skip
    p = task.prompt(index)
    comps = tuple(
        WireCompletion(text=t, claimed_rewards={} if claims is None else {"correctness": claims[i]})
        for i, t in enumerate(texts)
    )
    w = RolloutGroup(
        swarm_id="s", task=TaskRef(dataset=dataset, seed=7, index=index, question=p.question), ground_truth=None,
        completions=comps, model_id="m", tokenizer_hash="", policy_version=version,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16), origin=origin,
        created_ms=int(NOW - age_s * 1000),
    )  # fmt: skip
    return InboxItem(gid, origin, w, 0.0, 100)


def local_view(it: InboxItem, task) -> Group:
    """What the node's localize + re-score produce (ids are irrelevant to the judges)."""
    prompt = task.lookup(it.group.task.question)
    comps = tuple(Completion(prompt, [1], [5, 6], [], wc.text, "stop", 0, it.origin, it.group.policy_version)
                  for wc in it.group.completions)  # fmt: skip
    return score_group(Group(prompt, comps), task, WEIGHTS, 16)


def verdict(adm: Admission, it: InboxItem, task) -> Reason:
    found = adm.screen(it, NOW)
    return found if isinstance(found, Reason) else adm.judge(it, local_view(it, task), NOW)


def tagged(answers: list[str]) -> list[str]:
    return [f"<answer>{a}</answer>" for a in answers]


def right_wrong(task, index: int) -> list[str]:
    answer = task.prompt(index).answer
    return tagged([answer, str(int(answer) + 1)])


def make(task, **kw) -> Admission:
    return Admission(AdmissionConfig(**kw), {"basic_arithmetic": task}, "me")


def test_rescored_locally_and_admitted(task):
    adm = make(task)
    it = item(task, 0, right_wrong(task, 0))
    assert verdict(adm, it, task) is Reason.ADMITTED
    assert adm.counts == {"admitted": 1}
    assert local_view(it, task).signal("correctness") == [1.0, 0.0]  # our verifier, not a claim


def test_a_lie_is_refused_and_reported_as_misconduct(task):
    adm = make(task)
    lie = item(task, 1, right_wrong(task, 1), claims=[1.0, 1.0], origin="liar")  # the wrong answer "is right"
    assert verdict(adm, lie, task) is Reason.REWARD_MISMATCH
    assert adm.pop_reports() == [("liar", Misconduct.REWARD_MISMATCH)]
    assert adm.pop_reports() == []
    honest = item(task, 1, right_wrong(task, 1), claims=[1.0, 0.0], origin="honest")
    assert verdict(adm, honest, task) is Reason.ADMITTED


@pytest.mark.parametrize("kwargs, expected", [(dict(dataset="chess"), Reason.UNKNOWN_TASK),
                                              (dict(age_s=700.0), Reason.STALE)])  # fmt: skip
def test_refusals(task, kwargs, expected):
    adm = make(task)
    assert verdict(adm, item(task, 2, right_wrong(task, 2), **kwargs), task) is expected
    assert adm.counts == {expected.value: 1}


def test_zero_variance_unknown_prompt_and_own(task):
    adm = make(task)
    a = task.prompt(3).answer
    assert verdict(adm, item(task, 3, tagged([a, a])), task) is Reason.ZERO_VARIANCE
    it = item(task, 3, right_wrong(task, 3))
    w = it.group
    other = RolloutGroup(
        **{f: getattr(w, f) for f in w.__slots__ if f != "task"},
        task=TaskRef(dataset="basic_arithmetic", seed=7, index=3, question="Calculate 99 + 99."),
    )
    assert adm.screen(InboxItem("u", "peer", other, 0.0, 1), NOW) is Reason.UNKNOWN_PROMPT
    assert adm.screen(item(task, 3, right_wrong(task, 3), origin="me"), NOW) is Reason.OWN


def test_all_wrong_groups_differing_only_in_format_carry_no_signal(task):
    """Review defect: the zero-variance judge compared the total reward, so two wrong answers,
    one tagged and one bare, got in.  Correctness is the default signal; `reward` is the old rule."""
    wrong = str(int(task.prompt(4).answer) + 1)
    texts = [f"<answer>{wrong}</answer>", f"{wrong}"]  # both wrong; format 1 vs 0
    assert verdict(make(task), item(task, 4, texts), task) is Reason.ZERO_VARIANCE
    assert verdict(make(task, signal=None), item(task, 4, texts), task) is Reason.ADMITTED


def test_admission_state_round_trips(task):
    adm = make(task)
    verdict(adm, item(task, 5, right_wrong(task, 5), version=7), task)
    verdict(adm, item(task, 5, right_wrong(task, 5), age_s=900), task)
    again = make(task)
    again.load_state_dict(adm.state_dict())
    assert again.counts == adm.counts == {"admitted": 1, "stale": 1}
    assert again.newest == {"peer": 7}


# -- the pool ------------------------------------------------------------------------------
def entry(task, gid: str, origin: str = "peer", version: int = 0, age_s: float = 1.0) -> PoolEntry:
    it = item(task, int(gid[-1]), right_wrong(task, int(gid[-1])), origin=origin, version=version)
    return PoolEntry(local_view(it, task), origin, gid, version, int(NOW - age_s * 1000))


def test_version_lag_in_the_origins_own_counter_drops_old_groups_at_take_time(task):
    pool = GroupPool(PoolConfig(max_version_lag=2))
    pool.add(entry(task, "old1", version=1))
    pool.add(entry(task, "new2", version=4))
    taken = pool.take(4, random.Random(0), NOW, newest={"peer": 4})
    assert [e.group_id for e in taken] == ["new2"]  # 4 - 1 > 2: the old one went stale
    assert pool.counts["stale"] == 1 and len(pool) == 0


def test_per_peer_cap_and_uniform_choice(task):
    pool = GroupPool(PoolConfig(per_peer_cap=2))
    for i in range(6):
        pool.add(entry(task, f"a{i}", "A"))
    pool.add(entry(task, "b6", "B"))
    taken = pool.take(4, random.Random(1), NOW, {})
    assert sorted(e.origin for e in taken) == ["A", "A", "B"]  # A capped at 2, B has one: 3 < 4 asked
    assert len(pool) == 4  # the rest stays for later steps
    picked = set()
    for seed in range(40):  # uniform: over many draws every one of A's groups gets picked
        fresh = GroupPool(PoolConfig(per_peer_cap=1))
        for i in range(6):
            fresh.add(entry(task, f"a{i}", "A"))
        picked |= {e.group_id for e in fresh.take(1, random.Random(seed), NOW, {})}
    assert picked == {f"a{i}" for i in range(6)}


def test_pool_is_bounded_oldest_out(task):
    pool = GroupPool(PoolConfig(capacity=2))
    for i in range(3):
        pool.add(entry(task, f"g{i}"))
    assert [e.group_id for e in pool.entries] == ["g1", "g2"] and pool.counts["overflow"] == 1


def test_pool_state_round_trips_entries_and_refinds_prompts(task):
    pool = GroupPool(PoolConfig())
    for i in range(3):
        pool.add(entry(task, f"g{i}", version=i))
    state = pool.state_dict()
    back = GroupPool(PoolConfig())
    back.load_state_dict(state, lambda name, q: task.lookup(q) if name == task.name else None)
    assert back.state_dict() == state
    assert [e.group.prompt for e in back.entries] == [e.group.prompt for e in pool.entries]
    gone = GroupPool(PoolConfig())
    gone.load_state_dict(state, lambda name, q: None)  # our task set changed: entries are dropped
    assert len(gone) == 0
