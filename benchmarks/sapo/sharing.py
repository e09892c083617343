"""The pure half of a toy SAPO agent: the text codec, wire groups, admission and selection.

Kept apart from the process (`agent.py`) so that it is tested without a network or a model
run (`tests/unit/test_sapo_toy.py`).  What it guarantees:

* `admit` re-scores every external completion from the question text alone (ground truth is
  computed here, never read from the group), so a peer's claim is only used when the caller
  asks for the `--trust-claims` ablation;
* `select_external` draws uniformly without replacement and never takes more than
  `per_peer_cap` groups of one origin (the SAPO paper has no cap; we add one so that a single
  peer, e.g. a liar, cannot fill a batch);
* `external_rollouts` recomputes behaviour log-probs under the local policy: peer text is
  trained on as if sampled here, the paper's choice.

A completion travels as text over the 16-token vocabulary (`CHARS`), EOS left implicit; a
text of fewer than MAX_NEW characters is closed with EOS again on arrival.  `liar_rewrite` is
the lie that hurts a trusting receiver most: claiming 1.0 for every completion would only make
zero-variance groups, which a GRPO receiver ignores, so the liar replaces half its answers by
wrong ones and claims the opposite of the truth for each (wrong ones "correct", right ones
"wrong").
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.toy.exp_t2 import WARM_STEPS, WARM_STOP_AT
from benchmarks.toy.seqmodel import (
    EOS,
    LEVELS,
    MAX_NEW,
    PAD,
    WIDTH,
    GPTConfig,
    Problems,
    Rollouts,
    TinyGPT,
    completion_logprobs,
    encode_prompts,
    score,
    target_completions,
    warm_start,
)
from protocol import Completion, RolloutGroup, SamplingParams, TaskRef, logprob_array, token_array

VERIFIER = "toy_add"
CHARS = "_^$>+=0123456789"  # token id -> character: PAD BOS EOS FMT PLUS EQ, digits 0..9
TOKENIZER_HASH = hashlib.sha256(CHARS.encode()).hexdigest()  # all toy models share the vocabulary
MAX_AGE = 2  # an external group older than this many local rounds is too stale to train on


# --- text codec and wire groups (pure) ----------------------------------------------------------


def completion_text(row: Tensor) -> str:
    """[MAX_NEW] completion tokens -> the characters before the first EOS (all, if truncated)."""
    toks = row.tolist()
    toks = toks[: toks.index(EOS)] if EOS in toks else toks
    return "".join(CHARS[t] for t in toks)


def completion_tokens(text: str) -> Tensor | None:
    """Inverse of `completion_text`: [MAX_NEW] tokens, closed by EOS unless the text fills all
    MAX_NEW positions (a truncated sample), PAD after; None for a text no sampler could make."""
    if len(text) > MAX_NEW or any(ch not in CHARS or ch == CHARS[EOS] for ch in text):
        return None
    toks = [CHARS.index(ch) for ch in text] + ([EOS] if len(text) < MAX_NEW else [])
    return torch.tensor(toks + [PAD] * (MAX_NEW - len(toks)), dtype=torch.long)


def question_text(a: int, b: int) -> str:
    return f"{a:0{WIDTH}d}+{b:0{WIDTH}d}"


def parse_question(q: str | None) -> tuple[int, int] | None:
    parts = (q or "").split("+")
    ok = len(parts) == 2 and all(len(p) == WIDTH and p.isascii() and p.isdigit() for p in parts)
    return (int(parts[0]), int(parts[1])) if ok else None


def problems_of(pairs: list[tuple[int, int]]) -> Problems:
    """Problems from (a, b) pairs; the level (bookkeeping only) is the digit count of max(a, b)."""
    levels = [min(len(LEVELS), len(str(max(a, b)))) for a, b in pairs]
    return Problems(
        torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs]), torch.tensor(levels)
    )


def completion_mask(comp: Tensor) -> Tensor:
    """[N, MAX_NEW] -> float mask: 1 up to and including the first EOS (what `sample` trains on)."""
    eos = (comp == EOS).long()
    return ((eos.cumsum(1) - eos) == 0).float()


def to_wire(
    a: int, b: int, comp: Tensor, claims: Tensor, swarm_id: str, model_id: str, version: int,
    behavior: Tensor | None = None,
) -> RolloutGroup:  # fmt: skip
    """An unsigned group: question text, completion texts, claimed correctness, no ground truth
    (receivers compute their own).  With `behavior` ([G, MAX_NEW] sampler log-probs) it also
    carries the token ids and their log-probs under `TOKENIZER_HASH`, for `--peer-logprobs reuse`."""
    mask = completion_mask(comp)
    lps = comp.float() if behavior is None else behavior
    completions = tuple(
        Completion(
            text=completion_text(row),
            token_ids=None if behavior is None else token_array(row[m > 0].tolist()),
            behavior_logprobs=None if behavior is None else logprob_array(lp[m > 0].clamp(max=0.0).tolist()),
            claimed_rewards={"correct": float(c)},
        )
        for row, m, lp, c in zip(comp, mask, lps, claims.tolist(), strict=True)
    )
    return RolloutGroup(
        swarm_id=swarm_id,
        task=TaskRef(question=question_text(a, b), verifier=VERIFIER),
        ground_truth=None,
        completions=completions,
        model_id=model_id,
        tokenizer_hash="" if behavior is None else TOKENIZER_HASH,
        policy_version=version,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=MAX_NEW),
    )


def liar_rewrite(problems: Problems, comp: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """What a liar publishes for [N, MAX_NEW] completions: each replaced with probability 1/2 by
    a well-formed wrong answer (``>`` and the digits of a + b + d, d in 1..9), and claims [N]
    that are the opposite of the truth."""
    n = len(comp)
    wrong = target_completions(
        Problems(problems.a + torch.randint(1, 10, (n,), generator=gen), problems.b, problems.level),
        torch.ones(n, dtype=torch.bool),
    )
    out = torch.where((torch.rand(n, generator=gen) < 0.5)[:, None], wrong, comp)
    return out, 1.0 - score(problems, out)[0].float()


# --- admission and selection (pure) -------------------------------------------------------------


@dataclass
class Candidate:
    """One admitted external group, re-scored here."""

    origin: str  # peer id that signed it
    a: int  # the problem, parsed from the question text
    b: int
    completions: Tensor  # [G, MAX_NEW] tokens
    rewards: Tensor  # [G] what we train on: `truth`, or `claimed` under --trust-claims
    truth: Tensor  # [G] correctness computed here from the question
    claimed: Tensor  # [G] the origin's claims (NaN where absent)
    round: int  # local round in which it entered the pool
    behavior: Tensor | None = None  # [G, MAX_NEW] the origin's sampler log-probs, if it sent them

    @property
    def informative(self) -> bool:
        return bool(self.rewards.max() > self.rewards.min())

    @property
    def lies(self) -> int:
        """Completions whose claim disagrees with our score (NaN claims are not counted)."""
        return int(((self.claimed - self.truth).abs() > 0.5).sum())


def admit(group: RolloutGroup, origin: str, round_: int, trust_claims: bool = False) -> Candidate | None:
    """Re-score a peer's group from its question text; None if it is not a well-formed toy group
    (or, when trusting claims, if a claim is missing)."""
    ab = parse_question(group.task.question) if group.task.verifier == VERIFIER else None
    toks = [completion_tokens(c.text) for c in group.completions]
    rows = [t for t in toks if t is not None]
    if ab is None or not rows or len(rows) != len(toks):
        return None
    comp = torch.stack(rows)
    truth = score(problems_of([ab] * len(rows)), comp)[0].float()
    claimed = torch.tensor([c.claimed_rewards.get("correct", math.nan) for c in group.completions])
    if trust_claims and not bool(torch.isfinite(claimed).all()):
        return None
    rewards = claimed if trust_claims else truth
    return Candidate(origin, ab[0], ab[1], comp, rewards, truth, claimed, round_, peer_logprobs(group, comp))


def peer_logprobs(group: RolloutGroup, comp: Tensor) -> Tensor | None:
    """[G, MAX_NEW] the origin's behaviour log-probs, when it sent them for exactly the tokens of
    its texts under our vocabulary; else None (the receiver then recomputes)."""
    if group.tokenizer_hash != TOKENIZER_HASH:
        return None
    mask = completion_mask(comp)
    out = torch.zeros(comp.shape)
    for i, c in enumerate(group.completions):
        n = int(mask[i].sum())
        if c.token_ids is None or c.behavior_logprobs is None or list(c.token_ids) != comp[i, :n].tolist():
            return None
        out[i, :n] = torch.tensor(list(c.behavior_logprobs))
    return out


def fresh(pool: list[Candidate], round_: int, max_age: int = MAX_AGE) -> list[Candidate]:
    """The groups of `pool` that entered it at most `max_age` rounds before `round_`."""
    return [c for c in pool if c.round >= round_ - max_age]


def usable(pool: list[Candidate], per_peer_cap: int) -> int:
    """How many groups `select_external` could take from `pool` at most."""
    return sum(min(n, per_peer_cap) for n in Counter(c.origin for c in pool).values())


def select_external(pool: list[Candidate], j: int, per_peer_cap: int, rng: random.Random) -> list[Candidate]:
    """Up to `j` groups drawn uniformly without replacement, skipping an origin's draws once
    it has `per_peer_cap` groups in the selection."""
    taken: list[Candidate] = []
    per: Counter[str] = Counter()
    for c in rng.sample(pool, len(pool)):
        if len(taken) == j:
            break
        if per[c.origin] < per_peer_cap:
            taken.append(c)
            per[c.origin] += 1
    return taken


def external_rollouts(model: TinyGPT, cands: list[Candidate], version: int) -> Rollouts:
    """The chosen groups as `Rollouts`, behaviour log-probs recomputed under the local policy."""
    sizes = torch.tensor([len(c.rewards) for c in cands])
    problems = problems_of([(c.a, c.b) for c in cands for _ in range(len(c.rewards))])
    comp = torch.cat([c.completions for c in cands])
    tokens = torch.cat([encode_prompts(problems), comp], 1)
    mask = completion_mask(comp)
    with torch.no_grad():
        blp = completion_logprobs(model, tokens)[0] * mask
    return Rollouts(
        problems=problems,
        tokens=tokens,
        mask=mask,
        behavior_logprobs=blp,
        group_ids=torch.arange(len(cands)).repeat_interleave(sizes),
        correct=torch.cat([c.rewards for c in cands]) > 0.5,
        format_ok=score(problems, comp)[1],
        truncated=~(comp == EOS).any(1),
        behavior_version=version,
    )


def drift(local: Tensor, peer: Tensor, mask: Tensor) -> dict[str, float]:
    """How far the local policy is from the peers' samplers on their completions ([N, MAX_NEW]
    log-probs and mask): mean sequence log-ratio log pi_local(y) - log mu_peer(y), and the
    share of tokens whose ratio is off 1 by more than 0.2."""
    d = (local - peer) * mask
    return {
        "ext_seq_logratio": float(d.sum(1).mean()),
        "ext_far_tokens": float(((d.exp() - 1).abs() > 0.2)[mask > 0].float().mean()),
    }


def groups_of(roll: Rollouts) -> list[tuple[Rollouts, Tensor]]:
    """One (rollouts, row mask) part per group, for `select_rollouts`."""
    return [(roll, roll.group_ids == g) for g in torch.unique(roll.group_ids).tolist()]


def warm_model(seed: int, config: GPTConfig, cache: Path) -> TinyGPT:
    """The run seed's supervised warm start at this size (as `exp_t2.warm_model`), cached."""
    path = cache / f"warm_s{seed}_d{config.d_model}_l{config.n_layer}.pt"
    model = TinyGPT(config)
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model
    model = warm_start(seed, steps=WARM_STEPS, stop_at=WARM_STOP_AT, config=config)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # agents never read half a file
    return model
