"""Process groups we started ourselves (each child in its own session: group id = its PID).

`lab up/down`, the swarm tests and the SAPO benchmark signal only groups they created, so a
p2pd daemon a node spawned goes down with it and nothing else on the machine is touched.
Linux and macOS; `group_members` reads /proc (Linux).
"""

from __future__ import annotations

import os
from pathlib import Path


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
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out
