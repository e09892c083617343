"""`swarmrl export RUN_DIR OUT`: a run's checkpoint as a folder `from_pretrained` loads as-is.

What OUT holds:
- `--merge` (the default): `config.json`, `model.safetensors`, `generation_config.json` when
  the model has one, the tokenizer files (with the chat template and pad token the run trained
  with) and a `README.md` saying where it came from.  A LoRA run's adapters are merged into
  the base weights first (peft `merge_and_unload`), so the folder is a plain model;
- `--adapter` (LoRA runs only): peft's `adapter_config.json` + `adapter_model.safetensors`, the
  tokenizer and the README.  `base_model_name_or_path` names the base the run trained on, as a
  local folder when it was one: for `smollm2-135m-instruct` that is the GGUF-converted folder in
  `model.cache_dir`, because the adapters fit those dequantized weights, not the hub's.

Which checkpoint: `--checkpoint PATH`, else the newest one whose files verify
(`checkpoint.newest_verified`).  Nothing in the run directory is renamed or written, so a node
that is still training is not disturbed.  The model is rebuilt from the checkpoint's own
`config.yaml` on the CPU in float32 (a merge at full precision), then cast to `--dtype`
(default: the dtype the run trained in, from the checkpoint).  OUT is written beside itself
under a temporary name and renamed into place: there is never a half-written OUT.

`--push-to-hub REPO` checks, before anything heavy loads, that the hub can be reached and that a
token is set; offline (`HF_HUB_OFFLINE=1`, or no route to the hub) it fails at once with an
error naming the repo, and does not retry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from node import checkpoint as ckpt

DTYPES = ("auto", "float32", "bfloat16", "float16")


class ExportError(RuntimeError):
    """The export cannot be done as asked; the message says why and what to do."""


@dataclass
class Exported:
    out: Path
    checkpoint: Path
    step: int
    mode: Literal["merge", "adapter"]
    dtype: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # newer checkpoints that failed to verify
    url: str | None = None  # the hub commit, after --push-to-hub


def pick_checkpoint(run_dir: Path, path: Path | None = None) -> tuple[Path, dict[str, Any], list]:
    """(checkpoint dir, its state.json, newer ones skipped as corrupt).  RUN_DIR may itself be a
    checkpoint directory."""
    if path is None and (run_dir / "MANIFEST.json").is_file():
        path = run_dir
    if path is not None:
        return path, ckpt.verify(path), []
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    found, skipped = ckpt.newest_verified(run_dir / "checkpoints")
    return found, ckpt.verify(found), skipped


def hub_offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_hub(repo: str) -> None:
    """One request to the hub (who am I?), so that a push that cannot happen fails before the
    export starts, not after.  No retries."""
    if hub_offline():
        raise ExportError(
            f"--push-to-hub {repo}: offline (HF_HUB_OFFLINE=1), nothing can be pushed; unset it, or export "
            f"without --push-to-hub and upload later with `hf upload {repo} OUT`"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import LocalTokenNotFoundError

    try:
        HfApi().whoami()
    except LocalTokenNotFoundError:
        raise ExportError(
            f"--push-to-hub {repo}: no Hugging Face token; run `hf auth login` or set HF_TOKEN"
        ) from None
    except Exception as e:  # httpx connect errors, HTTP 401, ...: all mean "not now"
        raise ExportError(
            f"--push-to-hub {repo}: cannot reach the Hugging Face hub ({type(e).__name__}: {e}); export without "
            f"--push-to-hub and upload later with `hf upload {repo} OUT`"
        ) from None


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(
            f"{out} exists and is not empty; choose another folder or pass --force to replace it"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {out.parent}: {e.strerror or e}") from None


def export(
    run_dir: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    mode: Literal["merge", "adapter"] = "merge",
    dtype: str = "auto",
    push_to_hub: str | None = None,
    private: bool = False,
    force: bool = False,
) -> Exported:
    """Write the checkpoint as a Hugging Face folder (see the module docstring)."""
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser().absolute()
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    _check_out(out, force)
    if push_to_hub:
        check_hub(push_to_hub)
    path, state, skipped = pick_checkpoint(run_dir, Path(checkpoint).expanduser() if checkpoint else None)
    if mode == "adapter" and not state.get("lora"):
        raise ExportError(
            f"{path}: --adapter needs a LoRA run (model.lora.enabled=true); this one trained every weight"
        )

    import torch

    from node.config import load_config
    from node.lora import is_lora
    from node.policy import load_policy

    # solo: a lab node's allowlist file need not exist where the export runs
    overrides = [
        "model.device=cpu",
        "model.dtype=float32",
        "model.gradient_checkpointing=false",
        "swarm.mode=solo",
    ]
    cfg = load_config([path / "config.yaml"], overrides)
    policy = load_policy(cfg.model, for_training=False)
    restored = ckpt.load(path, policy.model, None, cfg.model.name)
    target = getattr(torch, state.get("dtype") or "float32") if dtype == "auto" else getattr(torch, dtype)

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        if mode == "adapter":
            policy.model.save_pretrained(tmp)  # peft: adapter_config.json + adapter_model.safetensors
        else:
            model = policy.model.merge_and_unload() if is_lora(policy.model) else policy.model
            model.to(target)
            model.config.use_cache = True
            model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(cfg, restored.step, state, mode, path))
        _readable(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = Exported(out, path, restored.step, mode, str(target).removeprefix("torch."), skipped)
    if push_to_hub:
        result.url = push(out, push_to_hub, private, f"swarmrl export of {path.name}")
    return result


def _readable(folder: Path) -> None:
    """mkdtemp makes 0700 and safetensors writes 0600: give the folder the modes of any other
    new folder (the umask's), since it is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def push(out: Path, repo: str, private: bool, message: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo, commit_message=message)
    except Exception as e:
        raise ExportError(
            f"--push-to-hub {repo}: the upload failed ({type(e).__name__}: {e}); {out} is complete, upload it "
            f"later with `hf upload {repo} {out}`"
        ) from None
    return str(getattr(commit, "commit_url", commit))


def model_card(cfg, step: int, state: dict[str, Any], mode: str, path: Path) -> str:
    """A short README: what the model is, where it came from, how to load it."""
    adapters = state.get("lora")
    library = "peft" if mode == "adapter" else "transformers"
    lora = (
        f"LoRA r={adapters['r']} alpha={adapters['alpha']:g} on {', '.join(adapters['target_modules'])}"
        f"{' (merged into the weights)' if mode == 'merge' else ' (adapter only)'}"
        if adapters
        else "full fine-tuning"
    )
    load = (
        "from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained(PATH)"
        if mode == "adapter"
        else "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(PATH)"
    )
    return (
        f"---\nlibrary_name: {library}\ntags: [swarmrl, reinforcement-learning]\n---\n\n"
        f"# Trained with swarmrl\n\n"
        f"- base model: `{cfg.model.name}`\n- training: {lora}, advantage `{cfg.algorithm.advantage}`, loss `{cfg.algorithm.loss}`\n"
        f"- checkpoint: `{path.name}` (step {step}, policy version {state['policy_version']})\n"
        f"- tasks: {', '.join(s.name for s in cfg.tasks.sources)}\n\n"
        f"```python\n{load}\n```\n"
    )
