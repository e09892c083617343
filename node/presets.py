"""Configs by name: `swarmrl run -c solo_cpu` finds `configs/solo_cpu.yaml` wherever swarmrl is installed.

One source of truth: the repo's top-level `configs/` is the folder people read and edit, and
`node/configs` is a symlink to it, so the package's data files (pyproject `package-data`) carry
the same files into a wheel.  An editable install reads them through the link, an installed one
from `site-packages/node/configs`; this module only looks in `node/configs`, so both work alike.
(A Windows checkout without symlinks sees a text file there; the repo paths still work.)

A `-c` value is a path first: an existing file wins over a preset of the same name, so
`-c configs/tiny.yaml` keeps meaning the file in the current directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SUFFIXES = (".yaml", ".yml", ".toml")


def presets_dir() -> Path:
    return Path(str(resources.files("node") / "configs"))


@dataclass(frozen=True)
class Preset:
    name: str  # what `-c` takes: "solo_cpu", "algorithms/dapo"
    path: Path
    summary: str  # the first comment line of the file


def list_presets() -> list[Preset]:
    root = presets_dir()
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
        name = path.relative_to(root).with_suffix("").as_posix()
        out.append(Preset(name, path, _summary(path)))
    return out


def _summary(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def resolve(ref: str | Path) -> Path | None:
    """The file `ref` names: itself when it exists, else the preset of that name (with or
    without its suffix, `configs/` prefix optional); None when neither exists."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    root = presets_dir()
    name = Path(ref).as_posix().removeprefix("configs/")
    for candidate in [name] + [name + s for s in SUFFIXES]:
        found = root / candidate
        if found.is_file() and not candidate.startswith(("/", "..")):
            return found
    return None


def not_found(ref: str | Path) -> str:
    names = ", ".join(p.name for p in list_presets()) or "none installed"
    return f"config file not found: {ref} (not a file, nor a preset; presets: {names})"
