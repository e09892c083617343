"""Atomic, verified checkpoints.

A checkpoint is a directory `step_XXXXXXXX/` holding the weights (safetensors), the optimizer
state, the RNG states, `state.json` (step, policy version, model) and the resolved config,
plus `MANIFEST.json` with every file's sha256.  It is written under a temporary name, every
file and the directory are fsynced, and only then renamed into place: a `kill -9` at any
moment leaves either the previous complete checkpoint or the new one, never a torn one.

Loading reads and verifies everything (manifest, checksums, parameter names and shapes,
optimizer groups) before touching the live model, so a corrupt or incompatible checkpoint is
refused with a `CheckpointError` and never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the reason."""


@dataclass
class Restored:
    step: int
    policy_version: int
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict without tied duplicates, plus alias -> saved name for the tied ones."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_ptr: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in by_ptr:
            aliases[name] = by_ptr[key]
        else:
            by_ptr[key] = name
            tensors[name] = t.detach().cpu().contiguous()
    return tensors, aliases


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    state["python_version"] = random.getstate()[0]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    ckpt_dir: Path,
    step: int,
    policy_version: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config_yaml: str,
    model_name: str,
    keep: int,
) -> Path:
    """Write checkpoint `step` atomically, then keep only the newest `keep`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"{PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors, aliases = _unique_state(model)
    save_file(tensors, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = {
        "format": FORMAT_VERSION,
        "step": step,
        "policy_version": policy_version,
        "model_name": model_name,
        "aliases": aliases,
        "created": time.time(),
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    (tmp / "config.yaml").write_text(config_yaml)
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"format": FORMAT_VERSION, "files": {name: _sha256(tmp / name) for name in files}}
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    for p in tmp.iterdir():
        _fsync(p)
    _fsync(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(ckpt_dir)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_dir.glob(f".tmp-{PREFIX}*"):  # left by a killed writer
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints (with a manifest), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    done = [p for p in ckpt_dir.glob(f"{PREFIX}*") if (p / "MANIFEST.json").is_file()]
    return sorted(done, key=lambda p: p.name)


def latest(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def verify(path: Path) -> dict[str, Any]:
    """Check the manifest and every checksum; return state.json."""
    manifest_path = path / "MANIFEST.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no MANIFEST.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {manifest.get('format')} != supported {FORMAT_VERSION}")
    for name in ("model.safetensors", "optimizer.pt", "rng.pt", "state.json", "config.yaml"):
        if name not in files:
            raise CheckpointError(f"{path}: manifest lacks {name}")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"{f}: checksum mismatch, the file is corrupt")
    return json.loads((path / "state.json").read_text())


def load(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, model_name: str | None = None
) -> Restored:
    """Verify fully, then load weights (+ optimizer and RNG states when `optimizer` is given)."""
    path = Path(path)
    state = verify(path)
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(
            f"{path}: incompatible, it holds model {state['model_name']!r} but the config asks for {model_name!r}"
        )
    try:
        tensors = load_file(str(path / "model.safetensors"))
        for alias, src in state["aliases"].items():
            tensors[alias] = tensors[src]
        opt_state = torch.load(path / "optimizer.pt", weights_only=True) if optimizer is not None else None
        rng = torch.load(path / "rng.pt", weights_only=True) if optimizer is not None else None
    except Exception as e:  # a checksummed file that still fails to parse: refuse it
        raise CheckpointError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad_shape = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"{path}: incompatible with this model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {bad_shape[:3]})"
        )
    if opt_state is not None and optimizer is not None:
        groups = [len(g["params"]) for g in opt_state["param_groups"]]
        if groups != [len(g["params"]) for g in optimizer.param_groups]:
            raise CheckpointError(f"{path}: optimizer state has param groups {groups}, this model differs")
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    if opt_state is not None and optimizer is not None:
        optimizer.load_state_dict(opt_state)
        set_rng_state(rng)
    return Restored(step=int(state["step"]), policy_version=int(state["policy_version"]), path=path)
