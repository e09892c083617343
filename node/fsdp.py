"""FSDP2 for the node on several ranks (`trainer.parallel=fsdp`, node/distributed.py): what sharded
weights need beyond DDP.  PyTorch's `fully_shard` does the sharding; this module only decides
where, and keeps three views of the weights consistent:

- training: `shard_policy` shards each decoder layer and the whole policy pass (compute in the
  weights' dtype, bf16 on CUDA by default, with gradients reduced in float32), builds AdamW on the
  shards, and runs FSDP2's first (initialising) forward through the root;
- rollouts: an engine that generates from the trainer's own module (transformers) gets a whole,
  plain copy of the policy (`rollout_copy`, 2 bytes a parameter in bf16) that holds memory only
  while it generates: `whole_copy` fills it from the shards one tensor at a time before a
  generate call and empties it after, so the update's peak holds shards only (kept whole, the
  copy took back half of what sharding saved at 1.5B).  Generating through the sharded module
  instead, with its weights gathered, ran FSDP2's hooks around every decoder layer, which split
  the compiled decode into per-layer graphs until dynamo gave up and ran eagerly: 5.9x slower
  than DDP at 1.5B on an H200 (docs/benchmarks.md).  `gathered` holds every weight whole on every
  rank for an engine with its own copy anyway (vLLM) while it takes a weight push;
- checkpoints: `gather_state` gathers the weights and AdamW state whole onto rank 0, and
  `loadable` lets each rank cut its own shards out of a whole checkpoint without communication,
  so the files are those of one process and resume on any number of ranks (node/checkpoint.py
  reads and writes through `WholeModel`/`WholeOptimizer`, duck-typed like the real objects).

Before any of them, `reshard`: FSDP2 leaves the root's weights gathered after a forward without a
backward (e.g. the proximal pass), registered in place of the shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import distribute_tensor


def shard_policy(module: torch.nn.Module, trainer, cfg) -> torch.nn.Module:
    """Shard `module` (the policy pass wrapping `trainer.model`) over the ranks; rebuilds the
    trainer's AdamW on the shards (`cfg`: the trainer section).  Collective."""
    from node.trainer import build_adamw

    model = trainer.model
    # compute in the weights' own dtype (model.dtype: bf16 on CUDA by default), as one process
    # does; gradients are reduced over the ranks in float32
    mp = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
    for layer in _decoder_layers(model):
        fully_shard(layer, mp_policy=mp)
    fully_shard(module, mp_policy=mp)
    trainer.params = [p for p in model.parameters() if p.requires_grad]  # now DTensor shards
    trainer.optimizer = build_adamw(trainer.params, cfg, trainer.device)
    with torch.no_grad():  # FSDP2 initialises from the root's first forward: make it this one
        one = torch.ones((1, 2), dtype=torch.long, device=trainer.params[0].device)
        module(one, one, 1.0, False)
    reshard(module)
    return module


