"""Imports flow node -> swarm -> protocol: protocol/ uses no torch and no network library,
swarm/ never imports node/.  Checked on the source, so a stray import cannot slip in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_roots(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("protocol", {"node", "swarm", "torch", "hivemind", "libp2p", "trio", "socket", "asyncio"}),
        ("swarm", {"node", "torch", "transformers"}),
    ],
)
def test_layer_imports(package, forbidden):
    bad = {f: sorted(names & forbidden) for f, names in imported_roots(package).items() if names & forbidden}
    assert bad == {}


def test_each_p2p_library_has_one_importer():
    for lib in ("hivemind", "libp2p"):
        users = [f for f, names in imported_roots("swarm").items() if lib in names]
        assert len(users) == 1, (lib, users)
