"""Preflight: what is wrong with a command's setup, found before anything heavy starts.

Each check raises `UsageError` whose message starts with the setting's name (`logging.run_dir:
... is a file`), which the CLI prints as `error: ...` with exit code 2.  Nothing here imports
torch, so a bad setting is reported instantly.
"""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """A setting the command cannot work with; the message starts with the setting's name."""


def check_folder(setting: str, folder: Path) -> None:
    """Create `folder` (and its parents) or say in one line why not, naming the setting."""
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            inside = "" if part == folder else f" (on the way to {folder})"
            raise UsageError(f"{setting}: {part} is a file, not a directory{inside}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{setting}: cannot create {folder}: {e.strerror or e}") from None


def check_run_dir(cfg) -> None:
    check_folder("logging.run_dir", Path(cfg.logging.run_dir).expanduser())


def check_identity(cfg) -> None:
    """Refuse a bad key file now, not after the model has loaded (node/sharing.py loads it)."""
    if cfg.swarm.mode != "join":
        return
    from protocol.identity import IdentityError, load_key_file

    run_dir = Path(cfg.logging.run_dir).expanduser()
    key = Path(cfg.swarm.identity).expanduser() if cfg.swarm.identity else run_dir / "node.key"
    if cfg.swarm.identity and not key.exists():
        raise UsageError(f"swarm.identity: key file not found: {key} (create it with `swarmrl keygen`)")
    if key.exists():  # the default key is created on first use
        try:
            load_key_file(key)
        except IdentityError as e:
            raise UsageError(f"swarm.identity: {e}") from None


def check_port_free(host: str, port: int) -> None:
    """Fail at once on a port in use, instead of after the transport's retries and a traceback.
    (A port taken between this check and the transport's bind still ends in a clear error.)"""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the transports bind
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
