"""SAPO on the toy harness: toy agents that share rollout groups over real hivemind peers.

`agent.py` is one agent process, `run.py` starts a bootstrap node and N agents per
configuration and seed, `report.py` turns `results/*.json` into tables and `docs/img/sapo_*.png`.
"""
