"""Foreign-sample corrections wired in: row weights and the origin's staleness clock in the loss,
sampler lags hand-worked, and the real join-mode node path with the tiny model, where a peer
running another model is gated or down-weighted and our own rows are not."""

from __future__ import annotations

import pytest
import torch

import node.swarm_link
from node.algos.config import AlgorithmConfig
from node.algos.offpolicy import corrections
from node.algos.types import LossInputs
from node.batching import sampler_lags
from node.exchange import to_wire
from node.node import Node
from node.records import Completion, Group, Prompt, SamplingParams
from protocol import Identity, sign_group
from swarm.inbox import InboxItem
from tests.unit.fake_link import FakeLink
from tests.unit.test_ppo_update import recorded_losses
from tests.unit.test_sharing import peer_group


def loss_inputs(**kw) -> LossInputs:
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    lp = torch.full((4, 2), -1.0)
    return LossInputs(
        policy_logprobs=lp.clone(), old_logprobs=lp.clone(), behavior_logprobs=lp.clone(),
        advantages=torch.ones(4, 2), mask=mask, global_tokens=5.0, global_seqs=4.0, max_len=2,
        behavior_versions=torch.tensor([10, 10, 10, 10]), policy_version=10, **kw,
    )  # fmt: skip


def test_row_weights_multiply_the_token_weight():
    x = loss_inputs(row_weights=torch.tensor([1.0, 0.5, 0.0, 0.25]))
    corr = corrections(x, AlgorithmConfig())
    assert corr.weight.tolist() == [[1, 1], [0.5, 0.5], [0, 0], [0.25, 0.25]]
    assert corrections(loss_inputs(), AlgorithmConfig()).weight.eq(1).all()  # none: untouched


def test_staleness_on_the_origins_clock():
    # our counter says every row is fresh (versions 10 = policy 10); the origin's says rows 1 and 3
    # are 3 and 5 of its versions behind: max_staleness 2 drops row 1 (row 3 has no valid token)
    x = loss_inputs(sampler_lags=torch.tensor([0, 3, 1, 5]))
    ours = corrections(x, AlgorithmConfig(max_staleness=2))
    assert ours.keep.eq(1).all() and ours.metrics["offpolicy/stale"] == 0
    origin = corrections(x, AlgorithmConfig(max_staleness=2, staleness_clock="origin"))
    assert origin.keep.tolist() == [[1, 1], [0, 0], [1, 1], [0, 0]]
    assert origin.metrics["offpolicy/stale"] == pytest.approx(1 / 5)  # one valid token of five
    with pytest.raises(ValueError, match="sampler_lags"):
        corrections(loss_inputs(), AlgorithmConfig(max_staleness=2, staleness_clock="origin"))


def test_sampler_lags_hand_worked():
    p = Prompt("t:0:0", "t", "q", "a")

    def row(version: int, origin: str = "local", origin_version: int | None = None) -> Completion:
        return Completion(p, [1], [2], [-1.0], "x", "stop", version, origin, origin_version)

    rows = [
        row(8),  # ours, sampled at 8, we are at 10: 2
        row(10, "a", 3),  # admission saw a's version 7: 7 - 3 = 4 (our counter would say 0)
        row(10, "a", 6),  # 7 - 6 = 1
        row(10, "b", 5),  # b unknown to admission; its newest row in the batch is 9: 4
        row(10, "b", 9),  # 0
        row(9, "c"),  # a peer row without the origin's counter: ours, 10 - 9 = 1
        row(12),  # never negative
    ]
    assert sampler_lags(rows, 10, {"a": 7}) == [2, 4, 1, 4, 0, 1, 0]
    assert sampler_lags(rows, 10) == [2, 3, 0, 4, 0, 1, 0]  # without admission: the batch's newest a is 6


# -- the join-mode node path --------------------------------------------------------------------
def rows_by_source(calls: list[dict]) -> tuple[list[float], list[float]]:
    pairs = [(s, w) for c in calls for s, w in zip(c["sources"], c["weights"])]
    return [w for s, w in pairs if s == 0], [w for s, w in pairs if s > 0]


def join(tiny_config, monkeypatch, *overrides: str) -> Node:
    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    return Node(tiny_config("swarm.mode=join", "swarm.external_groups=2", "swarm.per_peer_cap=2", *overrides))


def confident(n: Node) -> None:
    """Make our tiny policy a 'trained' one: sharper logits, so its own samples are likely under it
    (mean token log-prob ~ 0) and another model's text is not (~ -13 nats per token)."""
    with torch.no_grad():
        n.policy.model.get_output_embeddings().weight.mul_(4.0)
    n.engine.sync_weights(n.trainer.version)


