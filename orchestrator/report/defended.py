"""What an input-transform defense makes of a report's example images.

Behind a purifier (``vae_purify``, ``mlvgm_purify``, ``autoencoder_purify``) or any other
input transform (JPEG, bit depth, blur…) the classifier never sees the adversarial image
itself: it sees the transform's output. The report shows that output for the clean and the
adversarial image side by side, with what produced it (for ``mlvgm_purify`` the α of each
level; one draw of a randomized transform, from the defense's own seed). The defense's
trained parts are loaded from the cells the attack cell depends on, as a worker loads them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from storage import ArtifactStore, CellRow, StorageError
from tasks.errors import TaskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Through:
    """The transform's images of the shown clean and adversarial images, and its caption."""

    clean: torch.Tensor
    adv: torch.Tensor
    caption: str


def through(
    cell: CellRow,
    defense: dict[str, Any],
    cells: dict[str, CellRow],
    store: ArtifactStore,
    clean: torch.Tensor,
    adv: torch.Tensor,
) -> Through | None:
    """``clean`` and ``adv`` through the input transform of ``defense`` (the attack cell's
    defense component), or None: no defense, not an input transform, or a trained part that
    cannot be loaded (logged; the report still shows the examples)."""
    from tasks import defenses  # only when a report shows examples
    from tasks.cells.worker import load_model

    name = defense.get("name", "none")
    if name == "none" or name not in defenses.DEFENSES:
        return None
    cls = defenses.DEFENSES.get(name).obj
    if not issubclass(cls, defenses.InputTransform):
        return None
    try:
        given = {}
        for role, needed in cls.requires.items():
            if not needed.needed(defense["params"]):
                continue
            named = needed.checkpoint(defense["params"])  # a generator read from a file
            digest = named.removeprefix("sha256:") if named else _artifact_of(cell, role, cells)
            given[role] = load_model({"inputs": {role: digest}}, role, store, torch.device("cpu"))
        built = cls(defenses.DEFENSES.params_of(name, defense["params"]), **given)
        wrapped = built.wrap(torch.nn.Identity())
        with torch.no_grad():
            out = (wrapped.transform(clean.float()), wrapped.transform(adv.float()))
    except (StorageError, TaskError, OSError, ValueError, KeyError) as exc:
        log.warning("defended images of cell %s: %s", cell.key[:12], exc)
        return None
    caption = f"through {defense.get('label', name)}"
    alphas = getattr(built, "alphas", None)
    if callable(alphas):
        caption += " (α per level " + ", ".join(f"{a:.2g}" for a in alphas()) + ")"
    if cls.randomized:
        caption += ", one draw"
    return Through(out[0].clamp(0, 1), out[1].clamp(0, 1), caption)


def _artifact_of(cell: CellRow, role: str, cells: dict[str, CellRow]) -> str:
    """The checkpoint digest of the cell ``cell`` depends on for ``role`` (the train cell
    whose spec holds the recipe under that role)."""
    for key in cell.depends_on:
        dep = cells.get(key)
        if dep is not None and role in json.loads(dep.spec_json) and "checkpoint" in dep.artifacts:
            return dep.artifacts["checkpoint"]
    raise KeyError(f"no done cell gives the defense's {role!r}")
