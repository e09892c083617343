"""One node on several GPUs: rank 0 is the node, the other ranks lend it their engines and their
share of every training pass (issue 16).  PyTorch's own stack throughout: `torch.distributed`
collectives, DDP or FSDP2 (`fully_shard`), launched by torchrun.

Launch: `torchrun --nproc-per-node N -m node.cli run ...`, or `swarmrl run --gpus N ...`, which
re-launches itself that way (node/launch.py).  Every rank builds the same policy, engine and trainer
(`Node(cfg)`; ranks > 0 without the swarm link: `worker_config`).  Rank 0 then runs `Node.run`
exactly as a single process does; ranks > 0 run `serve`, which executes the calls rank 0 makes.

Who plans: rank 0, and it broadcasts.  Everything that decides (the prompt sampler, the replay
layer, the swarm link, admission and the pool, advantages, the status file, the metrics endpoint,
trackers and checkpoints) lives on rank 0 only, so its state exists once and resume needs no
agreement between ranks.  Four methods are *collective*: when rank 0 calls one, it first
broadcasts (name, arguments) over a gloo control group (`broadcast_object_list`) and every rank
then runs the same method on the same arguments:

- `engine.generate(requests, G, sampling)`: the requests (one per group) are cut into contiguous
  shares, each rank generates its share with its own engine, and rank 0 gathers the groups back
  in order (`gather_object`).  Groups are sharded whole, so they arrive whole at the advantage
  estimator, which runs on rank 0 over every group of the step.
- `trainer.update(rows, advantages, newest)`, `trainer.policy_logprobs`, `trainer.ref_logprobs`:
  every rank gets the whole batch; each forward/backward pass takes this rank's share of the rows
  (`micro_batches`), and the no-grad passes all-gather their log-probs (`gather`).
- `engine.sync_weights(version)`: after the update every rank pushes its weights into its engine.
- `load` (rank 0 resumed: every rank loads the same checkpoint file) and `stop`.

Records cross between ranks pickled, which the style guide refuses for data from peers: here they
are our own ranks of one process group, and a peer's group reaches them only after rank 0 decoded
and validated it with the wire codec (node/admission.py).

Equal results.  A mini-batch's loss is a sum over its tokens (or sequences) divided by the whole
mini-batch's count (`LossInputs.global_tokens`/`global_seqs`), which every rank knows because
every rank holds every row; each rank's partial loss is therefore its rows' share of the
1-rank loss, and the 1-rank gradient is the *sum* of the ranks' gradients.  DDP and FSDP2 average
gradients over ranks, so the partial loss is multiplied by the world size before backward
(token-mean over the global batch, never a mean of per-rank means).  Every rank runs equally many
forward passes (a rank short of rows runs a zero-weighted padding pass): FSDP2 all-gathers weights
in every forward, and DDP reduces gradients in the last backward of each optimizer step (the
earlier micro-batches accumulate without a reduction, as `DDP.no_sync` does).  Logged loss and
token metrics are summed over ranks, as they are over micro-batches.  What differs from one rank
is float summation order: tests/unit/test_distributed.py asserts equality within 2e-5 (weights).

Parallelism (`trainer.parallel`): `ddp` (default) keeps a full copy of weights, gradients and
AdamW state on each rank: simplest, no weight all-gathers in the forward, and every engine
(transformers or vLLM) reads whole weights as it does in one process; right while the model, its
gradients and AdamW state (16 bytes a parameter) fit one GPU (1.5B on an H200).  `fsdp` shards
them (`fully_shard` per decoder layer and on the whole, computing in the weights' dtype with
float32 gradient reduction) for models that do not fit.  Generation reads whole weights: the
transformers engine gets its own plain copy (2 bytes a parameter in bf16; FSDP2's per-layer hooks
would break its compiled decode), filled from the shards for each generate call and emptied after,
so the update runs on shards alone; vLLM has its own anyway.
Checkpoints gather the weights whole (node/fsdp.py).

Checkpoints: written once, by rank 0, with every weight and the optimizer state whole (under
FSDP2 gathered to rank 0 first: `whole`); the same files a single process writes, so resume
works on any number of ranks (each rank loads the file rank 0 loaded: `share_checkpoint`).  Generation noise: ranks > 0 re-seed torch's generator before each
generate call from (seed, rank, policy version, call), so a resumed run on the same number of ranks
samples what the uninterrupted one would have; rank 0's generator is in the checkpoint as before.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from inspect import signature
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from node import fsdp
from node.batching import token_logprobs

# A rank waits in a broadcast while rank 0 does everything else of a step (and, at start, loads
# the model and opens trackers): the timeout is generous.  torchrun ends the others if one dies.
TIMEOUT = timedelta(hours=2)
_current: DataParallel | None = None  # this process's, once `attach` made it


def launched() -> bool:
    """Whether this process is one of several started by torchrun (torchrun's own contract)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def worker_config(cfg):
    """The config a rank > 0 builds its parts from: the swarm link is rank 0's alone."""
    return cfg.model_copy(update={"swarm": cfg.swarm.model_copy(update={"mode": "solo"})})


def share(n: int, r: int, w: int) -> slice:
    """Rank r's contiguous share of n items; shares differ by at most one, in rank order."""
    return slice(r * n // w, (r + 1) * n // w)


@dataclass
class Pass:
    rows: slice  # the rows this forward pass runs on
    real: bool = True  # False: a padding pass, weighted 0, so that every rank runs equally many


def micro_batches(n: int, size: int, dp: DataParallel | None) -> list[Pass]:
    """This rank's micro-batches over rows [0, n), at most `size` rows each.  One process: the
    rows in order.  Several ranks: this rank's share, padded with zero-weight passes on row 0 to
    the count of the largest share."""
    if dp is None:
        return [Pass(slice(s, s + size)) for s in range(0, n, size)]
    mine = share(n, dp.rank, dp.world)
    out = [Pass(slice(s, min(s + size, mine.stop))) for s in range(mine.start, mine.stop, size)]
    most = math.ceil(math.ceil(n / dp.world) / size)  # passes of the largest share
    return out + [Pass(slice(0, 1), real=False)] * (most - len(out))


class LogprobPass(torch.nn.Module):
    """`token_logprobs` of the policy as one module, so that DDP and FSDP2 wrap a forward that
    includes the chunked LM head (node/batching.py): the decoder and head are called separately
    there, which would bypass a wrapper around the model's own forward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.policy = model

    def forward(self, *args, **kwargs):
        return token_logprobs(self.policy, *args, **kwargs)


@dataclass
class DataParallel:
    """This rank's place in the node and the wrapped policy pass (see the module docstring)."""

    rank: int
    world: int
    control: Any  # the gloo process group for calls and Python objects
    module: torch.nn.Module  # LogprobPass wrapped in DDP, or the FSDP2 root
    fsdp: bool
    leading: bool = False  # rank 0 is inside a collective call (nested ones are not re-announced)
    calls: int = 0  # generate calls since the last weight sync (the re-seed of ranks > 0)
    seed: int = 0
    version: int = 0
    stopped: bool = False

    # -- calls -----------------------------------------------------------------------------
    def announce(self, name: str, args: tuple) -> None:
        dist.broadcast_object_list([name, args], src=0, group=self.control)

    def receive(self) -> tuple[str, tuple]:
        box: list[Any] = [None, None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0], box[1]

    def stop(self) -> None:
        """Release the other ranks from `serve` (rank 0; idempotent)."""
        if self.rank == 0 and not self.stopped:
            self.stopped = True
            self.announce("stop", ())

    # -- data ------------------------------------------------------------------------------
    def gather(self, mine: list) -> list:
        """Every rank's list, concatenated in rank order, on every rank (tensors on the CPU: a
        pickled CUDA tensor would come back on the sender's GPU)."""
        parts: list[Any] = [None] * self.world
        mine = [x.cpu() if torch.is_tensor(x) else x for x in mine]
        dist.all_gather_object(parts, mine, group=self.control)
        return [x for p in parts for x in p]

    def sum_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics that add up over micro-batches, added up over ranks too."""
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, metrics, group=self.control)
        out: dict[str, float] = {}
        for p in parts:
            for k, v in p.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def loss_scale(self, real: bool) -> float:
        """DDP and FSDP2 average gradients over ranks; the partial losses must add up instead."""
        return float(self.world) if real else 0.0

    def grad_sync(self, last: bool) -> None:
        """Reduce gradients in this backward only if it is the mini-batch's last (what DDP's
        `no_sync()` context does, set per micro-batch so the trainer's loop keeps its shape)."""
        if self.fsdp:
            self.module.set_requires_gradient_sync(last)
        else:
            self.module.require_backward_grad_sync = last

    def total_norm(self, norm: torch.Tensor) -> torch.Tensor:
        """`clip_grad_norm_`'s result as a plain tensor (a DTensor under FSDP2)."""
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def full_weights(self) -> contextlib.AbstractContextManager:
        """Under FSDP2, every weight whole on every rank for the duration (generation, the weight
        push); collective.  A no-op under DDP."""
        return fsdp.gathered(self.module) if self.fsdp else contextlib.nullcontext()


def whole(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """(model, optimizer) as a checkpoint is written from them: themselves, or under FSDP2 their
    state gathered whole (collective: rank 0 announces it, the other ranks join from `serve`)."""
    dp = _current
    if dp is None or not dp.fsdp:
        return model, optimizer
    if dp.rank == 0:
        dp.announce("whole", ())
    return fsdp.gather_state(model, optimizer, dp.module)


def loadable(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """(model, optimizer) as a checkpoint is loaded into them on this rank alone."""
    if _current is None or not _current.fsdp:
        return model, optimizer
    return fsdp.loadable(model, optimizer, _current.module)


def collective(method: Callable) -> Callable:
    """Make a trainer or engine method collective: on rank 0 it is announced to the other ranks
    (which run it from `serve`) before it runs; a call nested in another runs as is."""

    @functools.wraps(method)
    def run(self, *args):
        dp = self.dp
        if dp is None or dp.leading or dp.rank != 0:
            return method(self, *args)
        dp.announce(method.__name__, args)
        dp.leading = True
        try:
            return method(self, *args)
        finally:
            dp.leading = False

    return run


class ShardedEngine:
    """An engine whose `generate` splits the requests over the ranks and whose `sync_weights`
    reaches every rank's engine; anything else is the rank's own engine's."""

    def __init__(self, inner, dp: DataParallel, own_copy: bool = False):
        # own_copy: under FSDP2 the inner engine generates from a whole copy of the policy
        # (node/fsdp.py), which a weight sync refreshes; otherwise it reads the trainer's module
        self.inner, self.dp, self.own_copy = inner, dp, own_copy

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @collective
    def generate(self, requests: list, group_size: int, sampling) -> list:
        dp = self.dp
        mine = requests[share(len(requests), dp.rank, dp.world)]
        if dp.rank > 0:  # ranks > 0: a stream of their own, reproducible from the step
            dp.calls += 1
            torch.manual_seed(hash((dp.seed, dp.rank, dp.version, dp.calls)) & 0x7FFF_FFFF_FFFF_FFFF)
        if self.own_copy:  # FSDP2: the engine's copy, whole for this call only (node/fsdp.py)
            weights = fsdp.whole_copy(dp.module, dp.module.policy, self.inner.model)
        else:
            weights = dp.full_weights()
        with weights:
            made = self.inner.generate(mine, group_size, sampling) if mine else []
        parts: list[Any] | None = [None] * dp.world if dp.rank == 0 else None
        dist.gather_object(made, parts, dst=0, group=dp.control)
        return [g for p in parts for g in p] if parts is not None else []

    @collective
    def sync_weights(self, version: int) -> None:
        dp = self.dp
        dp.version, dp.calls = version, 0
        if self.own_copy:  # the copy is filled from the shards at the next generate
            self.inner.sync_weights(version)
            return
        with dp.full_weights():
            self.inner.sync_weights(version)


# -- set-up, the loop of ranks > 0, teardown ---------------------------------------------------
def init(device: str) -> None:
    """Join torchrun's process group: NCCL on CUDA (one GPU per local rank), gloo on CPU."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def attach(engine, trainer, cfg) -> ShardedEngine:
    """Wrap this rank's policy for data-parallel training, hand the trainer its `DataParallel`,
    and return the engine that shares generation out.  Called by `Node` when `world() > 1`."""
    from node import lora

    model = trainer.model
    sharded = cfg.trainer.parallel == "fsdp"
    if sharded and lora.is_lora(model):
        raise ValueError(
            "trainer.parallel=fsdp with LoRA adapters is not supported; use trainer.parallel=ddp"
        )
    module = LogprobPass(model)
    own_copy = sharded and getattr(engine, "model", None) is model  # transformers: see node/fsdp.py
    if own_copy:
        engine.model = fsdp.rollout_copy(model)
    if sharded:
        module = fsdp.shard_policy(module, trainer, cfg.trainer)
        if own_copy:  # filled for each generate call (fsdp.whole_copy)
            fsdp.release(engine.model)
    else:
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.cuda.current_device()] if next(model.parameters()).device.type == "cuda" else None
        # no buffer broadcast in a forward (the buffers are rotary tables, equal everywhere)
        no_sync = {
            k: False for k in ("forward_sync_buffers",) if k in signature(DistributedDataParallel).parameters
        }
        module = DistributedDataParallel(module, device_ids=ids, **(no_sync or {"broadcast_buffers": False}))
    global _current
    control = dist.new_group(backend="gloo")
    _current = trainer.dp = DataParallel(rank(), world(), control, module, sharded, seed=cfg.seed)
    return ShardedEngine(engine, _current, own_copy)


def serve(node) -> None:
    """Ranks > 0: run the calls rank 0 announces until it says stop."""
    dp = node.trainer.dp
    targets = {"generate": node.engine, "sync_weights": node.engine}
    while True:
        name, args = dp.receive()
        if name == "stop":
            return
        if name == "load":  # rank 0 resumed from this checkpoint: the same weights and optimizer state
            from node import checkpoint

            restored = checkpoint.load(Path(args[0]), *loadable(node.policy.model, node.trainer.optimizer))
            node.trainer.version = restored.policy_version
            continue
        if name == "whole":  # rank 0 writes a checkpoint
            whole(node.policy.model, node.trainer.optimizer)
            continue
        getattr(targets.get(name, node.trainer), name)(*args)


def share_checkpoint(node) -> None:
    """After rank 0 resumed: every other rank loads the same checkpoint, then every engine takes
    the weights (no-op in one process).  `load_latest` set aside any newer corrupt one, so the
    newest complete checkpoint is the one rank 0 loaded."""
    from node import checkpoint

    if _current is not None and _current.rank == 0:
        _current.announce("load", (str(checkpoint.latest(node.ckpt_dir)),))
        node.engine.sync_weights(node.trainer.version)


def release() -> None:
    """Rank 0 is done with the other ranks (before an evaluation, or on an error); idempotent."""
    if _current is not None:
        _current.stop()
