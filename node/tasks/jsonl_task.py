"""`{question, answer}` rows from a JSONL file (or any list of rows), scored with math-verify
or a verifier plugin.  node/tasks/hf_dataset.py feeds it rows from a `datasets` dataset.

`math_verify.verify(parse(gold), parse(answer))` compares mathematically (1/2 == 0.5, sets,
expressions), so the answer format need not match the gold string.  A verifier plugin is any
`f(prompt, answer) -> float in [0, 1]`; it sees the row's metadata columns as `prompt.metadata`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from node.records import Prompt

HELDOUT_FRACTION = 0.1


def _wrap(text: str) -> str:
    return text if "$" in text or "\\boxed" in text else f"${text}$"


def math_equal(gold: str, answer: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(_wrap(gold)), parse(_wrap(answer))))
    except Exception:  # math-verify raises on unparsable input; that is a wrong answer
        return False


def map_row(row: object, question: str, answer: str, metadata: Sequence[str], where: str) -> dict:
    """A source row with its columns renamed to {question, answer, metadata}; `where` names it."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be an object, got {str(row)[:80]}")
    missing = [c for c in (question, answer, *metadata) if c not in row]
    if missing:
        raise ValueError(f"{where}: no column {missing[0]!r} (columns: {', '.join(map(str, row))}); "
                         "set the source's `fields`")  # fmt: skip
    return {"question": row[question], "answer": row[answer], "metadata": {c: row[c] for c in metadata}}


def check_row(row: object, where: str) -> None:
    """A row is {"question": text, "answer": text or number}; `where` names it in the error.
    A null or empty question is refused: str(None) would train on the text "None"."""
    if not isinstance(row, dict) or "question" not in row or "answer" not in row:
        raise ValueError(f"{where}: a row needs 'question' and 'answer', got {str(row)[:80]}")
    question, answer = row["question"], row["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: 'question' must be non-empty text, got {question!r}")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise ValueError(f"{where}: 'answer' must be non-empty text or a number, got {answer!r}")


Verifier = Callable[[Prompt, "str | None"], float]


class JsonlTask:
    """Rows are split deterministically (by `seed`) into train and held-out parts, unless
    `eval_rows` are given (a dataset's own eval split).  Errors name rows from 1 (a file's rows
    by their line number)."""

    def __init__(
        self,
        name: str,
        rows: list[dict],
        seed: int = 0,
        heldout_fraction: float = HELDOUT_FRACTION,
        eval_rows: list[dict] | None = None,
        verifier: Verifier | None = None,
    ):
        for i, row in enumerate(rows, 1):
            check_row(row, f"{name}: row {i}")
        for i, row in enumerate(eval_rows or [], 1):
            check_row(row, f"{name}: eval row {i}")
        self.name = name
        self.verifier = verifier
        if eval_rows is not None:
            train_rows, held_rows = rows, eval_rows
        else:
            order = list(range(len(rows)))
            random.Random(seed).shuffle(order)
            n_held = max(1, int(len(rows) * heldout_fraction)) if len(rows) > 1 else 0
            train_rows, held_rows = [rows[i] for i in order[n_held:]], [rows[i] for i in order[:n_held]]
        self._held = [self._make(r) for r in held_rows]
        self._train = [self._make(r) for r in train_rows]
        if not self._train:
            raise ValueError(
                f"{name}: needs at least 2 rows" if eval_rows is None else f"{name}: no training rows"
            )
        held = {p.question for p in self._held}
        self._by_question = {p.question: p for p in self._train if p.question not in held}

    @classmethod
    def from_file(cls, name: str, path: str | Path, seed: int = 0, fields=None, **kwargs) -> JsonlTask:
        """`fields` (a FieldMap: question/answer/metadata column names) renames the columns."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"jsonl file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
        rows = []
        for n, raw in enumerate(data.splitlines(), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start} of the line)"
                ) from None
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
                if fields is not None:
                    row = map_row(row, fields.question, fields.answer, fields.metadata, f"{path}:{n}")
                check_row(row, f"{path}:{n}")
                rows.append(row)
        return cls(name, rows, seed, **kwargs)

    def _make(self, row: dict) -> Prompt:
        q, a = str(row["question"]), str(row["answer"])
        pid = f"{self.name}:" + hashlib.sha256(f"{q}\x00{a}".encode()).hexdigest()[:16]
        return Prompt(pid, self.name, q, a, dict(row.get("metadata") or {}))

    def __len__(self) -> int:
        return len(self._train)

    def prompt(self, index: int) -> Prompt:
        return self._train[index]

    def lookup(self, question: str) -> Prompt | None:
        return self._by_question.get(question)

    def heldout(self, n: int) -> list[Prompt]:
        return self._held[:n]

    def score(self, prompt: Prompt, answer: str | None) -> float:
        if self.verifier is not None:
            return float(self.verifier(prompt, answer))
        return 1.0 if answer is not None and math_equal(prompt.answer, answer) else 0.0
