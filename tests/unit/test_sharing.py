"""Join mode inside one process: a node with an in-memory link trains on peers' groups, refuses
a liar, never waits on an empty swarm; the wire conversion; solo mode opens no socket."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import node.swarm_link
from node.exchange import to_local, to_wire, tokenizer_hash
from node.node import Node
from node.records import Completion, Group, SamplingParams
from node.sharing import wants
from protocol import Completion as WireCompletion
from protocol import Identity, RolloutGroup, TaskRef, sign_group
from protocol import SamplingParams as WireSampling
from swarm.inbox import InboxItem
from tests.unit.fake_link import FakeLink

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def join_node(tiny_config, monkeypatch):
    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    cfg = tiny_config("swarm.mode=join", "swarm.external_groups=2", "swarm.per_peer_cap=2")
    n = Node(cfg)
    yield n
    n.close()


def peer_group(node: Node, index: int, identity: Identity, lie: bool = False) -> InboxItem:
    """A signed group from another peer: one right and one wrong answer to a training prompt."""
    prompt = node.sampler.tasks[0].prompt(index)
    right, wrong = prompt.answer, str(int(prompt.answer) + 1)
    comps = tuple(
        WireCompletion(text=f"<answer>{a}</answer>", claimed_rewards={"correctness": 1.0 if lie else float(a == right)})
        for a in (right, wrong)
    )
    g = RolloutGroup(swarm_id="public", task=TaskRef(dataset=prompt.task, seed=1234, index=index, question=prompt.question),
                     ground_truth=None, completions=comps, model_id="other-model", tokenizer_hash="",
                     policy_version=3, sampling=WireSampling(temperature=1.0, top_p=1.0, max_tokens=16),
                     truncated=(False, False))  # fmt: skip
    signed = sign_group(g, identity)
    return InboxItem(signed.group_id.hex(), identity.peer_id, signed, 0.0, 100)


def test_trains_on_local_plus_admitted_peer_groups(join_node):
    node, peer = join_node, Identity.generate()
    node.sharing.link.inbox = [peer_group(node, i, peer) for i in range(3)]
    metrics = node.train_step()
    assert metrics["swarm/external_groups"] == 2 and metrics["swarm/filled_locally"] == 0
    assert metrics["local_groups"] == node.cfg.rollout.prompts_per_step
    assert metrics["swarm/pool"] == 1  # the third waits for the next step
    published = node.sharing.link.published
    assert len(published) == node.cfg.rollout.prompts_per_step  # ours only, never the peer's
    assert all(g.model_id == "tiny" and g.tokenizer_hash == node.sharing.tok_hash for g in published)
    status = node.status(metrics, 1)["swarm"]
    assert status["published"] == len(published) and status["used"] == 2 and status["verdicts"] == {"admitted": 3}


def test_peer_text_is_retokenized_and_scored_by_our_policy(join_node):
    node, peer = join_node, Identity.generate()
    node.sharing.link.inbox = [peer_group(node, 0, peer)]
    groups, info = node.peer_groups()
    (group,) = groups
    tok = node.policy.tokenizer
    for c in group.completions:
        assert c.origin == peer.peer_id and c.origin_version == 3 and c.policy_version == node.trainer.version
        assert c.completion_ids[:-1] == tok(c.text, add_special_tokens=False)["input_ids"]
        assert c.completion_ids[-1] == node.renderer.end_of_turn and c.finish_reason == "stop"
        assert len(c.behavior_logprobs) == len(c.completion_ids)
    # behaviour logprobs are our policy's: the importance ratio of these rows is exactly 1
    again = node.trainer.policy_logprobs(group.completions)
    assert torch.allclose(torch.tensor(again[0]), torch.tensor(group.completions[0].behavior_logprobs), atol=1e-5)
    assert group.rewards == [1.0 + 0.2 * group.completions[0].reward_components["format"], 0.2]


def test_a_lying_peer_is_refused_and_reported(join_node):
    node, liar = join_node, Identity.generate()
    node.sharing.link.inbox = [peer_group(node, 0, liar, lie=True)]
    metrics = node.train_step()
    assert metrics["swarm/external_groups"] == 0 and metrics["swarm/filled_locally"] == 2
    assert node.sharing.link.reports == [(liar.peer_id, "reward_mismatch")]
    assert node.status(metrics, 1)["swarm"]["verdicts"] == {"reward_mismatch": 1}


def test_an_empty_or_disconnected_swarm_never_stalls_a_step(join_node):
    node = join_node
    node.sharing.link.connected = False
    metrics = node.train_step()
    assert metrics["swarm/external_groups"] == 0
    assert metrics["local_groups"] == node.cfg.rollout.prompts_per_step + 2  # J filled locally
    assert metrics["swarm/connected"] == 0.0


def test_reuse_keeps_peer_tokens_only_with_our_tokenizer(join_node):
    node = join_node
    prompt = node.sampler.tasks[0].prompt(0)
    ids = node.policy.tokenizer("<answer>3</answer>", add_special_tokens=False)["input_ids"] + [node.renderer.end_of_turn]
    mine = Group(prompt, [Completion(prompt, [1, 2], ids, [-0.5] * len(ids), "<answer>3</answer>", "stop", 7)])
    wire = sign_group(to_wire(mine, "public", "tiny", node.sharing.tok_hash, SamplingParams(16, 1.0)), Identity.generate())
    reused = to_local(wire, prompt, [9], node.policy.tokenizer, node.renderer.end_of_turn, 16, 2, "p", reuse_tokens=True)
    c = reused.completions[0]
    assert c.completion_ids == ids and c.behavior_logprobs == [-0.5] * len(ids)
    assert c.policy_version == 2 and c.origin_version == 7  # our version when taken in; the peer's apart
    fresh = to_local(wire, prompt, [9], node.policy.tokenizer, node.renderer.end_of_turn, 16, 0, "p", reuse_tokens=False)
    assert fresh.completions[0].completion_ids == ids and fresh.completions[0].behavior_logprobs == []
    cut = to_local(wire, prompt, [9], node.policy.tokenizer, node.renderer.end_of_turn, 3, 0, "p", reuse_tokens=False)
    assert len(cut.completions[0].completion_ids) == 3 and cut.completions[0].truncated


def test_tokenizer_hash_tells_tokenizers_apart(join_node):
    from transformers import AutoTokenizer

    tok = join_node.policy.tokenizer
    other = AutoTokenizer.from_pretrained(join_node.policy.model.name_or_path)
    assert tokenizer_hash(other) == tokenizer_hash(tok)  # same files, same hash
    other.add_tokens(["<extra>"])
    assert tokenizer_hash(other) != tokenizer_hash(tok)


def test_solo_mode_opens_no_socket_and_imports_no_swarm(model_cache, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        events = []
        def hook(event, args):
            if event.startswith("socket."):
                events.append(event)
        sys.addaudithook(hook)
        from node.config import load_config
        from node.node import Node
        cfg = load_config([{str(ROOT / 'configs' / 'tiny.yaml')!r}],
                          ["model.cache_dir={model_cache}", "logging.run_dir={tmp_path / 'run'}"])
        node = Node(cfg)
        node.run(1)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("swarm", "hivemind", "libp2p"))
        assert not bad, bad
        assert not events, events
        print("ok", node.step)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ok 1"  # after any [policy] notes


def test_a_peer_with_another_model_and_tokenizer_is_retokenized(join_node, tiny_config, tmp_path):
    """Heterogeneous swarm: node B (another size and vocabulary) asks to reuse peers' tokens,
    but A's tokenizer hash differs, so B re-tokenizes A's text and scores it with its own policy."""
    a = join_node
    cfg_b = tiny_config("swarm.mode=join", "swarm.peer_logprobs=reuse", "model.tiny.vocab_size=400",
                        "model.tiny.hidden_size=64", "model.tiny.num_layers=1", f"logging.run_dir={tmp_path / 'b'}")  # fmt: skip
    b = Node(cfg_b)
    try:
        assert b.sharing.tok_hash != a.sharing.tok_hash
        prompt = a.sampler.tasks[0].prompt(0)
        texts = [f"<answer>{prompt.answer}</answer>", "<answer>no</answer>"]
        ids = [a.policy.tokenizer(t, add_special_tokens=False)["input_ids"] + [a.renderer.end_of_turn] for t in texts]
        mine = Group(prompt, tuple(Completion(prompt, [1], i, [-1.0] * len(i), t, "stop", 5)
                                   .scored(0.0, {"correctness": float(prompt.answer in t)})
                                   for i, t in zip(ids, texts)))  # fmt: skip
        wire = sign_group(to_wire(mine, "public", "tiny", a.sharing.tok_hash, SamplingParams(16, 1.0)),
                          a.sharing.link.identity)  # fmt: skip
        b.sharing.link.inbox = [InboxItem(wire.group_id.hex(), wire.origin, wire, 0.0, 10)]
        (group,), _ = b.peer_groups()
        for c, text in zip(group.completions, texts):
            assert c.completion_ids == b.policy.tokenizer(text, add_special_tokens=False)["input_ids"] + [b.renderer.end_of_turn]
            assert len(c.behavior_logprobs) == len(c.completion_ids) and c.policy_version == b.trainer.version
            assert c.behavior_logprobs != [-1.0] * len(c.completion_ids)  # not A's logprobs
        metrics = b.train_step()
        assert metrics["local_groups"] == cfg_b.rollout.prompts_per_step + cfg_b.swarm.external_groups
    finally:
        b.close()


def test_fetches_only_tasks_it_can_score(join_node):
    from functools import partial
    from types import SimpleNamespace

    def entry(task):
        return SimpleNamespace(item=SimpleNamespace(task=task))

    want = join_node.sharing.link.want  # what the node handed to the swarm layer
    assert want(entry("basic_arithmetic"))
    assert want(entry("question"))  # literal questions: matched against our prompts on arrival
    assert not want(entry("chess_puzzles"))
    assert not partial(wants, frozenset())(entry("basic_arithmetic"))  # J = 0: downloads nothing


# -- versions and origins through the join-mode path ----------------------------------------
def make_join(tiny_config, monkeypatch, *overrides: str, run: str = "run") -> Node:
    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    return Node(tiny_config("swarm.mode=join", "swarm.external_groups=2", "swarm.per_peer_cap=2",
                            *overrides))  # fmt: skip


def reusable_group(n: Node, index: int, identity: Identity, version: int) -> InboxItem:
    """A peer with our tokenizer: token ids and behaviour log-probs on the wire, one right answer."""
    prompt = n.sampler.tasks[0].prompt(index)
    texts = [f"<answer>{prompt.answer}</answer>", "<answer>no</answer>"]
    comps = []
    for t in texts:
        ids = n.policy.tokenizer(t, add_special_tokens=False)["input_ids"] + [n.renderer.end_of_turn]
        c = Completion(prompt, [1], ids, [-0.5] * len(ids), t, "stop", version)
        comps.append(c.scored(0.0, {"correctness": float(prompt.answer in t)}))
    wire = sign_group(to_wire(Group(prompt, tuple(comps)), "public", "tiny", n.sharing.tok_hash,
                              SamplingParams(16, 1.0)), identity)  # fmt: skip
    return InboxItem(wire.group_id.hex(), identity.peer_id, wire, 0.0, 100)


def test_loss_inputs_carry_the_origin_and_our_version(tiny_config, monkeypatch):
    from tests.unit.test_ppo_update import recorded_losses

    n = make_join(tiny_config, monkeypatch)
    try:
        n.trainer.version = 40  # we are far ahead of the peer (its counter is 3)
        n.engine.sync_weights(40)
        a, b = Identity.generate(), Identity.generate()
        n.sharing.link.inbox = [peer_group(n, 0, a), peer_group(n, 1, b)]
        calls = recorded_losses(monkeypatch)
        n.train_step()
        sources = [s for c in calls for s in c["sources"]]
        versions = [v for c in calls for v in c["versions"]]
        local_rows = n.cfg.rollout.prompts_per_step * n.cfg.rollout.group_size
        assert sources.count(0) == local_rows and sorted(set(sources) - {0}) == [1, 2]  # two peers, told apart
        assert sources.count(1) == sources.count(2) == 2
        assert set(versions) == {40}  # our version, never the peer's 3
    finally:
        n.close()


def test_reuse_with_max_staleness_measures_staleness_in_our_versions(tiny_config, monkeypatch):
    """Review defect: a reused peer row carried the peer's counter, and the staleness mask compared
    it with ours.  Now its behaviour version is ours when we took it in; the peer's own lag is the
    pool's business (swarm.max_version_lag, in the peer's counter)."""
    from tests.unit.test_ppo_update import recorded_losses

    n = make_join(tiny_config, monkeypatch, "swarm.peer_logprobs=reuse", "algorithm.max_staleness=0")
    try:
        n.trainer.version = 50
        n.engine.sync_weights(50)
        n.sharing.link.inbox = [reusable_group(n, 0, Identity.generate(), version=3)]
        (g,), _ = n.peer_groups()
        assert [c.behavior_logprobs[0] for c in g.completions] == [-0.5, -0.5]  # the peer's own log-probs
        assert {c.policy_version for c in g.completions} == {50} and {c.origin_version for c in g.completions} == {3}
        n.sharing.link.inbox = [reusable_group(n, 1, Identity.generate(), version=3)]
        calls = recorded_losses(monkeypatch)
        n.train_step()
        assert sum(c["offpolicy/stale"] for c in calls) == 0.0  # nothing dropped as 47 versions stale
    finally:
        n.close()


def test_reuse_with_loglinear_is_refused_at_config_load(tiny_config):
    from node.config import ConfigError

    with pytest.raises(ConfigError, match="algorithm.prox_logprobs=loglinear.*swarm.peer_logprobs=reuse"):
        tiny_config("swarm.mode=join", "swarm.peer_logprobs=reuse", "algorithm.prox_logprobs=loglinear")
    tiny_config("swarm.mode=join", "swarm.peer_logprobs=recompute", "algorithm.prox_logprobs=loglinear")  # fine


def test_a_peers_truncated_text_is_never_closed_with_end_of_turn(join_node):
    """Review defect: a text-only completion the peer cut at its length cap got our EOS."""
    n = join_node
    prompt = n.sampler.tasks[0].prompt(0)
    eot = n.renderer.end_of_turn
    text_only = [WireCompletion(text="<answer>1"), WireCompletion(text="<answer>2</answer>")]
    base = dict(swarm_id="public", task=TaskRef(question=prompt.question, verifier="math_verify"), ground_truth=None,
                completions=tuple(text_only), model_id="m", tokenizer_hash="",
                policy_version=0, sampling=WireSampling(temperature=1.0, top_p=1.0, max_tokens=4))  # fmt: skip
    tok = n.policy.tokenizer

    def local(**kw):
        return to_local(RolloutGroup(**base, **kw), prompt, [9], tok, eot, 16, 0, "p", reuse_tokens=False).completions

    cut, done = local(truncated=(True, False))
    assert cut.truncated and eot not in cut.completion_ids
    assert not done.truncated and done.completion_ids[-1] == eot
    assert all(c.truncated and eot not in c.completion_ids for c in local())  # the peer did not say


def test_join_resume_restores_the_pool_and_verdicts(tiny_config, monkeypatch, tmp_path):
    n = make_join(tiny_config, monkeypatch, f"logging.run_dir={tmp_path / 'j'}")
    try:
        peer = Identity.generate()
        n.sharing.link.inbox = [peer_group(n, i, peer) for i in range(3)] + [peer_group(n, 4, peer, lie=True)]
        n.train_step()
        n.save()
        state = n.components()
    finally:
        n.close()
    assert len(state["pool"]["entries"]) == 1 and state["admission"]["counts"] == {"admitted": 3, "reward_mismatch": 1}
    again = make_join(tiny_config, monkeypatch, f"logging.run_dir={tmp_path / 'j'}")
    try:
        assert again.resume() and again.step == 1
        assert again.components() == state
        assert [e.group_id for e in again.pool.entries] == [e["group_id"] for e in state["pool"]["entries"]]
    finally:
        again.close()
