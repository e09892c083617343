"""T2 "tiny sequence model" (catalog F0): a character-level GPT on graded addition problems.

Task.  Level k in 1..4: ``a + b`` with ``a, b`` uniform in ``[0, 10^k)``.  The prompt is always
``BOS aaaa+bbbb=`` (operands zero-padded to 4 digits, so every prompt has the same length and
no left padding is needed); the wanted completion is ``> digits EOS`` with the digits of the sum
written least significant first (so each digit is a function of two operand digits and a carry,
which a 2-layer model can learn; at most 7 tokens, the sampler allows `MAX_NEW` = 8).  Two reward components: *correct* (the digits after an optional
``>`` equal ``a + b``) and *format* (the completion is exactly ``>`` + digits + EOS).

Warm start.  `warm_start` runs a short supervised phase on a mix weighted towards easy levels,
with only `format_rate` of the targets carrying the ``>``, so after it level 1 is mostly solved,
level 4 mostly not, and format compliance is partial (room for a format reward).

RL pieces: `TinyGPT` (the policy) and `sample` (rollouts with per-token behaviour log-probs).
There is no trainer here: experiments train through the node's own (`node/trainer.py`), with
the model, task and engine plugged in behind the node's protocols by `adapter.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD, BOS, EOS, FMT, PLUS, EQ = 0, 1, 2, 3, 4, 5
DIGIT0 = 6  # tokens 6..15 are the digits 0..9
VOCAB = 16
WIDTH = 4  # operand width in the prompt
PROMPT_LEN = 2 * WIDTH + 3  # BOS aaaa + bbbb =
MAX_NEW = 8
LEVELS = (1, 2, 3, 4)


# --- model ------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    max_len: int = PROMPT_LEN + MAX_NEW


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head = c.n_head
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(c.d_model, 4 * c.d_model), nn.GELU(), nn.Linear(4 * c.d_model, c.d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Pre-norm causal transformer; ~100k parameters at the default size."""

    def __init__(self, c: GPTConfig | None = None):
        super().__init__()
        c = c or GPTConfig()
        self.config = c
        self.tok = nn.Embedding(VOCAB, c.d_model)
        self.pos = nn.Embedding(c.max_len, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, VOCAB, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """[B, t] tokens -> [B, t, VOCAB] next-token logits."""
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


# --- task -------------------------------------------------------------------------------------


@dataclass
class Problems:
    a: Tensor  # [P] long
    b: Tensor  # [P] long
    level: Tensor  # [P] long, 1..4

    def __len__(self) -> int:
        return len(self.a)

    def repeat(self, g: int) -> Problems:
        return Problems(
            self.a.repeat_interleave(g), self.b.repeat_interleave(g), self.level.repeat_interleave(g)
        )


def make_problems(levels: Tensor, gen: torch.Generator) -> Problems:
    hi = (10**levels).to(torch.float64)
    a = (torch.rand(len(levels), generator=gen, dtype=torch.float64) * hi).long()
    b = (torch.rand(len(levels), generator=gen, dtype=torch.float64) * hi).long()
    return Problems(a, b, levels.long())


def _digits(x: Tensor, width: int) -> Tensor:
    """[P] -> [P, width] digit tokens, most significant first, zero-padded."""
    pows = 10 ** torch.arange(width - 1, -1, -1)
    return (x[:, None] // pows) % 10 + DIGIT0


def encode_prompts(p: Problems) -> Tensor:
    n = len(p)
    col = lambda v: torch.full((n, 1), v, dtype=torch.long)  # noqa: E731
    return torch.cat([col(BOS), _digits(p.a, WIDTH), col(PLUS), _digits(p.b, WIDTH), col(EQ)], 1)


def target_completions(p: Problems, with_format: Tensor) -> Tensor:
    """[P, MAX_NEW] wanted completions (``>``? reversed digits EOS, PAD after), for supervised warm-up."""
    out = torch.full((len(p), MAX_NEW), PAD, dtype=torch.long)
    for i, (s, fmt) in enumerate(zip((p.a + p.b).tolist(), with_format.tolist(), strict=True)):
        toks = ([FMT] if fmt else []) + [DIGIT0 + int(ch) for ch in str(s)[::-1]] + [EOS]
        out[i, : len(toks)] = torch.tensor(toks)
    return out


def score(p: Problems, completions: Tensor) -> tuple[Tensor, Tensor]:
    """Correctness and format of [N, MAX_NEW] completions: two [N] bool tensors."""
    correct = torch.zeros(len(p), dtype=torch.bool)
    fmt = torch.zeros(len(p), dtype=torch.bool)
    for i, (row, s) in enumerate(zip(completions.tolist(), (p.a + p.b).tolist(), strict=True)):
        if EOS not in row:
            continue
        body = row[: row.index(EOS)]
        has_fmt = len(body) > 0 and body[0] == FMT
        digits = body[1:] if has_fmt else body
        if digits and all(DIGIT0 <= t < DIGIT0 + 10 for t in digits):
            fmt[i] = has_fmt
            correct[i] = "".join(str(t - DIGIT0) for t in digits) == str(s)[::-1]
    return correct, fmt


# --- sampling ---------------------------------------------------------------------------------


@dataclass
class Rollouts:
    """Completions of one batch of prompts, G per prompt, rows grouped by prompt."""

    problems: Problems  # [N] (already repeated G times)
    tokens: Tensor  # [N, PROMPT_LEN + MAX_NEW]
    mask: Tensor  # [N, MAX_NEW] float: completion tokens up to and including EOS
    behavior_logprobs: Tensor  # [N, MAX_NEW] log mu(y_t) of the sampler, 0 outside the mask
    group_ids: Tensor  # [N] long
    correct: Tensor  # [N] bool
    format_ok: Tensor  # [N] bool
    truncated: Tensor  # [N] bool: no EOS within MAX_NEW
    behavior_version: int  # version of the sampler's weights

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(-1)


@torch.no_grad()
def sample(
    model: TinyGPT,
    problems: Problems,
    g: int,
    gen: torch.Generator,
    temperature: float = 1.0,
    version: int = 0,
) -> Rollouts:
    """``g`` completions per problem (plain ancestral sampling; greedy if temperature == 0)."""
    rep = problems.repeat(g)
    tokens = encode_prompts(rep)
    n = len(rep)
    done = torch.zeros(n, dtype=torch.bool)
    mask = torch.zeros(n, MAX_NEW)
    blp = torch.zeros(n, MAX_NEW)
    for t in range(MAX_NEW):
        logits = model(tokens)[:, -1]
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)[:, 0]
        lp = torch.log_softmax(logits / max(temperature, 1e-6), -1).gather(1, nxt[:, None])[:, 0]
        live = ~done
        mask[:, t] = live.float()
        blp[:, t] = torch.where(live, lp, torch.zeros_like(lp))
        nxt = torch.where(live, nxt, torch.full_like(nxt, PAD))
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        done |= nxt == EOS
        if bool(done.all()):
            pad = torch.full((n, MAX_NEW - t - 1), PAD, dtype=torch.long)
            tokens = torch.cat([tokens, pad], 1)
            break
    completions = tokens[:, PROMPT_LEN:]
    correct, fmt = score(rep, completions)
    return Rollouts(
        problems=rep,
        tokens=tokens,
        mask=mask,
        behavior_logprobs=blp,
        group_ids=torch.arange(len(problems)).repeat_interleave(g),
        correct=correct,
        format_ok=fmt,
        truncated=~done,
        behavior_version=version,
    )


@torch.no_grad()
def pass_rates(model: TinyGPT, problems: Problems, g: int, gen: torch.Generator, chunk: int = 4096) -> Tensor:
    """[P, g] correctness of ``g`` samples per problem (for pass@k and per-level pass rates)."""
    rows = []
    per = max(1, chunk // g)
    for i in range(0, len(problems), per):
        sub = Problems(problems.a[i : i + per], problems.b[i : i + per], problems.level[i : i + per])
        rows.append(sample(model, sub, g, gen).correct.view(-1, g))
    return torch.cat(rows)


def pass_at_k(correct: Tensor, k: int) -> Tensor:
    """Unbiased pass@k per problem from [P, n] samples (Chen et al. 2021): ``1 - C(n-c, k)/C(n, k)``."""
    n = correct.shape[1]
    c = correct.sum(1)
    out = torch.ones(len(c))
    for i, ci in enumerate(c.tolist()):
        if n - ci >= k:
            out[i] = 1 - math.comb(n - ci, k) / math.comb(n, k)
    return out


# --- supervised warm start --------------------------------------------------------------------


def warm_start(
    seed: int,
    steps: int = 600,
    batch: int = 128,
    lr: float = 3e-3,
    level_weights: tuple[float, ...] = (0.45, 0.3, 0.15, 0.1),
    format_rate: float = 0.5,
    config: GPTConfig | None = None,
    stop_at: float | None = None,
) -> TinyGPT:
    """A fresh `TinyGPT` trained with next-token cross-entropy on completions (prompt tokens not
    trained), on a mix biased to easy levels; a few seconds per hundred steps on one core.

    When the model "gets" carrying varies a lot between seeds (at 600 steps one seed solves
    level 2, another nothing), so with ``stop_at`` training stops at the first check (every 50
    steps, 32 problems per level, one sample each) where the mean pass rate over levels reaches
    ``stop_at``: seeds then start RL from comparable, graded pass rates.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TinyGPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    w = torch.tensor(level_weights)
    for step in range(steps):
        levels = torch.tensor(LEVELS)[torch.multinomial(w, batch, replacement=True, generator=gen)]
        p = make_problems(levels, gen)
        fmt = torch.rand(batch, generator=gen) < format_rate
        seq = torch.cat([encode_prompts(p), target_completions(p, fmt)], 1)
        logits = model(seq[:, :-1])[:, PROMPT_LEN - 1 :]
        tgt = seq[:, PROMPT_LEN:]
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1), ignore_index=PAD)
        for group in opt.param_groups:  # cosine decay
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if stop_at is not None and (step + 1) % 50 == 0:
            check = make_problems(torch.tensor(LEVELS).repeat_interleave(32), gen)
            if float(sample(model, check, 1, gen).correct.float().mean()) >= stop_at:
                break
    return model
