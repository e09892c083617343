"""Token metrics that add up over micro-batches (each is a sum divided by the step's count)."""

from __future__ import annotations

from torch import Tensor

from node.algos.types import LossInputs


def token_mean_metric(values: Tensor, inputs: LossInputs) -> float:
    """Sum of `values` over valid tokens / the step's token count (adds up over micro-batches)."""
    return float((values.detach() * inputs.mask).sum() / max(inputs.global_tokens, 1.0))
