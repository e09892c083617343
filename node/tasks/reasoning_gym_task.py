"""Any reasoning-gym dataset by name, scored by the dataset's own `score_answer`.

Items are procedurally generated from (name, seed, index), so a prompt can be rebuilt and
re-scored anywhere from those three values.  Held-out prompts come from another seed, with
any question that also appears in the training items removed.
"""

from __future__ import annotations

from typing import Any

from node.records import Prompt

HELDOUT_SEED_OFFSET = 1_000_003


class ReasoningGymTask:
    def __init__(self, name: str, size: int, seed: int, options: dict[str, Any] | None = None):
        import reasoning_gym

        self.name = name
        self.seed = seed
        self.options = dict(options or {})
        try:  # reasoning-gym checks options with asserts, and some only fail when items are made
            self._train = reasoning_gym.create_dataset(name, size=size, seed=seed, **self.options)
            self._questions = {self._train[i]["question"]: i for i in range(len(self._train))}
        except Exception as e:
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise ValueError(
                f"reasoning-gym dataset {name!r} with options {self.options}: {reason}"
            ) from None
        self._entries: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._train)

    def _make(self, entry: dict[str, Any], seed: int, index: int) -> Prompt:
        pid = f"{self.name}:{seed}:{index}"
        self._entries[pid] = entry
        return Prompt(
            pid, self.name, entry["question"], str(entry["answer"]), dict(entry.get("metadata", {}))
        )

    def prompt(self, index: int) -> Prompt:
        return self._make(self._train[index], self.seed, index)

    def lookup(self, question: str) -> Prompt | None:
        index = self._questions.get(question)
        return None if index is None else self.prompt(index)

    def heldout(self, n: int) -> list[Prompt]:
        import reasoning_gym

        seed = self.seed + HELDOUT_SEED_OFFSET
        ds = reasoning_gym.create_dataset(self.name, size=4 * n + 16, seed=seed, **self.options)
        out, seen = [], set()
        for i in range(len(ds)):
            q = ds[i]["question"]
            if q in self._questions or q in seen:
                continue
            seen.add(q)
            out.append(self._make(ds[i], seed, i))
            if len(out) == n:
                break
        return out

    def score(self, prompt: Prompt, answer: str | None) -> float:
        if answer is None:
            return 0.0
        entry = self._entries.get(prompt.prompt_id) or {
            "question": prompt.question,
            "answer": prompt.answer,
            "metadata": prompt.metadata,
        }
        return float(self._train.score_answer(answer=answer.strip(), entry=entry))
