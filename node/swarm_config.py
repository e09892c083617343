"""The `swarm` section of the config: join mode (SAPO), the transport, admission and the choice
of peer groups.  Its own module, as `node/replay/config.py` and `node/algos/config.py` are;
`node/config.py` assembles the tree.  Imports no torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SwarmConfig(BaseModel):
    """Sharing rollouts with other peers (SAPO): each step trains on `rollout.prompts_per_step`
    local groups (I) plus up to `external_groups` (J) groups admitted from peers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    mode: Literal["solo", "join"] = Field(
        "solo", description="solo: no network at all; join: share with a swarm"
    )
    backend: Literal["hivemind", "libp2p"] = Field(
        "hivemind", description="P2P engine (every peer must use the same)"
    )
    swarm_id: str = Field("public", min_length=1, description="swarm name; scopes topics and keys")
    host: str = Field("0.0.0.0", description="listen address; 127.0.0.1 keeps the node local")
    port: int = Field(0, ge=0, le=65535, description="listen port; 0 = any free port")
    bootstrap: list[str] = Field(
        default_factory=list, description="multiaddrs printed by `swarmrl bootstrap` (a string or a list)"
    )
    identity: str | None = Field(None, description="key file from `swarmrl keygen`; default RUN_DIR/node.key")
    allowlist: str | None = Field(None, description="private swarm: file of admitted peer ids / public keys")
    external_groups: int = Field(
        4, ge=0, description="J: peer groups per step (missing ones are made locally)"
    )
    per_peer_cap: int = Field(2, ge=1, description="at most this many external groups from one peer per step")
    max_age_s: float = Field(600.0, gt=0, description="drop peer groups sampled longer ago than this")
    max_version_lag: int = Field(
        16, ge=0, description="drop a peer's group older than its newest one by more than this many versions"
    )
    peer_logprobs: Literal["recompute", "reuse"] = Field(
        "recompute",
        description="recompute: the local policy scores re-tokenized peer text (SAPO); reuse: keep the "
        "peer's tokens and behaviour logprobs when its tokenizer hash equals ours (off-policy)",
    )
    take: Literal["uniform", "information"] = Field(
        "uniform",
        description="how the J peer groups are chosen from the pool: uniform (SAPO) or information "
        "(best expected learning value for this node, node/replay/peer_value.py; not yet measured)",
    )
    take_epsilon: float = Field(
        0.1, ge=0, le=1, description="take=information: chance that a slot takes a uniform pick instead"
    )
    take_tau: float = Field(
        8.0, gt=0, description="take=information: staleness discount exp(-lag/tau), lag in origin versions"
    )
    take_drift_scale: float = Field(
        1.0,
        ge=0,
        description="take=information: drift discount exp(-drift/scale), drift = extra nats per "
        "token of the peer's text under our policy vs our own samples; 0 turns it off",
    )
    summaries: bool = Field(
        True,
        description="fold peers' announced per-prompt outcome summaries into our difficulty estimates "
        "(weight replay.rho; a summary our re-scoring contradicts costs its sender score)",
    )
    adaptive_j: bool = Field(
        False,
        description="peer groups (up to J) replace our zero-variance local groups instead of adding J to the "
        "batch; local groups are generated first (not yet measured)",
    )
    share: bool = Field(True, description="publish our local groups (false: only take)")
    pool_size: int = Field(256, ge=1, description="admitted peer groups kept waiting for a step")
    start_timeout: float = Field(20.0, gt=0, description="seconds per attempt to start the transport")

    @field_validator("bootstrap", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [a.strip() for a in value.split(",") if a.strip()]
        return value

    # A bad address or allowlist is refused here, before any model loads: at run time the swarm
    # layer would take it for an unreachable network and retry forever while the node trains solo.
    @field_validator("bootstrap")
    @classmethod
    def _dialable(cls, value: list[str]) -> list[str]:
        for address in value:
            check_bootstrap_address(address)
        return value

    @field_validator("allowlist")
    @classmethod
    def _readable(cls, value: str | None, info: Any) -> str | None:  # info: pydantic.ValidationInfo
        if value is None or info.data.get("mode") != "join":
            return value
        from swarm.peer import load_allowlist  # the loader the swarm layer itself uses

        try:
            allowed = load_allowlist(value)
        except OSError as e:
            raise ValueError(f"cannot read {value}: {e.strerror or e}") from None
        except ValueError as e:  # a bad line (named with its number) or bytes that are not UTF-8
            raise ValueError(str(e) if str(e).startswith(str(value)) else f"{value}: {e}") from None
        if not allowed:
            raise ValueError(f"{value} lists no peer: a private swarm of nobody")
        return value


def check_bootstrap_address(address: str) -> None:
    """A bootstrap address must be a dialable multiaddr that ends in the peer's id, as
    `swarmrl bootstrap` prints it: /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...  Raises ValueError."""
    from multiaddr import Multiaddr  # py-multiaddr, the parser the libp2p transport dials with

    try:
        names = [p.name for p in Multiaddr(address).protocols()]
    except Exception as e:  # the parser's errors are not all ValueErrors
        raise ValueError(f"{address!r} is not a multiaddr ({e})") from None
    if not names or names[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or not {"tcp", "udp"} & set(names):
        raise ValueError(f"{address!r} names no host and port (like /ip4/1.2.3.4/tcp/4001/p2p/<peer id>)")
    if names[-1] != "p2p":
        raise ValueError(
            f"{address!r} does not end in /p2p/<peer id>; use an address `swarmrl bootstrap` prints"
        )
