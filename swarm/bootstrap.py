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

Stopping is bounded too, whatever the peers do: on SIGINT/SIGTERM the node stops within
`stop_timeout` (graceful, else its p2pd is killed: `SwarmPeer.stop`), logs one line saying how
it stopped, and returns.  The interpreter's own teardown after that (torch and hivemind modules)
is watched by `faulthandler`: past `stop_timeout + EXIT_GRACE` after the signal it dumps every
thread's stack and exits with status 1, so a supervisor's SIGTERM (`docker stop`, `lab down`)
never has to escalate to SIGKILL and leave a daemon behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from protocol import Identity, load_key_file, save_key_file
from swarm.gossip import GossipConfig
from swarm.peer import DEFAULT_BACKEND, SwarmConfig, SwarmPeer

log = logging.getLogger(__name__)

EXIT_GRACE = 10.0  # seconds the interpreter gets to exit after a bounded stop (see the docstring)


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
    stop_timeout: float = 8.0,
) -> bool:
    """Blocking entry point for the CLI: start, print the addresses, serve until SIGINT/SIGTERM,
    stop within `stop_timeout`.  True if the stop was graceful, False if it had to kill p2pd.

    `on_ready(addresses)` is called once the node is up (default: print the banner)."""

    async def main() -> bool:
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
        why: list[str] = []

        def on_signal(sig: signal.Signals) -> None:
            if not why:
                why.append(sig.name)
                faulthandler.dump_traceback_later(stop_timeout + EXIT_GRACE, exit=True)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), stats_interval)
                if not stop.is_set():
                    log.info("bootstrap: %s", _stats(peer))
        finally:
            seen, t0 = _stats(peer), loop.time()
            graceful = await peer.stop(stop_timeout)
            log.info("bootstrap stopped (%s) in %.1f s%s; had %s", why[0] if why else "error", loop.time() - t0,
                     "" if graceful else f", p2pd killed after {stop_timeout:.0f} s", seen)  # fmt: skip
        return graceful

    return asyncio.run(main())


def _stats(peer: SwarmPeer) -> str:
    m = peer.metrics()
    return (f"{m.get('connected_peers', 0)} connected, {m.get('members', 0)} members, "
            f"{m.get('banned_peers', 0)} banned")  # fmt: skip


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
    graceful = run_bootstrap(
        args.backend, args.host, args.port, args.swarm_id, args.identity, args.upstream, args.allowlist
    )
    raise SystemExit(0 if graceful else 1)


if __name__ == "__main__":
    main()
