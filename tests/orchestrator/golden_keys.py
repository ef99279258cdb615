"""Cell keys recorded before a change, to prove the change kept them.

``data/golden_keys.json`` holds, for every study in ``examples/``, the kind and key of each
planned cell in plan order. Keys hash the normalized spec, so equal keys mean the planner
wrote the same spec JSON, byte for byte. Record them again only when a change of keys is
intended (and then say so in the commit), from the repository root::

    .venv/bin/python tests/orchestrator/golden_keys.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_keys.json"


def planned(study_file: Path) -> list[list[str]]:
    """``[kind, key]`` of every cell the planner makes for ``study_file``, in plan order."""
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    return [[c.kind, c.key] for c in expand(loader.load(study_file)).cells]


def record() -> dict[str, list[list[str]]]:
    return {f.name: planned(f) for f in sorted(EXAMPLES.glob("*.yaml"))}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    keys = record()
    GOLDEN.write_text(json.dumps(keys, indent=1) + "\n")
    counts = ", ".join(f"{name}: {len(cells)}" for name, cells in keys.items())
    sys.stdout.write(f"wrote {GOLDEN} ({counts})\n")
