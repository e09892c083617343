"""Loads `tests/data/protocol/make_golden.py`, the fixed messages behind the golden frames,
for the protocol tests (a helper module, not a test file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "protocol"


def load_make_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
