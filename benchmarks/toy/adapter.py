"""The T2 tiny GPT (`seqmodel.py`, graded addition) behind the node's own protocols.

With these parts `Node(cfg, run_dir, parts=toy_parts(...))` runs the node's code on the toy:
the prompt sampler, `collect`, scoring through `node/tasks/rewards.py`, admission and the pool
(join mode), advantages, and the PPO update of `node/trainer.py`.  Only what is toy-specific
lives here:

- `ToyTokenizer`: the 16-token vocabulary as characters (`CHARS`), one character per token.  A
  completion's text is its characters before EOS, so `">975"` is FMT 9 7 5; encoding a text
  gives back the same ids (the peer path re-tokenizes text, `node/exchange.py`).
- `ToyLM`: `TinyGPT` with the call signature `node/batching.py` `token_logprobs` uses.
- `ToyRenderer`: a question `0123+0456` -> BOS 0123+0456 = (no chat template, no examples).
- `ToyAddition`: a `Task` of graded addition.  The answer is the sum's digits least significant
  first (what the model writes), compared as a string with what `rewards.extract_answer` finds:
  without `<answer>` tags that is the last number of the text, so `">975"` and `"975"` both
  answer 123 + 456.  The toy has no closing tag, so the `format` reward cannot be earned: the
  toy configs use `tasks.rewards = {correctness: 1.0}` (as the earlier harness trained on
  correctness alone).  One difference from `seqmodel.score`, which wanted an optional `>` then
  digits only: the node's extractor also accepts texts such as `">>975"` or `"9+975"` whose last
  number is right.  They are rare after the warm start.
- `ToyEngine`: a `RolloutEngine` over `seqmodel.sample` (ancestral sampling with the sampler's
  own log-probs at the same temperature the trainer uses); `sync_weights` only records the
  version, the engine samples from the very module the trainer updates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.toy.seqmodel import BOS, EOS, EQ, LEVELS, MAX_NEW, PAD, WIDTH, Problems, TinyGPT, sample
from node.records import Completion, Group, Prompt, Request, SamplingParams

CHARS = "_^$>+=0123456789"  # token id -> character: PAD BOS EOS FMT PLUS EQ, digits 0..9
SPECIAL = (PAD, BOS, EOS)
TASK = "toy_add"


class ToyTokenizer:
    """What the node asks of a tokenizer: ids for text and back, pad/eos ids, a vocabulary for
    `exchange.tokenizer_hash` (every toy model shares it, so `peer_logprobs=reuse` applies)."""

    pad_token_id, eos_token_id, unk_token_id = PAD, EOS, None
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        """Raises ValueError on a character outside the vocabulary or a special one (the node
        refuses such a peer group as an admission `ERROR`)."""
        ids = []
        for ch in text:
            i = CHARS.find(ch)
            if i < 0 or i in SPECIAL:
                raise ValueError(f"character {ch!r} is not a toy token")
            ids.append(i)
        return {"input_ids": ([BOS] if add_special_tokens else []) + ids}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(CHARS[i] for i in ids if not (skip_special_tokens and i in SPECIAL))

    def get_vocab(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(CHARS)}

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.get_vocab().get(token)


class ToyLM(nn.Module):
    """`TinyGPT` called as the node calls a causal LM (right padding is harmless: attention is
    causal, so a position never sees the pads after it)."""

    def __init__(self, net: TinyGPT) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, use_cache: bool = False,
                logits_to_keep: int = 0) -> SimpleNamespace:  # fmt: skip
        logits = self.net(input_ids)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


@dataclass
class ToyPolicy:
    model: ToyLM
    tokenizer: ToyTokenizer = field(default_factory=ToyTokenizer)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def question_text(a: int, b: int) -> str:
    return f"{a:0{WIDTH}d}+{b:0{WIDTH}d}"


def parse_question(q: str) -> tuple[int, int]:
    a, b = q.split("+")
    return int(a), int(b)


def reversed_sum(a: int, b: int) -> str:
    return str(a + b)[::-1]


class ToyRenderer:
    """The one prompt form of the toy: BOS, the question's characters, `=`."""

    def __init__(self, tokenizer: ToyTokenizer | None = None) -> None:
        self.tokenizer = tokenizer or ToyTokenizer()
        self.end_of_turn = EOS
        self.stop_ids = {EOS}

    def ids(self, question: str) -> list[int]:
        return [BOS] + self.tokenizer(question)["input_ids"] + [EQ]

    def requests(self, prompts: list[Prompt]) -> list[Request]:
        return [Request(p, self.ids(p.question)) for p in prompts]


