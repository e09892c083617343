"""The file layer of checkpoints: names, checksums, fsync, listing, verification, and the
crash-safe delete and set-aside (node/checkpoint.py writes and loads their contents).

A checkpoint is a directory `step_XXXXXXXX/` whose `MANIFEST.json` lists every file with its
sha256; only a directory with a manifest counts.  Names that never count: `.tmp-` (being
written), `.del-` (being deleted: renamed first, removed after, so a kill -9 mid-delete never
leaves a half-deleted `step_` directory) and `corrupt-` (set aside by `load_latest`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
PREFIX = "step_"
DELETING = ".del-"  # a directory being removed: never a checkpoint
CORRUPT = "corrupt-"  # a checkpoint that failed to load and was set aside by load_latest
REQUIRED = ("model.safetensors", "optimizer.pt", "rng.pt", "state.json", "config.yaml")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the reason."""


class IncompatibleCheckpoint(CheckpointError):
    """A sound checkpoint that does not fit this model or this code: no fallback helps."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Delete a directory so that no crash leaves a half-deleted one under its old name."""
    doomed = path.with_name(f"{DELETING}{path.name}-{os.getpid()}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(path, doomed)
    fsync(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def step_dirs(ckpt_dir: Path) -> list[Path]:
    """Every `step_XXXXXXXX` directory, complete or not, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.name)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints (with a manifest), oldest first.  Directories being written
    (`.tmp-`), being deleted (`.del-`) or set aside as corrupt (`corrupt-`) never count."""
    return [p for p in step_dirs(ckpt_dir) if (p / "MANIFEST.json").is_file()]


def latest(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def verify(path: Path) -> dict[str, Any]:
    """Check the manifest and every checksum; return state.json."""
    manifest_path = path / "MANIFEST.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no MANIFEST.json)")
    try:
        manifest = json.loads(manifest_path.read_bytes())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
            raise TypeError("'files' is not a map of names to digests")
    except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise IncompatibleCheckpoint(
            f"{path}: checkpoint format {manifest.get('format')} != supported {FORMAT_VERSION}"
        )
    for name in REQUIRED:
        if name not in files:
            raise CheckpointError(f"{path}: manifest lacks {name}")
    for name, digest in files.items():
        if Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{manifest_path}: names a file outside the checkpoint: {name!r}")
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if sha256(f) != digest:
            raise CheckpointError(f"{f}: checksum mismatch, the file is corrupt")
    try:
        state = json.loads((path / "state.json").read_bytes())
        int(state["step"]), int(state["policy_version"]), state["model_name"], dict(state["aliases"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / 'state.json'}: unreadable ({type(e).__name__}: {e})") from None
    return state


def newest_verified(ckpt_dir: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest checkpoint whose files all verify, and the newer ones that did not (with why),
    without loading a model or renaming anything: for readers of a run that may still be going
    (`swarmrl export`).  Raises `CheckpointError` when there is none or none is good."""
    ckpt_dir = Path(ckpt_dir)
    candidates = step_dirs(ckpt_dir)
    if not candidates:
        raise CheckpointError(f"no checkpoint in {ckpt_dir} (expected {ckpt_dir}/{PREFIX}XXXXXXXX)")
    skipped: list[tuple[Path, str]] = []
    for path in reversed(candidates):
        try:
            verify(path)
        except IncompatibleCheckpoint:
            raise
        except CheckpointError as e:
            skipped.append((path, str(e)))
            continue
        return path, skipped
    faults = "\n".join(f"  {p}: {why}" for p, why in skipped)
    raise CheckpointError(f"no good checkpoint in {ckpt_dir}; every one is corrupt:\n{faults}")


def set_aside(path: Path) -> None:
    """Rename a corrupt checkpoint out of the way, keeping it for whoever investigates."""
    target = path.with_name(f"{CORRUPT}{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{CORRUPT}{path.name}.{n}")
    os.rename(path, target)
    fsync(path.parent)
