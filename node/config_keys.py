"""The reference of every config key, generated from the pydantic models themselves.

`swarmrl config keys` prints it; `docs/config.md` is the same walk as markdown
(`make config-docs`), and a test fails when the two differ, so the reference cannot go stale:
a field added to `node/config.py`, `node/algos/config.py` or `node/replay/config.py` (or any
section hung under `Config`) shows up with its type, bounds, default and description.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOC_PATH = "docs/config.md"
MAX_DEFAULT = 60  # longer defaults are cut in the reference; `swarmrl config show` prints them whole


@dataclass(frozen=True)
class Key:
    path: str  # dotted, list items as []: "tasks.sources[].size"
    type: str  # "float > 0, < 1", "auto | rich | plain", "list[str]"
    default: str  # as YAML/JSON would write it; "(required)" when there is none
    help: str


@dataclass(frozen=True)
class Section:
    path: str  # "" for the top level
    doc: str  # the model's docstring, first paragraph
    keys: list[Key]


def _model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _list_of_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (None,)
        return _model(item)
    return None


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]" if args else "dict"
    if _model(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = ((at.Gt, "gt", "> "), (at.Ge, "ge", ">= "), (at.Lt, "lt", "< "), (at.Le, "le", "<= "))


def bounds(field: FieldInfo) -> str:
    out = []
    for meta in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(meta, kind):
                out.append(f"{sign}{getattr(meta, attr)}")
        if isinstance(meta, at.MinLen):
            out.append(f"at least {meta.min_length} long")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_DEFAULT else text[: MAX_DEFAULT - 3] + "..."


def sections(model: type[BaseModel] | None = None, prefix: str = "") -> list[Section]:
    """Every section of the config tree, depth first, each with its own keys."""
    if model is None:
        from node.config import Config

        model = Config
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    keys: list[Key] = []
    below: list[Section] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if sub := _model(field.annotation):
            below += sections(sub, f"{path}.")
            continue
        if item := _list_of_model(field.annotation):
            keys.append(Key(path, f"list of {path}[] sections", default_text(field), field.description or ""))
            below += sections(item, f"{path}[].")
            continue
        kind = type_name(field.annotation)
        limits = bounds(field)
        keys.append(
            Key(path, f"{kind}, {limits}" if limits else kind, default_text(field), field.description or "")
        )
    if model.__doc__ is None or model.__doc__ == BaseModel.__doc__:
        doc = ""
    return [Section(prefix.rstrip("."), " ".join(doc.split()), keys)] + below


def text() -> str:
    """For a terminal: one key per line, grouped by section."""
    out = []
    for section in sections():
        if not section.keys:
            continue
        out.append(f"[{section.path or 'top level'}]" + (f"  {section.doc}" if section.doc else ""))
        for key in section.keys:
            out.append(f"  {key.path}  ({key.type}; default {key.default})")
            if key.help:
                out.append(f"      {key.help}")
        out.append("")
    return "\n".join(out)


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """docs/config.md."""
    out = [
        "# Config reference",
        "",
        "<!-- Generated by `make config-docs` (swarmrl config keys --markdown) from the pydantic",
        "     models in node/config.py, node/algos/config.py and node/replay/config.py: do not edit. -->",
        "",
        "Every key of a node's config, with its type and bounds, its default and what it does.",
        "A config is YAML or TOML files merged in order (`-c FILE` or `-c PRESET`, see",
        "`swarmrl config presets`), then dotted overrides on the command line",
        "(`trainer.lr=1e-6`, `tasks.sources.0.size=100`); `swarmrl config show` prints the result.",
        "A `[]` in a key marks the items of a list of sections, e.g. `tasks.sources[].size`.",
        "",
    ]
    for section in sections():
        if not section.keys:
            continue
        out += [f"## `{section.path}`" if section.path else "## Top level", ""]
        if section.doc:
            out += [section.doc, ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for k in section.keys:
            out.append(f"| `{k.path}` | {_cell(k.type)} | `{_cell(k.default)}` | {_cell(k.help)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # python -m node.config_keys > docs/config.md
    print(markdown(), end="")