@pytest.mark.parametrize("mode", ["drop", "weight"])
def test_likelihood_gate_on_another_models_text(tiny_config, monkeypatch, mode):
    n = join(tiny_config, monkeypatch, f"algorithm.foreign_gate={mode}")
    try:
        confident(n)
        peer = Identity.generate()
        n.sharing.link.inbox = [peer_group(n, i, peer) for i in range(2)]  # text, re-tokenized by us
        calls = recorded_losses(monkeypatch)
        metrics = n.train_step()
        own, foreign = rows_by_source(calls)
        assert metrics["swarm/external_groups"] == 2 and metrics["foreign/rows"] == 4
        assert metrics["foreign/gated_rows"] == 4 and metrics["foreign/likelihood_gap"] > 5
        assert own == [1.0] * (n.cfg.rollout.prompts_per_step * n.cfg.rollout.group_size)
        if mode == "drop":
            assert foreign == []  # the peer rows never reach the loss
        else:
            assert len(foreign) == 4 and max(foreign) < 1e-2
            assert metrics["foreign/gate_weight"] == pytest.approx(sum(foreign) / 4)
    finally:
        n.close()


def reused_group(n: Node, index: int, identity: Identity, logprobs: str, version: int = 3) -> InboxItem:
    """A same-tokenizer peer group (one right, one wrong answer) with token ids and behaviour
    log-probs on the wire: `ours` = exactly what our policy gives them (a peer running our model),
    `confident` = -0.5 a token (another model, far more sure of this text than we are)."""
    prompt = n.sampler.tasks[0].prompt(index)
    texts = [f"<answer>{prompt.answer}</answer>", "<answer>no</answer>"]
    comps = []
    for t in texts:
        ids = n.policy.tokenizer(t, add_special_tokens=False)["input_ids"] + [n.renderer.end_of_turn]
        c = Completion(prompt, n.renderer.ids(prompt.question), ids, [], t, "stop", version)
        lp = n.trainer.policy_logprobs([c])[0] if logprobs == "ours" else [-0.5] * len(ids)
        comps.append(c.with_behavior(lp, version).scored(0.0, {"correctness": float(prompt.answer in t)}))
    wire = to_wire(Group(prompt, tuple(comps)), "public", "tiny", n.sharing.tok_hash, SamplingParams(16, 1.0))
    signed = sign_group(wire, identity)
    return InboxItem(signed.group_id.hex(), identity.peer_id, signed, 0.0, 100)


def test_ratio_gate_tells_a_peer_running_our_model_from_another(tiny_config, monkeypatch):
    n = join(tiny_config, monkeypatch, "swarm.peer_logprobs=reuse", "algorithm.foreign_gate=weight",
             "algorithm.foreign_gate_stat=ratio")  # fmt: skip
    try:
        same, other = Identity.generate(), Identity.generate()
        n.sharing.link.inbox = [reused_group(n, 0, same, "ours"), reused_group(n, 1, other, "confident")]
        calls = recorded_losses(monkeypatch)
        metrics = n.train_step()
        own, foreign = rows_by_source(calls)
        assert all(w == 1.0 for w in own)
        assert sorted(foreign)[2:] == pytest.approx([1.0, 1.0], abs=1e-4)  # our model's text: not foreign
        assert max(sorted(foreign)[:2]) < 1e-2  # ~5.7 nats/token less likely under us than claimed
        assert metrics["foreign/gated_rows"] == 2 and metrics["foreign/mean_seq_logratio"] < -2
        assert 0 < metrics["foreign/ess"] < 1
    finally:
        n.close()


def test_ess_check_drops_the_foreign_rows(tiny_config, monkeypatch):
    n = join(tiny_config, monkeypatch, "swarm.peer_logprobs=reuse", "algorithm.foreign_ess=drop_foreign",
             "algorithm.foreign_ess_min=0.9")  # fmt: skip
    try:
        n.sharing.link.inbox = [reused_group(n, i, Identity.generate(), "confident") for i in range(2)]
        calls = recorded_losses(monkeypatch)
        metrics = n.train_step()
        own, foreign = rows_by_source(calls)
        assert foreign == [] and own and metrics["foreign/ess"] < 0.9
        assert metrics["foreign/ess_dropped_rows"] == 4
    finally:
        n.close()


def test_origin_clock_drops_a_reused_row_the_origin_has_moved_past(tiny_config, monkeypatch):
    """Two groups from one peer at its versions 3 and 9: on our clock both are fresh (taken in
    now); on the origin's the first is 6 of its versions old and max_staleness=2 drops it."""
    for clock, stale in (("ours", 0.0), ("origin", 1.0)):
        n = join(tiny_config, monkeypatch, "swarm.peer_logprobs=reuse", "algorithm.max_staleness=2",
                 f"algorithm.staleness_clock={clock}")  # fmt: skip
        try:
            peer = Identity.generate()
            n.sharing.link.inbox = [reused_group(n, 0, peer, "ours", 3), reused_group(n, 1, peer, "ours", 9)]
            calls = recorded_losses(monkeypatch)
            n.train_step()
            stale_tokens = sum(c["offpolicy/stale"] for c in calls)
            assert (stale_tokens > 0) == bool(stale), clock
        finally:
            n.close()
