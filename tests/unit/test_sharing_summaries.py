"""The node's side of outcome summaries: the key a receiver computes for its own prompt equals
the one the sender announces, `Sharing.summaries` / `summary_for`, and the lie check."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from node.exchange import prompt_key_of, summary_agrees, summary_matches, to_wire
from node.records import Prompt, SamplingParams
from node.sharing import SUMMARY_MEMORY, Sharing
from protocol import Identity, sign_group
from swarm.protocol_wire import entry_for, summaries_of
from swarm.summaries import Summary
from tests.unit.fake_link import FakeLink
from tests.unit.hand_groups import scored_group

ALICE = Identity.generate()
PROCEDURAL = Prompt("chain_sum:5:17", "chain_sum", "What is 3 + 4 + 5?", "12")
LITERAL = Prompt("9f2c01", "gsm8k", "Tom has 3 apples and buys 2. How many now?", "5")


def announced(prompt: Prompt, rewards: list[float]) -> tuple[Summary, object]:
    """What a receiver hears when ALICE publishes her scored group on `prompt`: (summary, signed wire group)."""
    wire = sign_group(to_wire(scored_group(prompt, rewards), "public", "m", "", SamplingParams(8)), ALICE)
    entry = entry_for(wire, summarize=True)
    (summary,) = summaries_of((entry.item,), ALICE.peer_id)
    return summary, wire


@pytest.mark.parametrize("prompt", [PROCEDURAL, LITERAL], ids=["procedural", "literal"])
def test_the_receiver_computes_the_key_the_sender_announces(prompt: Prompt) -> None:
    summary, wire = announced(prompt, [1.0, 0.0, 1.0, 0.0, 0.0])
    assert summary.prompt_key == prompt_key_of(prompt)  # the receiver holds the same (task, question)
    assert (summary.n, summary.successes, summary.group_id) == (5, 2, wire.group_id.hex())
    # a literal question's key ignores which local task holds it (receivers match it by text);
    # a procedural one's names its dataset
    elsewhere = replace(prompt, task="other_task")
    assert (prompt_key_of(elsewhere) == summary.prompt_key) is (prompt is LITERAL)


def test_a_group_without_correctness_claims_is_announced_without_a_summary() -> None:
    group = scored_group(PROCEDURAL, [1.0, 0.0])
    bare = replace(group, completions=tuple(replace(c, reward_components={}) for c in group.completions))
    wire = sign_group(to_wire(bare, "public", "m", "", SamplingParams(8)), ALICE)
    item = entry_for(wire, summarize=True).item
    assert item.prompt_key is None and item.successes is None
    assert (
        entry_for(sign_group(to_wire(group, "public", "m", "", SamplingParams(8)), ALICE)).item.successes
        is None
    )


def test_summary_matches_hand_cases() -> None:
    assert summary_matches(2, 2, 4)
    assert not summary_matches(3, 2, 4)  # one completion off: a lie at the default tolerance 0
    assert summary_matches(3, 2, 4, tolerance=1) and not summary_matches(4, 2, 4, tolerance=1)
    assert not summary_matches(5, 4, 4, tolerance=2)  # more successes than completions is never true
    with pytest.raises(ValueError):
        summary_matches(1, 5, 4)  # our own count out of range is the caller's bug


def test_summary_agrees_checks_group_count_key_and_successes() -> None:
    summary, wire = announced(PROCEDURAL, [1.0, 0.0, 0.0, 0.0])
    assert summary_agrees(summary, wire, rescored_successes=1)
    assert not summary_agrees(summary, wire, rescored_successes=0)  # our verifier disagrees
    assert not summary_agrees(replace(summary, prompt_key=prompt_key_of(LITERAL)), wire, 1)  # another prompt
    assert not summary_agrees(replace(summary, n=8), wire, 1)
    assert not summary_agrees(replace(summary, group_id="00" * 32), wire, 1)


# ---------------------------------------------------------------- Sharing


def sharing() -> Sharing:
    cfg = SimpleNamespace(swarm=SimpleNamespace(external_groups=2, share=True, swarm_id="public"))
    return Sharing(cfg, FakeLink(ALICE, None), tok_hash="")  # type: ignore[arg-type]


def summary(i: int) -> Summary:
    return Summary("peer", "chain_sum", "ab" * 16, 4, i % 5, 0, f"{i:064x}")


def test_summaries_are_returned_once_and_kept_by_group_id() -> None:
    s = sharing()
    s.link.summaries = [summary(1), summary(2)]
    assert s.summaries() == [summary(1), summary(2)] and s.summaries() == []
    assert s.summary_for(f"{1:064x}") == summary(1) and s.summary_for("ff" * 32) is None


def test_drain_takes_the_summaries_so_a_fetched_group_finds_its_own() -> None:
    s = sharing()
    s.link.summaries = [summary(7)]  # heard with the announce, before the fetch it caused
    s.drain()  # the node drains groups without asking for summaries first
    assert s.summary_for(f"{7:064x}") == summary(7)
    assert s.summaries() == [summary(7)]  # and still gets each summary once


def test_sharing_memory_is_bounded() -> None:
    s = sharing()
    n = SUMMARY_MEMORY + 10
    s.link.summaries = [summary(i) for i in range(n)]
    for _ in range(n // 1024 + 1):
        s.drain()
    out = s.summaries()
    assert len(out) == SUMMARY_MEMORY and out[0] == summary(10)  # the oldest 10 dropped, counted
    assert s.summary_counts == {"taken": n, "dropped": 10}
    assert s.summary_for(f"{9:064x}") is None and s.summary_for(f"{10:064x}") == summary(10)
