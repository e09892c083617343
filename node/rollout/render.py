"""The one prompt renderer: chat template, worked examples, and the end-of-turn ids.

Every engine and the peer path build prompts here, so a question rendered for generation, for
re-scoring a peer's text, or for a replayed group is the same token sequence.  Engines receive
token ids (`Request`), never text.

`tasks.chat_template` (a Jinja string or a file) replaces the tokenizer's template.  It is set
on the tokenizer itself, not only passed to `apply_chat_template`: the tokenizer hash that
peers compare before reusing each other's tokens (node/exchange.py) then differs from a peer
that renders with another template, and a tokenizer saved from this policy carries the
template it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from node.records import Prompt, Request


def read_template(value: str | None) -> str | None:
    """`tasks.chat_template`: the Jinja text itself, or read from the file it names."""
    from node.plugins import looks_like_template

    if not value or looks_like_template(value):
        return value or None
    path = Path(value).expanduser()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(
            f"tasks.chat_template: cannot read {path}: {getattr(e, 'strerror', None) or e}"
        ) from None


def end_of_turn_ids(tokenizer, model=None) -> set[int]:
    """Tokens that end an assistant turn: EOS, the model's generation EOS ids, and ChatML's
    `<|im_end|>` when the vocabulary has it."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    im_end = _im_end(tokenizer)
    if im_end is not None:
        ids.add(im_end)
    return {i for i in ids if i is not None}


def _im_end(tokenizer) -> int | None:
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return im_end if isinstance(im_end, int) and im_end != tokenizer.unk_token_id else None


@dataclass
class Renderer:
    """Questions -> chat-templated prompt ids, for one tokenizer and one task setup."""

    tokenizer: object
    system_prompt: str
    examples: list[tuple[str, str]] = field(default_factory=list)
    model: object = None  # for the generation config's EOS ids
    chat_template: str | None = None  # Jinja text replacing the tokenizer's; None keeps it

    def __post_init__(self) -> None:
        if self.chat_template is not None:
            self.tokenizer.chat_template = self.chat_template
        self.stop_ids = end_of_turn_ids(self.tokenizer, self.model)
        im_end = _im_end(self.tokenizer)
        # the token we close a re-tokenized peer completion with
        self.end_of_turn: int = im_end if im_end is not None else self.tokenizer.eos_token_id

    @classmethod
    def from_config(cls, tokenizer, tasks_cfg, model=None) -> Renderer:
        examples = [(e.question, e.answer) for e in tasks_cfg.examples]
        return cls(
            tokenizer, tasks_cfg.system_prompt, examples, model, read_template(tasks_cfg.chat_template)
        )

    def ids(self, question: str) -> list[int]:
        """System message, worked examples as earlier turns, then the question."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for q, a in self.examples:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def requests(self, prompts: list[Prompt]) -> list[Request]:
        return [Request(p, self.ids(p.question)) for p in prompts]
