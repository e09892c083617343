"""LoRA adapters (peft) on the local policy: what trains, what a checkpoint keeps, the reference.

Switched on by `model.lora.enabled=true` (the section is `node.config.LoraConfig`).  The policy
is then a peft `PeftModelForCausalLM` around the loaded model, and everything else follows from
that one fact:

- only the adapter weights have `requires_grad`, so the trainer's AdamW (which takes the
  trainable parameters) holds state for them alone; the trainer does not know about LoRA;
- the rollout engine generates with the same module, adapters on;
- a checkpoint stores the trainable tensors only (a few MB), plus `describe()` of the adapters
  and a fingerprint of the frozen base, so resuming onto another base or another rank is refused
  (`node/checkpoint.py`), not silently applied;
- the reference model of KL/ACE is `BaseView`: the same module with the adapters switched off,
  which *is* the initial policy, for no second copy of the weights;
- nothing on the wire changes: peers see text, token ids and log-probs, so LoRA and full
  fine-tuning peers mix freely in one swarm.

peft is imported only here and only when LoRA is on; without it the error names the package.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import torch

PEFT_MISSING = (
    "model.lora.enabled=true needs the peft package: `pip install peft` (a dependency of swarmrl; "
    "`pip install -e .` or `make setup` installs it)"
)


class LoraUnavailable(RuntimeError):
    """LoRA was asked for but peft is not installed."""


def require_peft():
    try:
        import peft
    except ImportError:
        raise LoraUnavailable(PEFT_MISSING) from None
    return peft


def is_lora(model: Any) -> bool:
    """True for a peft model (anything with adapters that can be switched off)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def apply_lora(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """Wrap `model` with fresh adapters (`cfg`: a `LoraConfig`); the base is frozen.

    Adapters start as B = 0 (peft's default), so the wrapped model computes exactly what the
    base did: step 0 of a LoRA run is the base policy, and the KL to `BaseView` starts at 0.
    """
    peft = require_peft()
    target = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    config = peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target, task_type="CAUSAL_LM"
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to answer
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, config)


def describe(model: Any) -> dict[str, Any] | None:
    """What makes adapters of one run fit another model: rank, alpha and the adapted module
    kinds (`all-linear` and its explicit list resolve to the same).  None for a full model."""
    if not is_lora(model):
        return None
    cfg = model.peft_config["default"]
    kinds = sorted({str(name).rsplit(".", 1)[-1] for name in cfg.target_modules})
    return {"r": int(cfg.r), "alpha": float(cfg.lora_alpha), "target_modules": kinds}


def trainable_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of the trainable tensors: the adapters, for a peft model."""
    return {name for name, p in model.named_parameters() if p.requires_grad}


def base_fingerprint(model: torch.nn.Module, samples: int = 16) -> list[float]:
    """A cheap fingerprint of the frozen weights: per tensor, the sum of `samples` evenly strided
    values, in name order.  Compared with a tolerance (`same_base`), so that the same base loaded
    in float32 or bfloat16 matches while another base (another init, another model) does not."""
    trainable = trainable_names(model)
    out = []
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if name in trainable or not t.is_floating_point():
                continue
            flat = t.reshape(-1)
            picked = flat[:: max(1, flat.numel() // samples)][:samples]
            out.append(round(float(picked.double().sum()), 6))
    return out


def same_base(a: list[float], b: list[float]) -> bool:
    """bf16 rounds each value by <= 0.4%: a sum of 16 moves by far less than the tolerance."""
    return len(a) == len(b) and all(abs(x - y) <= 1e-2 + 2e-2 * abs(y) for x, y in zip(a, b))


def fingerprint_digest(fp: list[float]) -> str:
    """A short name for a fingerprint, for messages."""
    return hashlib.sha256(repr(fp).encode()).hexdigest()[:12]


class BaseView:
    """The policy with its adapters switched off: the initial policy, for the KL/ACE reference.

    Callable like the model (`view(input_ids=..., attention_mask=...)`), shares its weights, and
    is not an `nn.Module`, so it never appears in a state dict or an optimizer.  `parameters()`
    yields the frozen base weights.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def parameters(self):
        trainable = trainable_names(self.model)
        return (p for n, p in self.model.named_parameters() if n not in trainable)

    def eval(self) -> BaseView:
        return self  # the policy's mode is the trainer's business


def summary(model: torch.nn.Module) -> str:
    """'LoRA r=16 alpha=32 on 7 module kinds: 1.8M of 136M parameters train (1.3%)'."""
    info = describe(model) or {}
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return (
        f"LoRA r={info.get('r')} alpha={info.get('alpha'):g} on {len(info.get('target_modules', []))} module "
        f"kinds: {n_train / 1e6:.2f}M of {n_all / 1e6:.1f}M parameters train ({100 * n_train / n_all:.2f}%)"
    )
