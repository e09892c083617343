"""The `tasks` section of the node's config: where prompts come from and how they are scored.

Split out of node/config.py (which re-exports every name here); like it, this module imports no
torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The embedded default task: one-digit sums (see configs/solo_cpu.yaml for why).
ONE_DIGIT_SUMS: dict[str, Any] = {
    "min_terms": 2,
    "max_terms": 2,
    "min_digits": 1,
    "max_digits": 1,
    "operators": ["+"],
    "allow_parentheses": False,
    "allow_negation": False,
}


class Section(BaseModel):
    """A config section: unknown keys are errors, and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FieldMap(Section):
    """Which columns of a dataset row hold what (jsonl and hf_dataset sources)."""

    question: str = Field("question", description="column of the question text")
    answer: str = Field("answer", description="column of the ground-truth answer")
    metadata: list[str] = Field(
        default_factory=list, description="columns handed to the verifier as `prompt.metadata`"
    )


class TaskSource(Section):
    """One source of prompts.  `reasoning_gym`: any reasoning-gym dataset by name, scored by its
    own scorer.  `jsonl`: rows of {question, answer} scored with math-verify (or `verifier`).
    `hf_dataset`: a Hugging Face `datasets` dataset (local or hub; the `datasets` extra).
    `plugin`: a task of your own (docs/tasks.md).  A relative path or plugin file is read
    relative to the config file that names it (on the command line: the working directory)."""

    type: Literal["reasoning_gym", "jsonl", "hf_dataset", "plugin"] = Field(
        "reasoning_gym", description="kind of source"
    )
    name: str = Field(
        "basic_arithmetic", description="reasoning-gym dataset name, or a label (prompt ids carry it)"
    )
    path: str | None = Field(
        None,
        description="jsonl: the file; hf_dataset: a save_to_disk folder, a parquet/JSON/JSONL file, "
        "or a folder of such files (split names from file names)",
    )
    hub_id: str | None = Field(
        None, description="hf_dataset: a hub dataset id (online, or in the datasets cache)"
    )
    subset: str | None = Field(None, description="hf_dataset: the hub dataset's config name (gsm8k: main)")
    split: str = Field("train", description="hf_dataset: split trained on")
    eval_split: str | None = Field(
        None, description="hf_dataset: split of the held-out prompts; None = `heldout_fraction` of the rows"
    )
    heldout_fraction: float = Field(
        0.1, gt=0, lt=1, description="jsonl/hf_dataset without eval_split: share of rows held out for eval"
    )
    fields: FieldMap = Field(default_factory=FieldMap, description="jsonl/hf_dataset: column names")
    verifier: str | None = Field(
        None,
        description="jsonl/hf_dataset: plugin f(prompt, answer) -> [0, 1] scoring instead of math-verify",
    )
    plugin: str | None = Field(
        None,
        description="plugin: module:attr, path/to/file.py:attr or an entry point (swarmrl.tasks) "
        "of a task factory, called with `options` as keyword arguments",
    )
    size: int = Field(60, ge=1, description="reasoning_gym: number of generated training items")
    seed: int = Field(
        1234, description="reasoning_gym: generator seed (jsonl/hf_dataset: held-out split seed)"
    )
    weight: float = Field(1.0, gt=0, description="relative sampling weight among sources")
    options: dict[str, Any] = Field(
        default_factory=lambda: dict(ONE_DIGIT_SUMS),
        description="reasoning_gym: extra generator kwargs; plugin: kwargs of the factory (none unless set)",
    )

    @field_validator("plugin", "verifier")
    @classmethod
    def _loadable(cls, value: str | None, info: Any) -> str | None:  # info: pydantic.ValidationInfo
        from node.plugins import check

        if value is not None:
            check(value, "task" if info.field_name == "plugin" else "verifier")
        return value


class Example(Section):
    """A worked example, shown to the model as an earlier user/assistant turn."""

    question: str
    answer: str


class TasksConfig(Section):
    sources: list[TaskSource] = Field(default_factory=lambda: [TaskSource()], min_length=1)
    system_prompt: str = Field(
        "Reply with only the result inside answer tags.", description="system message of every prompt"
    )
    examples: list[Example] = Field(
        default_factory=lambda: [
            Example(question="Calculate 7 + 5.", answer="<answer>12</answer>"),
            Example(question="Calculate 20 - 6.", answer="<answer>14</answer>"),
        ],
        description="worked examples shown before every question as earlier turns (few-shot)",
    )
    reward_plugins: dict[str, str] = Field(
        default_factory=dict,
        description="your reward functions: name -> module:attr or path/to/file.py:attr "
        "of f(Scored) -> float (docs/tasks.md); weigh them by name in `rewards`",
    )
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"correctness": 1.0, "format": 0.2},
        description="reward name -> weight: a built-in (correctness, format, length), a `reward_plugins` "
        "name, or an installed entry point of group swarmrl.rewards",
    )
    chat_template: str | None = Field(
        None, description="a Jinja chat template, or the file holding one, used instead of the tokenizer's"
    )
    eval_size: int = Field(40, ge=1, description="held-out prompts for `swarmrl eval`")

    @field_validator("reward_plugins")
    @classmethod
    def _plugins_loadable(cls, value: dict[str, str]) -> dict[str, str]:
        from node.plugins import check
        from node.tasks.rewards import BUILTIN

        for name, spec in value.items():
            if name in BUILTIN:
                raise ValueError(f"{name!r} is a built-in reward; give yours another name")
            try:
                check(spec, "reward")
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        return value

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, float], info: Any) -> dict[str, float]:
        from node.tasks.rewards import check_reward_names

        if "reward_plugins" not in info.data:  # refused above, and already reported
            return value
        try:
            check_reward_names(value, info.data["reward_plugins"])
        except ValueError as e:
            raise ValueError(str(e).removeprefix("tasks.rewards: ")) from None
        return value

    @field_validator("chat_template")
    @classmethod
    def _template_readable(cls, value: str | None) -> str | None:
        from node.plugins import looks_like_template

        if value and not looks_like_template(value) and not Path(value).expanduser().is_file():
            raise ValueError(f"neither a Jinja template nor a file: {value}")
        return value
