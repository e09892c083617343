"""The only entry points the trainer and node call.  They dispatch by config name through the
registries, so neither the trainer nor the node knows which algorithm runs."""

from __future__ import annotations

from torch import Tensor

from node.algos import advantages as _advantages  # noqa: F401  (registers estimators)
from node.algos import losses as _losses  # noqa: F401  (registers losses)
from node.algos.config import AlgorithmConfig
from node.algos.registry import ADVANTAGES, LOSSES
from node.algos.types import AdvantageInputs, LossInputs, LossOutputs


def compute_advantages(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """[N] advantages from the configured estimator (then its modifiers, if any)."""
    return ADVANTAGES.get(cfg.advantage)(inputs, cfg)


def policy_loss(inputs: LossInputs, cfg: AlgorithmConfig) -> LossOutputs:
    """The configured policy loss on one micro-batch, regularisers included."""
    return LOSSES.get(cfg.loss)(inputs, cfg)
