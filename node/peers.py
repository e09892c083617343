"""Join mode's part of a step: admit what the swarm delivered, choose the peer groups to train
on, and learn what each peer is worth.  `Node` calls it; it holds no trainer and no engine.

    peers = Peers(cfg, tasks, sharing, signal)
    admitted = [g for it in sharing.drain() if (g := peers.admit(it, now_ms, version, localize))]
    evidence = peers.summaries(find_by_key)      # (prompt, successes, n) from announces, unfetched
    chosen, values = peers.take(want, rng, now_ms, p_hats)
    peers.record(chosen_groups, ours, own_nll, advantages)   # drift and usefulness, per origin

- admission (node/admission.py) judges each group; a group it admits goes to the pool
  (node/replay/buffer.py) and counts for its origin's reliability; a proven lie against it;
- an outcome summary (the origin's announce of how many of a group's completions it scored
  correct, `Sharing.summaries`) is evidence of a prompt's difficulty before anything is
  fetched; when the group is fetched later, a summary our re-scoring contradicts is a lie
  (`Misconduct.SUMMARY_MISMATCH`), and the group's evidence is not counted twice;
- `swarm.take`: uniform (SAPO) or information (node/replay/peer_value.py), the latter with
  each origin's reliability and drift (node/replay/peer_stats.py).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from node.admission import Admission, AdmissionConfig, Reason
from node.config import Config
from node.exchange import summary_agrees
from node.records import Group, Prompt
from node.replay.buffer import BufferConfig, BufferEntry, ReplayBuffer
from node.replay.peer_stats import PeerStats, drift_factor, mean_token_nll
from node.replay.peer_value import entry_values
from node.scoring import score_group
from node.tasks.base import Task
from protocol.outcome import claimed_successes
from swarm.misconduct import Misconduct

log = logging.getLogger(__name__)

COUNTED_CAP = 4096  # group ids whose summary was folded in (so the fetched group is not counted twice)


class Peers:
    def __init__(self, cfg: Config, tasks: dict[str, Task], sharing: Any, signal: str | None) -> None:
        sw = cfg.swarm
        self.cfg, self.sw, self.tasks, self.sharing, self.signal = cfg, sw, tasks, sharing, signal
        self.admission = Admission(AdmissionConfig(sw.max_age_s, signal=signal), tasks, sharing.peer_id)
        self.pool = ReplayBuffer(BufferConfig(sw.pool_size, sw.per_peer_cap, sw.max_age_s, sw.max_version_lag))
        self.stats = PeerStats()
        self.totals: Counter[str] = Counter()  # used, filled_locally, summaries, summary_lies
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._reports: list[tuple[str, Misconduct]] = []

    # -- arrivals ----------------------------------------------------------------------------
    def admit(self, item: Any, now_ms: int, version: int, localize: Callable[..., Group]) -> Group | None:
        """Judge one arrived group; the admitted, localized, re-scored group, or None.  Returns
        None too for a group whose difficulty evidence was already folded in from its summary."""
        found = self.admission.screen(item, now_ms)
        if isinstance(found, Reason):
            return None
        try:
            group = score_group(localize(item.group, found, item.origin), self.tasks[found.task],
                                self.cfg.tasks.rewards, self.cfg.rollout.max_new_tokens)  # fmt: skip
        except Exception as e:  # a group that breaks our tokenizer or scorer is refused, not fatal
            self.admission.error(item)
            log.warning("refused group %s from %s: %s", item.group_id[:12], item.origin[:16], e)
            return None
        self._check_summary(item)
        verdict = self.admission.judge(item, group, now_ms)
        if verdict.misconduct is not None:
            self.stats.lie(item.origin)
        if verdict is not Reason.ADMITTED:
            return None
        wire = item.group
        self.pool.add(BufferEntry(group, item.origin, item.group_id, wire.policy_version, wire.created_ms,
                                  version, wire.model_id, wire.tokenizer_hash))  # fmt: skip
        self.stats.admitted(item.origin)
        return None if item.group_id in self._counted else group

    def _check_summary(self, item: Any) -> None:
        """A summary is checked against the group it describes, as signed by the same origin: its
        count must be the group's own claimed successes (correctness >= 0.5, as senders count
        them).  The claims themselves are held to our verifier by admission (`claims_match`, with
        its tolerance); comparing the summary with our re-scoring instead would call an honest
        peer a liar whenever a graded score sits near 0.5."""
        s = self.sharing.summary_for(item.group_id)
        claimed = claimed_successes(item.group)
        if s is None or claimed is None:
            return
        if not summary_agrees(s, item.group, claimed):
            origin = s.origin  # the announce's signer made the claim
            self.stats.lie(origin)
            self.totals["summary_lies"] += 1
            self._reports.append((origin, Misconduct.SUMMARY_MISMATCH))

    def summaries(self, find_by_key: Callable[[str, str], Prompt | None]) -> list[tuple[Prompt, int, int]]:
        """Announced outcomes of prompts we train on, as (prompt, successes, n); nothing is fetched."""
        if not self.sw.summaries:
            return []
        out = []
        for s in self.sharing.summaries():
            prompt = find_by_key(s.task, s.prompt_key)
            if prompt is None or s.origin == self.sharing.peer_id or not 0 <= s.successes <= s.n:
                continue
            out.append((prompt, s.successes, s.n))
            self._counted[s.group_id] = None
            if len(self._counted) > COUNTED_CAP:
                self._counted.popitem(last=False)
        self.totals["summaries"] += len(out)
        return out

    def reports(self) -> list[tuple[str, Misconduct]]:
        """Proven lies since the last call, for the swarm layer's peer scores."""
        out, self._reports = self.admission.pop_reports() + self._reports, []
        return out

    # -- choosing ----------------------------------------------------------------------------
    def take(
        self, want: int, rng: random.Random, now_ms: int, p_hats: Callable[[list[Prompt]], list[float]]
    ) -> tuple[list[BufferEntry], dict[str, float]]:
        """`swarm.take`: uniform (SAPO), or the best by expected value to us; the values of the
        fresh entries by group id (empty for uniform)."""
        sw, newest = self.sw, self.admission.newest
        if sw.take == "uniform":
            return self.pool.take(want, rng, now_ms, newest), {}
        values: dict[str, float] = {}
        drift = {o: drift_factor(d, sw.take_drift_scale) for o, d in self.stats.drift().items()}

        def score(entries: list[BufferEntry]) -> list[float]:
            out = entry_values(entries, p_hats([e.group.prompt for e in entries]), newest, self.signal,
                               sw.take_tau, self.stats.reliability(), drift)  # fmt: skip
            values.update(zip((e.group_id for e in entries), out))
            return out

        return self.pool.take_best(want, rng, now_ms, newest, score, sw.take_epsilon), values

    # -- after the update --------------------------------------------------------------------
    def record(
        self, groups: list[Group], ours: dict[int, list[float]], own_nll: float | None, adv: dict[int, float]
    ) -> dict[str, float]:
        """Drift and usefulness of the peer groups trained this step.  `ours[id(c)]`: our policy's
        log-probs of a peer completion (where computed), `own_nll`: the per-token NLL of our own
        samples this step, `adv[id(c)]`: each row's advantage (rows the algorithm dropped absent)."""
        peer_abs = 0.0
        for g in groups:
            rows = [adv[id(c)] for c in g.completions if id(c) in adv]
            self.stats.used(g.origin, rows)
            peer_abs += sum(abs(a) for a in rows)
            nll = mean_token_nll(ours[id(c)] for c in g.completions if id(c) in ours)
            if nll is not None and own_nll is not None:
                self.stats.drifted(g.origin, nll - own_nll)
        total = sum(abs(a) for a in adv.values())
        return {"swarm/peer_signal_share": peer_abs / total if total else 0.0}

    # -- shown and saved ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        verdicts = dict(self.admission.counts) | dict(self.pool.counts)
        return {"admitted": self.admission.counts["admitted"], "used": self.totals["used"],
                "filled_locally": self.totals["filled_locally"], "verdicts": verdicts, "pool": len(self.pool),
                "summaries": self.totals["summaries"], "summary_lies": self.totals["summary_lies"],
                "peers_useful": self.stats.table()}  # fmt: skip

    def state_dict(self) -> dict:
        return {"admission": self.admission.state_dict(), "pool": self.pool.state_dict(),
                "swarm_totals": dict(self.totals), "peer_stats": self.stats.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict, find_prompt: Callable[[str, str], Prompt | None]) -> None:
        self.admission.load_state_dict(state["admission"])
        self.pool.load_state_dict(state["pool"], find_prompt)
        self.totals = Counter(state["swarm_totals"])
        self.stats.load_state_dict(state.get("peer_stats", {}))  # checkpoints from before: empty
