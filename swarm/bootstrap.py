"""`swarmrl bootstrap`: a lightweight discovery/relay node (no model) other peers point at.

    from swarm.bootstrap import run_bootstrap
    run_bootstrap(backend="hivemind", host="0.0.0.0", port=4001, identity_path="boot.key")
    # prints:  swarmrl bootstrap node up (hivemind, swarm 'public'); give peers:
    #            swarm.bootstrap=/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...

What it does per backend: on hivemind it is the DHT entry point (peers find each other's
records through it, then talk directly); on libp2p it is a GossipSub hub that forwards every
announce.  It takes part in gossip as a peer that wants no groups, so it never downloads
rollouts, but it answers inventory pulls and scores and bans hostile peers like anyone else.

Give it a fixed `port` and a persistent `identity_path` so its address survives restarts.
Startup problems (port in use, p2pd not starting, an unreachable upstream bootstrap) raise
`SwarmStartError` with every attempt's reason after `attempts` tries with backoff; nothing here
waits without a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from protocol import Identity, load_key_file, save_key_file
from swarm.gossip import GossipConfig
from swarm.peer import DEFAULT_BACKEND, SwarmConfig, SwarmPeer

log = logging.getLogger(__name__)


def _identity(path: str | None) -> Identity:
    if path is None:
        return Identity.generate()
    if Path(path).exists():
        return load_key_file(path)
    identity = Identity.generate()
    save_key_file(identity, path)
    return identity


async def start_bootstrap(
    backend: str = DEFAULT_BACKEND,
    host: str = "0.0.0.0",
    port: int = 0,
    swarm_id: str = "public",
    identity_path: str | None = None,
    upstream: Sequence[str] = (),
    allowlist_file: str | None = None,
    attempts: int = 3,
    start_timeout: float = 20.0,
) -> SwarmPeer:
    """Start a bootstrap node and return it (the caller stops it).  `upstream`: other bootstrap
    nodes to join, so several bootstrap nodes form one swarm."""
    config = SwarmConfig(
        backend=backend,  # type: ignore[arg-type]
        swarm_id=swarm_id,
        host=host,
        port=port,
        bootstrap=tuple(upstream),
        allowlist_file=allowlist_file,
        start_timeout=start_timeout,
        start_attempts=attempts,
        gossip=replace(GossipConfig(), inbox_capacity=16, relay=False),
    )
    return await SwarmPeer.start(_identity(identity_path), config, want=lambda entry: False)


def bootstrap_banner(peer: SwarmPeer, backend: str, swarm_id: str) -> str:
    addrs = peer.addresses
    lines = [
        f"swarmrl bootstrap node up ({backend}, swarm {swarm_id!r}, peer id {peer.peer_id}); give peers:"
    ]
    lines += [f"  swarm.bootstrap={a}" for a in addrs]
    if any("/ip4/0.0.0.0/" in a for a in addrs):
        lines.append("  (replace 0.0.0.0 with this machine's reachable IP address)")
    return "\n".join(lines)


def run_bootstrap(
    backend: str = DEFAULT_BACKEND,
    host: str = "0.0.0.0",
    port: int = 0,
    swarm_id: str = "public",
    identity_path: str | None = None,
    upstream: Sequence[str] = (),
    allowlist_file: str | None = None,
    attempts: int = 3,
    start_timeout: float = 20.0,
    on_ready: Callable[[list[str]], None] | None = None,
    stats_interval: float = 60.0,
    address_file: str | None = None,
) -> None:
    """Blocking entry point for the CLI: start, print the addresses, serve until SIGINT/SIGTERM.

    `on_ready(addresses)` is called once the node is up (default: print the banner)."""

    async def main() -> None:
        peer = await start_bootstrap(backend, host, port, swarm_id, identity_path, upstream, allowlist_file,
                                     attempts, start_timeout)  # fmt: skip
        if on_ready is not None:
            on_ready(peer.addresses)
        else:
            print(bootstrap_banner(peer, backend, swarm_id), flush=True)
        if address_file:
            tmp = Path(f"{address_file}.tmp")
            tmp.write_text("".join(f"{a}\n" for a in peer.addresses))
            tmp.replace(address_file)  # readers never see half a file
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), stats_interval)
                m = peer.metrics()
                log.info("bootstrap: %d connected, %d members, %d banned", m.get("connected_peers", 0),
                         m.get("members", 0), m.get("banned_peers", 0))  # fmt: skip
        finally:
            await peer.stop()

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m swarm.bootstrap --backend libp2p --port 4001` (the CLI wraps `run_bootstrap`)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m swarm.bootstrap", description=main.__doc__)
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=["hivemind", "libp2p"])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--swarm-id", default="public")
    p.add_argument("--identity", default=None, help="key file (created if missing) for a stable address")
    p.add_argument("--upstream", nargs="*", default=[], help="other bootstrap nodes to join")
    p.add_argument("--allowlist", default=None, help="private swarm: file of allowed public keys / peer ids")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_bootstrap(
        args.backend, args.host, args.port, args.swarm_id, args.identity, args.upstream, args.allowlist
    )


if __name__ == "__main__":
    main()
