"""Hard limits a receiver enforces before it allocates anything from a peer's frame.

The defaults fit a Response carrying 16 groups of 64 completions; a swarm can tighten them
(e.g. gossip transports cap messages at 1 MiB) but a receiver must never loosen them past what
it can hold in memory.  `docs/protocol.md` has the same table.  Because the structural scan
(`protocol.scan`) caps the number of msgpack objects, the memory one decode can allocate is
bounded by about `2 * max_frame_bytes + max_elements * 100` bytes, whatever the frame says.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Receiver-side caps.  Every field is an upper bound; all must be positive."""

    max_frame_bytes: int = 4 * 1024 * 1024  # whole frame as received from the transport
    max_depth: int = 8  # nesting of msgpack arrays/maps (deepest legal payload: 6, a Response)
    max_elements: int = 16_384  # msgpack objects in one decoded unit (frame, header or payload)
    max_map_len: int = 64  # entries in any map (message fields, reward components)
    max_array_len: int = 256  # entries in any array (completions, announce items, ids)
    max_text_bytes: int = 65_536  # UTF-8 bytes of free text: completion, question, ground truth
    max_name_bytes: int = 256  # UTF-8 bytes of identifiers: ids, model names, addresses
    max_completions: int = 64  # completions per RolloutGroup (G)
    max_tokens_per_completion: int = 8192  # token ids (and logprobs) per completion
    max_reward_components: int = 16  # claimed reward components per completion
    max_announce_items: int = 256  # groups summarised in one Announce
    max_request_ids: int = 64  # group ids asked for in one Request
    max_response_groups: int = 16  # groups returned in one Response
    max_addresses: int = 16  # multiaddrs in a PeerCard
    max_tasks: int = 64  # task names in a PeerCard
    max_policy_version: int = 2**40  # a policy version above this is implausible (2^40 steps)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        if self.max_array_len < max(
            self.max_completions,
            self.max_announce_items,
            self.max_request_ids,
            self.max_response_groups,
            self.max_addresses,
            self.max_tasks,
        ):
            raise ValueError("Limits.max_array_len must cover every per-list limit")
        if self.max_map_len < self.max_reward_components:
            raise ValueError("Limits.max_map_len must cover max_reward_components")


DEFAULT_LIMITS = Limits()
