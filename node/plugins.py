"""User code named in the config: tasks, reward functions and verifiers.

A plugin is named one of three ways:

- `package.module:attr` -- an attribute of an importable module (`attr` may be dotted);
- `path/to/file.py:attr` -- an attribute of a Python file.  A relative path in a config file
  is relative to that file's folder (`anchor_paths` rewrites it when the file is read), so
  `swarmrl run`, `swarmrl lab up` (whose nodes get the same files) and a container that
  mounts the config's folder all find it; a relative path in a command-line override is
  relative to the working directory;
- a bare `name` -- an entry point of an installed package, in the group of its kind:
  `swarmrl.tasks`, `swarmrl.rewards` or `swarmrl.verifiers` (pyproject.toml:
  `[project.entry-points."swarmrl.rewards"] brevity = "mypkg.rewards:brevity"`).

Every failure is a `PluginError` (a ValueError, so the CLI prints it and exits 2) whose
message starts with the config key and repeats the spec: `tasks.reward_plugins.brevity:
cannot import 'mymod:score': No module named 'mymod'`.  Loading runs the user's module, as
any Python import does: a config is code you chose to run, never something a peer sent.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

GROUPS = {"task": "swarmrl.tasks", "reward": "swarmrl.rewards", "verifier": "swarmrl.verifiers"}


class PluginError(ValueError):
    """A plugin cannot be loaded; the message names the config key and the spec."""


def is_file_spec(spec: str) -> bool:
    """`dir/x.py:f` or `x.py:f` names a file; `pkg.mod:f` a module; `name` an entry point."""
    target, sep, _ = spec.rpartition(":")
    return bool(sep) and (target.endswith(".py") or "/" in target or "\\" in target)


def anchor(spec: str, folder: Path) -> str:
    """A relative file spec made absolute against `folder`; anything else unchanged."""
    if not is_file_spec(spec):
        return spec
    target, _, attr = spec.rpartition(":")
    path = Path(target).expanduser()
    return spec if path.is_absolute() else f"{(folder / path).resolve()}:{attr}"


def anchor_path(value: str, folder: Path) -> str:
    path = Path(value).expanduser()
    return value if path.is_absolute() else str((folder / path).resolve())


def anchor_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The raw `tasks` section of one config file with its relative paths made absolute
    against the file's folder: plugin specs, `sources[].path`, `chat_template` when it is a
    file.  Called on each file before merging, so every path is read where it was written."""
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        return data
    tasks = dict(tasks)
    plugins = tasks.get("reward_plugins")
    if isinstance(plugins, dict):
        tasks["reward_plugins"] = {
            k: anchor(v, folder) if isinstance(v, str) else v for k, v in plugins.items()
        }
    template = tasks.get("chat_template")
    if isinstance(template, str) and template and not looks_like_template(template):
        tasks["chat_template"] = anchor_path(template, folder)
    sources = tasks.get("sources")
    if isinstance(sources, list):
        out = []
        for source in sources:
            if isinstance(source, dict):
                source = dict(source)
                for key in ("plugin", "verifier"):
                    if isinstance(source.get(key), str):
                        source[key] = anchor(source[key], folder)
                if isinstance(source.get("path"), str):
                    source["path"] = anchor_path(source["path"], folder)
            out.append(source)
        tasks["sources"] = out
    return {**data, "tasks": tasks}


def looks_like_template(text: str) -> bool:
    """A Jinja chat template, as opposed to the path of a file holding one."""
    return "{{" in text or "{%" in text or "\n" in text


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ImportError(f"no such file: {path}")
    # one module per file, under a name that cannot clash with an installed package
    name = f"swarmrl_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _entry_point(kind: str, name: str) -> Any:
    group = GROUPS[kind]
    found = {ep.name: ep for ep in entry_points(group=group)}
    if name not in found:
        valid = ", ".join(sorted(found)) or "none installed"
        raise LookupError(f"no entry point {name!r} in group {group!r} (installed: {valid}); "
                          "or give module:attr or path/to/file.py:attr")  # fmt: skip
    return found[name].load()


def load(spec: str, kind: str, key: str) -> Any:
    """The object `spec` names; `kind` picks the entry-point group, `key` names the setting."""
    if ":" not in spec:
        try:
            return _entry_point(kind, spec)
        except Exception as e:
            raise PluginError(f"{key}: cannot load {kind} {spec!r}: {_reason(e)}") from None
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise PluginError(f"{key}: {spec!r} is not of the form module:attr or path/to/file.py:attr")
    try:
        module = (
            _import_file(Path(target).expanduser()) if is_file_spec(spec) else importlib.import_module(target)
        )
    except Exception as e:  # the user's module may raise anything while it runs
        raise PluginError(f"{key}: cannot import {spec!r}: {_reason(e)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{key}: cannot import {spec!r}: {target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, (ImportError, LookupError)) else f"{type(e).__name__}: {e}"


def load_callable(spec: str, kind: str, key: str) -> Any:
    obj = load(spec, kind, key)
    if not callable(obj):
        raise PluginError(f"{key}: {spec!r} is a {type(obj).__name__}, not a function")
    return obj


def check(spec: str, kind: str) -> None:
    """What can be checked without running the user's code: the entry point is installed, the
    file exists, the module's top-level package can be found.  Raises ValueError (the config
    validators add the key)."""
    if ":" not in spec:
        names = installed(kind)
        if spec not in names:
            raise ValueError(f"no {kind} {spec!r}: not module:attr, not path/to/file.py:attr, and no entry point "
                             f"of that name in group {GROUPS[kind]!r} (installed: {', '.join(names) or 'none'})")  # fmt: skip
        return
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"{spec!r} is not of the form module:attr or path/to/file.py:attr")
    if is_file_spec(spec):
        if not Path(target).expanduser().is_file():
            raise ValueError(f"cannot import {spec!r}: no such file: {Path(target).expanduser()}")
        return
    top = target.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError) as e:
        raise ValueError(f"cannot import {spec!r}: {e}") from None
    if found is None:
        raise ValueError(f"cannot import {spec!r}: No module named {top!r}")


def installed(kind: str) -> list[str]:
    """Entry-point names of `kind` that installed packages offer."""
    return sorted(ep.name for ep in entry_points(group=GROUPS[kind]))
