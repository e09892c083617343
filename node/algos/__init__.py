"""The algorithm suite: advantage estimators, policy losses and off-policy corrections.

Each kind of algorithm has one registry (`registry.py`) and one call signature:

- advantage estimators: ``fn(AdvantageInputs, AlgorithmConfig) -> Tensor[N]``  (advantages.py)
- advantage modifiers:  ``fn(Tensor[N], AdvantageInputs, AlgorithmConfig) -> Tensor[N]``  (modifiers.py)
- policy losses:        ``fn(LossInputs, AlgorithmConfig) -> LossOutputs``  (losses.py)

Off-policy corrections (offpolicy.py) run inside every loss; DAPO's sampling and shaping
extras (dapo.py) are pure functions the node calls.  `api.py` is the only entry point.

The trainer looks functions up by the names in the config and never branches on them.
This package's ``__init__`` imports nothing heavy so that the config (``config.py``) can be
read before torch is imported.
"""
