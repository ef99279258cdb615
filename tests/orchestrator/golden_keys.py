"""Cell keys recorded before a change, to prove the change kept them.

``data/golden_keys.json`` holds, for every study in ``examples/``, the kind and key of each
planned cell in plan order. Keys hash the normalized spec, so equal keys mean the planner
wrote the same spec JSON, byte for byte. The examples on real data are planned on the real
Fashion-MNIST (Debian's package) and on small CIFAR-10 files written here in the published
binary layout (:func:`example_data`; their digest is part of the keys). Record them again
only when a change of keys is intended (and then say so in the commit), from the repository
root::

    .venv/bin/python tests/orchestrator/golden_keys.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_keys.json"


def example_data(folder: Path) -> Path:
    """``folder`` as ``$ADVGRID_DATA`` for the examples: CIFAR-10 in the binary layout (20
    training and 10 test images, seeded, so their digest is always the same)."""
    from tests.tasks.datasets.writers import write_cifar_binary

    root = folder / "cifar10"
    if not root.exists():
        write_cifar_binary(root, per_batch=4, n_test=10)
    return folder


def needs_real_data(study_file: Path) -> bool:
    """Whether an example plans on the real Fashion-MNIST (which tests need installed)."""
    return "fashion_mnist" in study_file.read_text()


def planned(study_file: Path) -> list[list[str]]:
    """``[kind, key]`` of every cell the planner makes for ``study_file``, in plan order,
    with the examples' data in place (:func:`example_data`)."""
    import os
    import tempfile

    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    saved = os.environ.get("ADVGRID_DATA")
    with tempfile.TemporaryDirectory(prefix="advgrid-examples-") as folder:
        os.environ["ADVGRID_DATA"] = str(example_data(Path(folder)))
        try:
            return [[c.kind, c.key] for c in expand(loader.load(study_file)).cells]
        finally:
            if saved is None:
                os.environ.pop("ADVGRID_DATA", None)
            else:
                os.environ["ADVGRID_DATA"] = saved


def record() -> dict[str, list[list[str]]]:
    return {f.name: planned(f) for f in sorted(EXAMPLES.glob("*.yaml"))}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    keys = record()
    GOLDEN.write_text(json.dumps(keys, indent=1) + "\n")
    counts = ", ".join(f"{name}: {len(cells)}" for name, cells in keys.items())
    sys.stdout.write(f"wrote {GOLDEN} ({counts})\n")
