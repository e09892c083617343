"""The replay and selection layer: difficulty estimates, prompt selection, rollout allocation
and rollout replay (see docs/replay.md and `node/replay/layer.py`)."""
