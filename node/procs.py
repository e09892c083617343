"""Process groups we started ourselves (each child in its own session: group id = its PID).

`lab up/down`, the swarm tests and the SAPO benchmark signal only groups they created, so a
p2pd daemon a node spawned goes down with it and nothing else on the machine is touched.
Linux and macOS: process tables are read through psutil, never /proc directly.
"""

from __future__ import annotations

import os

import psutil


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to the group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgids: set[int]) -> list[int]:
    """PIDs of live (not zombie) processes in any of these groups."""
    out = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        try:
            if os.getpgid(proc.pid) in pgids:
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError):  # gone meanwhile, or not ours to ask
            continue
    return out


def start_time(pid: int) -> float | None:
    """When `pid` started (psutil's create time, seconds since the epoch), None if it is not
    running.  With the PID it names one process: a reused PID has another start time."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # someone else's process (macOS): there, start unknown
        return 0.0