def rollout_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain copy of the (not yet sharded) policy for generation: no gradients, eval mode."""
    import copy

    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


@contextmanager
def whole_copy(module: torch.nn.Module, model: torch.nn.Module, target: torch.nn.Module) -> Iterator[None]:
    """`target` (a `rollout_copy` of `model`) holds `model`'s current weights, gathered from the
    shards under the FSDP2 root `module`, for the duration, and no memory outside it (its
    parameters are empty tensors then).  One parameter gathered at a time, each tied weight once
    (the deep copy kept ties as one parameter).  Collective: every rank, same order."""
    reshard(module)
    dst = dict(target.named_parameters())  # tied weights once, under the same names as `model`'s
    # one block per dtype: freed whole, it comes back whole from the caching allocator, usually at
    # the same address, so the compiled decode's CUDA graphs (which hold weight addresses) replay
    # instead of recording again
    params = list(model.named_parameters())  # DTensor shards: numel() and shape are the whole tensor's
    sizes: dict[torch.dtype, int] = {}
    for name, p in params:
        sizes[dst[name].dtype] = sizes.get(dst[name].dtype, 0) + p.numel()
    device = next(iter(dst.values())).device
    blocks = {dt: torch.empty(n, dtype=dt, device=device) for dt, n in sizes.items()}
    offset = dict.fromkeys(sizes, 0)
    with torch.no_grad():
        for name, p in params:
            q = dst[name]
            whole = p.full_tensor() if hasattr(p, "full_tensor") else p
            start, offset[q.dtype] = offset[q.dtype], offset[q.dtype] + whole.numel()
            view = blocks[q.dtype][start : offset[q.dtype]].view(whole.shape)
            view.copy_(whole)
            q.data = view
    del blocks
    try:
        yield
    finally:
        release(target)


def release(target: torch.nn.Module) -> None:
    """Free a `rollout_copy`'s weights: each parameter keeps its object (and dtype, device) over an
    empty tensor until `whole_copy` fills it again."""
    for p in target.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)


@contextmanager
def gathered(module: torch.nn.Module) -> Iterator[None]:
    """Every weight under `module` whole on every rank for the duration; collective."""
    shards = reshard(module)  # from one state on every rank (see `reshard`)
    for m in shards:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in shards:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def reshard(module: torch.nn.Module) -> list:
    """Every FSDP2 module under `module` back to its shards (local, no communication); returns
    them, root first.  FSDP2 leaves the root's weights gathered after a forward without backward,
    registered in place of the shards: `parameters()` and `state_dict()` of the inner model would
    then read stale gathered copies, and an `unshard()` would skip its all-gather on that rank only."""
    shards = [m for m in module.modules() if isinstance(m, FSDPModule)]
    for m in shards:
        m.reshard()
    return shards


def _whole(t: Any) -> Any:
    """A DTensor gathered whole onto the CPU (collective: every rank, same order)."""
    return t.full_tensor().cpu() if hasattr(t, "full_tensor") else t


def _shard(whole: torch.Tensor, like: Any) -> Any:
    """This rank's shard of a whole tensor, placed like `like` (no communication: every rank
    holds the whole tensor, read from the same checkpoint)."""
    if not hasattr(like, "device_mesh"):
        return whole
    whole = whole.to(like.device_mesh.device_type, like.dtype)
    return distribute_tensor(whole, like.device_mesh, like.placements, src_data_rank=None)


class _Whole:
    """A model or optimizer under FSDP2 as node/checkpoint.py reads and writes it: `state_dict()`
    holds whole tensors (from `gather_state`), `load_state_dict` cuts whole tensors into this
    rank's shards; everything else (names, LoRA checks, param groups) is the wrapped object's."""

    def __init__(self, inner: Any, state: dict | None = None):
        self._inner, self._state = inner, state

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def state_dict(self) -> dict:
        return self._state if self._state is not None else self._inner.state_dict()


class WholeModel(_Whole):
    def load_state_dict(self, tensors: dict, strict: bool = True) -> None:
        own = self._inner.state_dict()  # detached views of the live shards
        if strict and set(own) != set(tensors):
            raise RuntimeError(f"state dict keys differ: {sorted(set(own) ^ set(tensors))[:3]}")
        with torch.no_grad():
            for name, t in tensors.items():
                own[name].copy_(_shard(t, own[name]))


class WholeOptimizer(_Whole):
    def load_state_dict(self, state: dict) -> None:  # AdamW's per-parameter state tensors
        params = [p for g in self._inner.param_groups for p in g["params"]]
        shards = {
            i: {k: _shard(v, params[i]) if torch.is_tensor(v) and v.dim() else v for k, v in s.items()}
            for i, s in state["state"].items()
        }
        self._inner.load_state_dict({**state, "state": shards})


def gather_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, module: torch.nn.Module):
    """(WholeModel, WholeOptimizer) holding the whole state on CPU; collective (every rank calls
    it, in the same order)."""
    reshard(module)
    first: dict[int, str] = {}  # tied weights (embedding = LM head) are gathered once and stay one tensor
    tied = {n: first.setdefault(id(p), n) for n, p in model.named_parameters(remove_duplicate=False)}
    weights: dict[str, Any] = {}
    for k, v in model.state_dict().items():
        weights[k] = weights[tied[k]] if tied.get(k, k) in weights else _whole(v)
    opt = optimizer.state_dict()
    opt = {**opt, "state": {i: {k: _whole(v) for k, v in s.items()} for i, s in opt["state"].items()}}
    return WholeModel(model, weights), WholeOptimizer(optimizer, opt)


def loadable(model: torch.nn.Module, optimizer: torch.optim.Optimizer, module: torch.nn.Module):
    """(WholeModel, WholeOptimizer) that a checkpoint loads into on this rank alone."""
    reshard(module)
    return WholeModel(model), WholeOptimizer(optimizer)


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks FSDP2 shards one by one (Hugging Face causal LMs: model.model.layers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    return list(getattr(inner, "layers", []))
