"""Atomic, verified checkpoints.

A checkpoint is a directory `step_XXXXXXXX/` holding the weights (safetensors), the optimizer
state, the RNG states, `state.json` (step, policy version, model) and the resolved config,
plus `MANIFEST.json` with every file's sha256.  It is written under a temporary name, every
file and the directory are fsynced, and only then renamed into place: a `kill -9` at any
moment leaves either the previous complete checkpoint or the new one, never a torn one.

Loading reads and verifies everything (manifest, checksums, parameter names and shapes,
optimizer groups, component state) before touching the live model, so a corrupt or
incompatible checkpoint is refused with a `CheckpointError` and never half-loaded.

Component state: `save(..., components={"sampler": {...}, ...})` stores each named
component's `state_dict()` in `components.pt` (plain containers and tensors only, read back
with `weights_only=True`, so loading never unpickles code) and `load` returns it in
`Restored.components`; a checkpoint written without components restores `{}`.

Falling back: `load_latest` tries the checkpoints newest to oldest.  One that is corrupt
(no or garbage manifest, a missing file, a checksum mismatch, a file that fails to parse) is
skipped with a warning, reported in `Restored.skipped`, and, once an older one has loaded,
renamed to `corrupt-step_XXXXXXXX` so that it is kept for inspection but never counted again.
One that is *incompatible* (another model, another format) is not skipped: an older one of
the same run would be incompatible too, and training on from step 0 would hide the mistake.
If none is good the error names every file and why.

LoRA: for a policy with adapters (node/lora.py) the weights file holds only the trainable
adapter tensors, and `state.json` records the adapters' shape (`lora`) and a fingerprint of the
frozen base; loading refuses a checkpoint whose adapters or base do not match this model
(`IncompatibleCheckpoint`), and a full checkpoint into a LoRA model or the reverse.  Every
checkpoint also records the weights' `dtype`, which `swarmrl export` keeps by default.

Deleting is crash-safe too: a directory is first renamed to `.del-step_...` (atomic) and only
then removed, so a kill -9 mid-delete never leaves a half-deleted `step_...` that still holds
its manifest; leftovers are removed by the next save.

The file layer (names, checksums, listing, verification, deletes) is node/checkpoint_files.py;
this module writes and reads what is inside.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from node import lora
from node.checkpoint_files import (  # noqa: F401  (re-exported: callers import them from here)
    CORRUPT,
    DELETING,
    FORMAT_VERSION,
    PREFIX,
    REQUIRED,
    CheckpointError,
    IncompatibleCheckpoint,
    fsync,
    latest,
    list_checkpoints,
    newest_verified,
    remove,
    set_aside,
    sha256,
    step_dirs,
    verify,
)

COMPONENTS_FILE = "components.pt"

log = logging.getLogger(__name__)


@dataclass
class Restored:
    step: int
    policy_version: int
    path: Path
    components: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> its state_dict()
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # newer corrupt ones: (dir, reason)


def _unique_state(
    model: torch.nn.Module, only: set[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict (restricted to the names in `only`) without tied duplicates, plus alias ->
    saved name for the tied ones."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_ptr: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, t in model.state_dict().items():
        if only is not None and name not in only:
            continue
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


_PLAIN = (bool, int, float, str, type(None), torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    """Refuse, before anything is written, what `torch.load(weights_only=True)` would refuse."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(
                    f"{where}: key {k!r} is a {type(k).__name__}, only str and int keys are stored"
                )
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"{where} is a {type(value).__name__}: component state holds only dicts, lists, tuples, "
            "ints, floats, strings, bools, None and tensors"
        )


