"""Predicted pass rate of prompts never seen: attention over prompts whose pass rate we know.

DOTS (Sun et al. 2025, "Improving Data Efficiency for LLM RL Fine-tuning through Difficulty-targeted
Online Data Selection and Rollout Replay") predicts a prompt's pass rate as an attention-weighted
mean of the pass rates of reference prompts: ``w = softmax(s / T)`` over similarities ``s`` between
the prompt's embedding and the references', ``p_hat = sum_k w_k p_ref,k``.  This module holds that
predictor for the node: a bounded set of references (the most recently observed prompts with their
estimated pass rates) and the attention over them.

Where we depart from DOTS, and why:

- **Embedding.** DOTS embeds prompts with a frozen LM (mean-pooled hidden states).  We embed them
  with hashed character n-grams (`ngram_embedding`).  That costs no forward pass (the node may run
  on a volunteer's laptop), works for prompts peers send and before the policy is loaded, is
  deterministic across machines and library versions (so a resumed node predicts bit for bit what it
  predicted before), and does not drift as the policy trains.  The price is that it sees surface
  form, not meaning: prompts alike in wording are alike in difficulty, which holds within a task
  family and is what the replay layer needs to rank unseen prompts.
- **No learned parts.** DOTS learns projections ``W_q, W_r`` and a calibration head on the
  references.  The node has no budget for training a predictor, so the projections are the
  identity: a non-parametric kernel regression (Nadaraya-Watson) with a fixed temperature and a
  top-k cut, scores being cosines of unit vectors.  Instead of calibrating we measure: the replay
  layer tracks the predictions' Brier score against the pass rates later observed, and
  `PassRatePredictor.global_mean` is the baseline the predictor must beat.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter, OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

Ref = tuple[str, str, float]  # (prompt_id, text, p): one reference, as `state_dict` lists it


def ngram_embedding(text: str, dim: int = 512, orders: tuple[int, ...] = (1, 2, 3)) -> Tensor:
    """[dim] float32, unit L2 norm: ``e_j = log1p(c_j) / ||log1p(c)||`` where ``c_j`` counts the
    character n-grams of ``text`` (each order in ``orders``) that hash to bucket ``j``.

    Feature hashing (Weinberger et al. 2009) with ``zlib.crc32`` of ``"<order>:<gram>"`` in UTF-8, not
    Python's salted ``hash()``, so the vector is the same in every process.  ``log1p`` damps the
    grams every prompt is full of (spaces, common letters), as sublinear term frequency does in text
    retrieval.  The norm is taken in float64 before the one cast to float32.  Empty text: zeros.
    """
    counts: Counter[int] = Counter()
    for k in orders:
        for i in range(len(text) - k + 1):
            counts[zlib.crc32(f"{k}:{text[i : i + k]}".encode()) % dim] += 1
    if not counts:
        return torch.zeros(dim, dtype=torch.float32)
    vec = [0.0] * dim
    for j, c in counts.items():
        vec[j] = math.log1p(c)
    norm = math.sqrt(math.fsum(v * v for v in vec))
    return torch.tensor([v / norm for v in vec], dtype=torch.float32)


def attention_predict(query: Tensor, refs: Tensor, p_ref: Tensor, temperature: float, top_k: int) -> Tensor:
    """[Q] float64: ``p_hat_q = sum_{k in top} w_qk p_ref,k``, ``w_q = softmax(s_q,top / temperature)``.

    ``s = query @ refs.T`` [Q, K] (cosines, rows being unit vectors); only each row's ``top_k``
    largest scores take part.  The DOTS score with identity projections (DOTS also divides by
    ``sqrt(d)``, which only rescales the temperature).  ``query`` [Q, D], ``refs`` [K, D],
    ``p_ref`` [K].  No references (K == 0) raises ``ValueError``; `PassRatePredictor` answers None.
    """
    if refs.shape[0] == 0:
        raise ValueError("attention_predict needs at least one reference")
    k = min(top_k, refs.shape[0])
    scores = (query @ refs.T).to(torch.float64)
    top, idx = scores.topk(k, dim=1)
    w = torch.softmax(top / temperature, dim=1)
    return (w * p_ref.to(torch.float64)[idx]).sum(dim=1)


class PassRatePredictor:
    """Reference prompts with known (estimated) pass rates, and predictions for any prompt from them.

    Keeps the ``max_refs`` most recently updated references; an update of a known ``prompt_id``
    refreshes its text, pass rate and recency.  Query embeddings are cached (FIFO, at most
    ``4 max_refs`` texts); reference embeddings live with the references, and their stacked
    matrix is rebuilt on the first prediction after a change.  The state is the reference list
    alone: embeddings are a pure function of the text, so `load_state_dict` restores predictions
    bit for bit.
    """

    def __init__(self, max_refs: int, temperature: float, top_k: int, dim: int = 512) -> None:
        if max_refs < 1 or top_k < 1 or dim < 1 or not temperature > 0:
            raise ValueError(
                f"need max_refs, top_k, dim >= 1 and temperature > 0; got {max_refs}, {top_k}, {dim}, {temperature}"
            )
        self.max_refs = max_refs
        self.temperature = temperature
        self.top_k = top_k
        self.dim = dim
        # prompt_id -> (text, p, embedding [dim]), least recently updated first
        self._refs: OrderedDict[str, tuple[str, float, Tensor]] = OrderedDict()
        self._cache: OrderedDict[str, Tensor] = OrderedDict()  # text -> [dim], FIFO
        self._stacked: tuple[Tensor, Tensor] | None = None  # ([K, dim] float32, [K] float64), None = stale

    def __len__(self) -> int:
        return len(self._refs)

    def _embed(self, text: str) -> Tensor:
        """`ngram_embedding` of ``text``, through the bounded FIFO cache."""
        emb = self._cache.get(text)
        if emb is None:
            emb = ngram_embedding(text, self.dim)
            self._cache[text] = emb
            while len(self._cache) > 4 * self.max_refs:
                self._cache.popitem(last=False)
        return emb

    def update(self, prompt_id: str, text: str, p: float) -> None:
        """Insert or refresh a reference (it becomes the most recent); evict the least recent beyond
        ``max_refs``.  ``p`` must be a finite pass rate in [0, 1]."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"pass rate must be in [0, 1], got {p}")
        old = self._refs.pop(prompt_id, None)
        emb = old[2] if old is not None and old[0] == text else self._embed(text)
        self._refs[prompt_id] = (text, float(p), emb)
        while len(self._refs) > self.max_refs:
            self._refs.popitem(last=False)
        self._stacked = None

    def _matrix(self) -> tuple[Tensor, Tensor]:
        """References' embeddings [K, dim] and pass rates [K] (float64), in recency order."""
        if self._stacked is None:
            embs = [emb for _, _, emb in self._refs.values()]
            ps = [p for _, p, _ in self._refs.values()]
            self._stacked = (torch.stack(embs), torch.tensor(ps, dtype=torch.float64))
        return self._stacked

    def predict(self, texts: Sequence[str]) -> list[float | None]:
        """Predicted pass rate of each text (`attention_predict`); all None while there are no references."""
        if not self._refs:
            return [None] * len(texts)
        if not texts:
            return []
        refs, p_ref = self._matrix()
        query = torch.stack([self._embed(t) for t in texts])
        return [float(v) for v in attention_predict(query, refs, p_ref, self.temperature, self.top_k)]

    def global_mean(self) -> float | None:
        """Mean pass rate over the references (the baseline a prediction must beat); None if empty."""
        if not self._refs:
            return None
        return math.fsum(p for _, p, _ in self._refs.values()) / len(self._refs)

    def state_dict(self) -> list[Ref]:
        """The references as ``(prompt_id, text, p)``, least recent first: plain python, JSON-safe."""
        return [(pid, text, p) for pid, (text, p, _) in self._refs.items()]

    def load_state_dict(self, state: Sequence[Sequence[object]]) -> None:
        """Replace the references with ``state`` (as `state_dict` returns it, tuples or lists)."""
        refs: list[Ref] = []
        for entry in state:
            if len(entry) != 3:
                raise ValueError(f"a reference is (prompt_id, text, p), got {entry!r}")
            pid, text, p = entry
            if not isinstance(pid, str) or not isinstance(text, str) or not isinstance(p, (int, float)):
                raise ValueError(f"a reference is (str, str, float), got {entry!r}")
            refs.append((pid, text, float(p)))
        self._refs.clear()
        self._stacked = None
        for pid, text, p in refs:
            self.update(pid, text, p)