class ToyAddition:
    """`Task`: `size` training problems, levels drawn with `level_weights` (1..4 digits), and a
    held-out set of distinct questions that never appear among the training ones.  Every agent
    of a run builds it from the same `seed`, so peers' questions are found by `lookup`."""

    def __init__(self, seed: int, size: int = 20_000, level_weights: tuple[float, ...] = (1, 1, 1, 1),
                 heldout_per_level: int = 64, name: str = TASK) -> None:  # fmt: skip
        self.name, self.seed = name, seed
        rng = random.Random(f"toy_add:{seed}")
        held: list[tuple[int, int, int]] = []
        for lv in LEVELS:  # level 1 has 100 questions in all: hold out at most a fifth of a level
            want, seen = min(heldout_per_level, 10**lv * 10**lv // 5), set()
            while len(seen) < want:
                ab = (rng.randrange(10**lv), rng.randrange(10**lv))
                if ab not in seen:
                    seen.add(ab)
                    held.append((lv, *ab))
        self._held = [self._make(f"{name}:{seed}:heldout{i}", *x) for i, x in enumerate(held)]
        banned = {(a, b) for _, a, b in held}
        train: list[tuple[int, int, int]] = []
        while len(train) < size:
            lv = rng.choices(LEVELS, weights=level_weights)[0]
            ab = (rng.randrange(10**lv), rng.randrange(10**lv))
            if ab not in banned:
                train.append((lv, *ab))
        self._train = [self._make(f"{name}:{seed}:{i}", *x) for i, x in enumerate(train)]
        self._by_question: dict[str, Prompt] = {}
        for p in self._train:
            self._by_question.setdefault(p.question, p)

    def _make(self, pid: str, level: int, a: int, b: int) -> Prompt:
        return Prompt(pid, self.name, question_text(a, b), reversed_sum(a, b), {"level": level})

    def __len__(self) -> int:
        return len(self._train)

    def prompt(self, index: int) -> Prompt:
        return self._train[index]

    def lookup(self, question: str) -> Prompt | None:
        return self._by_question.get(question)

    def heldout(self, n: int | None = None) -> list[Prompt]:
        return self._held if n is None else self._held[:n]

    def score(self, prompt: Prompt, answer: str | None) -> float:
        return 1.0 if answer is not None and answer.strip() == prompt.answer else 0.0


class ToyEngine:
    """`RolloutEngine` over `seqmodel.sample`; a completion keeps its tokens up to and including
    EOS and the sampler's log-prob of each (temperature 0 or `greedy`: argmax)."""

    def __init__(self, net: TinyGPT, seed: int, tokenizer: ToyTokenizer | None = None) -> None:
        self.net = net
        self.gen = torch.Generator().manual_seed(seed)
        self.tokenizer = tokenizer or ToyTokenizer()
        self.version = 0
        self.generated = 0  # completions sampled so far (what a user pays for)

    def generate(self, requests: list[Request], group_size: int, sampling: SamplingParams) -> list[Group]:
        if not requests:
            return []
        pairs = [parse_question(r.prompt.question) for r in requests]
        problems = Problems(torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs]),
                            torch.tensor([r.prompt.metadata.get("level", 0) for r in requests]))  # fmt: skip
        temperature = 0.0 if sampling.greedy else sampling.temperature
        was_training = self.net.training
        self.net.eval()
        roll = sample(self.net, problems, group_size, self.gen, temperature=temperature, version=self.version)
        self.net.train(was_training)
        self.generated += len(roll.mask)
        out = []
        for gi, req in enumerate(requests):
            comps = []
            for row in range(gi * group_size, (gi + 1) * group_size):
                n = int(roll.mask[row].sum())
                ids = roll.tokens[row, len(req.prompt_ids) : len(req.prompt_ids) + n].tolist()
                comps.append(Completion(
                    req.prompt, list(req.prompt_ids), ids, roll.behavior_logprobs[row, :n].tolist(),
                    self.tokenizer.decode(ids), "length" if bool(roll.truncated[row]) else "stop", self.version,
                ))  # fmt: skip
            out.append(Group(req.prompt, tuple(comps)))
        return out

    def sync_weights(self, version: int) -> None:
        self.version = version