def save(
    ckpt_dir: Path,
    step: int,
    policy_version: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config_yaml: str,
    model_name: str,
    keep: int,
    components: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, then keep only the newest `keep`.

    `components` maps a name to that component's `state_dict()`; see the module docstring.
    """
    for name, state in (components or {}).items():
        if not isinstance(name, str) or not isinstance(state, dict):
            raise TypeError(
                f"components[{name!r}] must be a dict under a str name, got {type(state).__name__}"
            )
        _check_plain(state, f"components[{name!r}]")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"{PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    adapters = lora.describe(model)  # None: a full model, every weight is saved
    tensors, aliases = _unique_state(model, lora.trainable_names(model) if adapters else None)
    save_file(tensors, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    if components:
        torch.save(components, tmp / COMPONENTS_FILE)
    state = {
        "format": FORMAT_VERSION,
        "step": step,
        "policy_version": policy_version,
        "model_name": model_name,
        "aliases": aliases,
        "created": time.time(),
        "dtype": str(weights_dtype(model)).removeprefix("torch."),
        "lora": adapters,
        "base_fingerprint": lora.base_fingerprint(model) if adapters else None,
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    (tmp / "config.yaml").write_text(config_yaml)
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"format": FORMAT_VERSION, "files": {name: sha256(tmp / name) for name in files}}
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    for p in tmp.iterdir():
        fsync(p)
    fsync(tmp)
    if final.exists():
        remove(final)
    os.rename(tmp, final)
    fsync(ckpt_dir)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        remove(old)
    for stale in [*ckpt_dir.glob(f".tmp-{PREFIX}*"), *ckpt_dir.glob(f"{DELETING}*")]:  # left by a kill -9
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, model_name: str | None = None
) -> Restored:
    """Verify fully, then load weights (+ optimizer and RNG states when `optimizer` is given)."""
    path = Path(path)
    state = verify(path)
    if model_name is not None and state["model_name"] != model_name:
        raise IncompatibleCheckpoint(
            f"{path}: incompatible, it holds model {state['model_name']!r} but the config asks for {model_name!r}"
        )
    try:
        tensors = load_file(str(path / "model.safetensors"))
        for alias, src in state["aliases"].items():
            tensors[alias] = tensors[src]
        opt_state = torch.load(path / "optimizer.pt", weights_only=True) if optimizer is not None else None
        rng = torch.load(path / "rng.pt", weights_only=True) if optimizer is not None else None
        components = _load_components(path)
    except Exception as e:  # a checksummed file that still fails to parse: refuse it
        raise CheckpointError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    expected = model.state_dict()
    adapters = lora.describe(model)
    if state.get("lora") != adapters:
        raise IncompatibleCheckpoint(_lora_mismatch(path, state.get("lora"), adapters))
    if adapters is not None:
        trainable = lora.trainable_names(model)
        expected = {k: v for k, v in expected.items() if k in trainable}
        saved_fp, here_fp = state.get("base_fingerprint") or [], lora.base_fingerprint(model)
        if not lora.same_base(saved_fp, here_fp):
            raise IncompatibleCheckpoint(
                f"{path}: its LoRA adapters were trained on another base model than this {model_name or 'one'} "
                f"(base fingerprint {lora.fingerprint_digest(saved_fp)} != {lora.fingerprint_digest(here_fp)})"
            )
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad_shape = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise IncompatibleCheckpoint(
            f"{path}: incompatible with this model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {bad_shape[:3]})"
        )
    if opt_state is not None and optimizer is not None:
        groups = [len(g["params"]) for g in opt_state["param_groups"]]
        if groups != [len(g["params"]) for g in optimizer.param_groups]:
            raise IncompatibleCheckpoint(
                f"{path}: optimizer state has param groups {groups}, this model differs"
            )
    with torch.no_grad():
        model.load_state_dict(tensors, strict=adapters is None)  # adapters: the base stays as loaded
    if opt_state is not None and optimizer is not None:
        optimizer.load_state_dict(opt_state)
        set_rng_state(rng)
    return Restored(
        step=int(state["step"]), policy_version=int(state["policy_version"]), path=path, components=components
    )


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the (base) weights: the first floating-point tensor that does not train,
    or, for a fully trained model, the first one."""
    trainable = lora.trainable_names(model) if lora.is_lora(model) else set()
    floats = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
    return next(
        (t.dtype for n, t in floats if n not in trainable), floats[0][1].dtype if floats else torch.float32
    )


def _lora_mismatch(path: Path, saved: dict | None, here: dict | None) -> str:
    def name(info: dict | None) -> str:
        if info is None:
            return "full fine-tuning (model.lora.enabled=false)"
        return f"LoRA r={info['r']} alpha={info['alpha']:g} on {', '.join(info['target_modules'])}"

    return (
        f"{path}: incompatible, it was trained with {name(saved)} but this model is set up for {name(here)}"
    )


def _load_components(path: Path) -> dict[str, dict[str, Any]]:
    listed = json.loads((path / "MANIFEST.json").read_bytes())["files"]  # verified already
    if COMPONENTS_FILE not in listed:  # written without components, or before they existed
        return {}
    f = path / COMPONENTS_FILE
    components = torch.load(f, weights_only=True, map_location="cpu")
    if not isinstance(components, dict) or not all(isinstance(v, dict) for v in components.values()):
        raise TypeError(f"{COMPONENTS_FILE} does not map names to state dicts")
    return components


def load_latest(
    ckpt_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_name: str | None = None,
) -> Restored | None:
    """Load the newest good checkpoint in `ckpt_dir`, falling back past corrupt ones.

    None when there is no `step_*` directory at all.  Each corrupt one newer than the one
    loaded is logged, listed in `Restored.skipped` and renamed `corrupt-step_...`.  Raises
    `IncompatibleCheckpoint` at once for a sound checkpoint that does not fit, and a
    `CheckpointError` naming every directory and its fault when none is good.
    """
    ckpt_dir = Path(ckpt_dir)
    candidates = step_dirs(ckpt_dir)
    if not candidates:
        return None
    skipped: list[tuple[Path, str]] = []
    for path in reversed(candidates):
        try:
            restored = load(path, model, optimizer, model_name)
        except IncompatibleCheckpoint:
            raise
        except CheckpointError as e:
            log.warning("checkpoint %s is corrupt, trying an older one: %s", path.name, e)
            skipped.append((path, str(e)))
            continue
        for bad, _ in skipped:
            set_aside(bad)
        restored.skipped = skipped
        return restored
    faults = "\n".join(f"  {p}: {why}" for p, why in skipped)
    raise CheckpointError(f"no good checkpoint in {ckpt_dir}; every one is corrupt:\n{faults}")