def toy_parts(net: TinyGPT, task: ToyAddition, sample_seed: int) -> Any:
    """`node.node.Parts` for a toy node: the policy, the task, the renderer and the engine."""
    from node.node import Parts

    tokenizer = ToyTokenizer()
    policy = ToyPolicy(ToyLM(net), tokenizer)
    return Parts(policy, [task], ToyRenderer(tokenizer), ToyEngine(net, sample_seed, tokenizer))


def toy_config(seed: int, overrides: dict[str, Any] | None = None) -> Any:
    """A node `Config` with T2's RL settings: 8 groups x G 8 at temperature 1, completions of at
    most 8 tokens, correctness the only reward; GRPO + ppo_clip; Adam (AdamW without decay)
    lr 3e-4, betas (0.9, 0.99), grad clip 1, one epoch of 4 shuffled mini-batches of 16 rows (2
    groups), so ratios leave 1 from the second optimizer step."""
    from node.config import Config

    base: dict[str, Any] = {
        "seed": seed,
        "model": {"name": "tinygpt-d64-l2", "device": "cpu"},
        "tasks": {"rewards": {"correctness": 1.0}, "system_prompt": "", "examples": []},
        "rollout": {"prompts_per_step": 8, "group_size": 8, "max_new_tokens": MAX_NEW, "temperature": 1.0},
        "algorithm": {"advantage": "grpo"},
        "trainer": {
            "lr": 3e-4,
            "grad_clip": 1.0,
            "ppo_epochs": 1,
            "mini_batch_size": 16,
            "micro_batch_size": 64,
        },
        "logging": {"tensorboard": False, "status_file": False},
    }
    return Config.model_validate(_merge(base, overrides or {}))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def heldout_pass(engine: ToyEngine, renderer: ToyRenderer, task: ToyAddition, samples: int = 4,
                 seed: int = 70_000) -> dict[str, float]:  # fmt: skip
    """Held-out pass@1 (mean correctness of `samples` samples at temperature 1) per level, scored
    by the node's scorer; "all" is the mean of the level means.  Uses its own generator, so an
    evaluation never moves the engine's sampling stream."""
    from node.scoring import score_groups

    prompts = task.heldout()
    saved, engine.gen = engine.gen, torch.Generator().manual_seed(seed)
    before = engine.generated
    try:
        groups = engine.generate(
            renderer.requests(prompts), samples, SamplingParams(MAX_NEW, temperature=1.0)
        )
    finally:
        engine.gen, engine.generated = saved, before
    groups = score_groups(groups, {task.name: task}, {"correctness": 1.0}, MAX_NEW)
    by_level: dict[int, list[float]] = {}
    for g in groups:
        by_level.setdefault(g.prompt.metadata["level"], []).extend(g.rewards)
    out = {f"L{lv}": sum(v) / len(v) for lv, v in sorted(by_level.items())}
    return out | {"all": sum(out.values()) / len(out)}


def warm_model(seed: int, config: Any, cache: Any) -> TinyGPT:
    """The run seed's supervised warm start at this size (`seqmodel.warm_start` with exp_t2's cap
    and stop rule), cached as CACHE/warm_s{seed}_d{d}_l{n}.pt; written atomically, so agent
    processes that start together only ever read whole files."""
    from pathlib import Path

    from benchmarks.toy.seqmodel import warm_start

    WARM_STEPS, WARM_STOP_AT = 3000, 0.4
    path = Path(cache) / f"warm_s{seed}_d{config.d_model}_l{config.n_layer}.pt"
    model = TinyGPT(config)
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model
    model = warm_start(seed, steps=WARM_STEPS, stop_at=WARM_STOP_AT, config=config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return model
