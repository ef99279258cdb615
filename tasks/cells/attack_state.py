"""An attack cell's finished batches in the store, so that a killed attack cell redoes at
most the batch it was in and stores the adversarial set the uninterrupted run stores.

After every ``checkpoint_every`` batches (and when ``checkpoint_minutes`` have passed since
the last save) the cell stores each new batch's outputs as an artifact and a small state
artifact with every random stream it draws from (the attack's generator, each generator a
defense keeps, an EOT wrapper's anchor, torch's global stream, CUDA's on a GPU), named for the cell
by the store's pointer, which lists the batches as its parts
(:meth:`storage.ArtifactStore.set_partial`). The next run of the cell checks the state
(hash, cell key, code version, device type, batch size, slice size), takes the finished
batches back, restores the streams and attacks the rest. Universal attacks, which fit one
perturbation before any batch, start again.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from storage import ArtifactStore
from storage.errors import StorageError
from tasks import resume
from tasks.attacks import AttackOutput

KIND = "attack_state"


def generators(*roots: object) -> list[torch.Generator]:
    """Every ``torch.Generator`` held by ``roots`` or by a module inside them, each once,
    in a fixed order (module traversal, then attribute name)."""
    found: dict[int, torch.Generator] = {}
    for root in roots:
        if isinstance(root, torch.Generator):
            found.setdefault(id(root), root)
            continue
        owners = list(root.modules()) if isinstance(root, nn.Module) else [root]
        for owner in owners:
            for name in sorted(getattr(owner, "__dict__", {})):
                value = vars(owner)[name]
                if isinstance(value, torch.Generator):
                    found.setdefault(id(value), value)
    return list(found.values())


def kept_states(*roots: object) -> list[tuple[object, str]]:
    """``(module, attribute)`` of each tensor a module inside ``roots`` keeps as random state
    besides its generators, as its class's ``random_state`` names them (an EOT wrapper's
    anchor: the generator state its common draws replay)."""
    found: list[tuple[object, str]] = []
    for root in roots:
        for module in root.modules() if isinstance(root, nn.Module) else []:
            found += [(module, name) for name in getattr(type(module), "random_state", ())]
    return found


class Streams(resume.Streams):
    """The random streams an attack cell draws from, captured and restored together: its
    generators (``rng/0``, ``rng/1``, … in :func:`generators`' order), torch's global stream
    and CUDA's (as a train cell's, :class:`tasks.resume.Streams`), and the tensors modules
    keep as random state (``kept/<i>``; None until first set)."""

    def __init__(
        self,
        gens: list[torch.Generator],
        device: torch.device,
        kept: list[tuple[object, str]] | None = None,
    ) -> None:
        super().__init__({str(i): g for i, g in enumerate(gens)}, device)
        self.kept = kept or []

    def states(self) -> dict[str, torch.Tensor]:
        out = super().states()
        for i, (owner, name) in enumerate(self.kept):
            value = getattr(owner, name)
            if isinstance(value, torch.Tensor):
                out[f"kept/{i}"] = value.clone()
        return out

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        super().restore(tensors)
        for i, (owner, name) in enumerate(self.kept):
            setattr(owner, name, tensors.get(f"kept/{i}"))


def _batch_tensors(out: AttackOutput) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"x_adv": out.x_adv, "pred": out.pred, "success": out.success}
    if out.target is not None:
        tensors["target"] = out.target
    tensors.update({f"t/{k}": v for k, v in out.tensors.items()})
    meta = {"kind": "attack_batch", "forward": out.forward, "backward": out.backward}
    return tensors, {**meta, "counts": out.counts}


def _batch_output(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> AttackOutput:
    return AttackOutput(
        x_adv=tensors["x_adv"],
        pred=tensors["pred"],
        success=tensors["success"],
        target=tensors.get("target"),
        forward=int(meta["forward"]),
        backward=int(meta["backward"]),
        counts={k: float(v) for k, v in meta.get("counts", {}).items()},
        tensors={k[2:]: v for k, v in tensors.items() if k.startswith("t/")},
    )


class Batches:
    """Save and take back an attack cell's finished batches (see the module docstring).

    Args:
        store: The artifact store.
        cell_key: The cell.
        expected: What a state records and a reader checks: cell key, code version, device
            type, batch size and the number of batches.
        every: Save after every this many batches (None: not by count).
        minutes: Save when this many minutes have passed since the last save (None: not by
            time). Both None: never save (a run still takes back what an earlier one saved).
    """

    def __init__(
        self,
        store: ArtifactStore,
        cell_key: str,
        expected: dict[str, Any],
        *,
        every: int | None,
        minutes: float | None,
    ) -> None:
        self.store, self.key, self.expected = store, cell_key, expected
        self.every, self.minutes = every, minutes
        self.parts: list[str] = []
        self.last = time.monotonic()
        self.saved = 0

    def due(self, done: int) -> bool:
        if self.every is not None and done % self.every == 0:
            return True
        return self.minutes is not None and time.monotonic() - self.last >= 60 * self.minutes

    def save(self, outs: list[AttackOutput], streams: Streams, wall: float) -> None:
        for out in outs[len(self.parts) :]:
            tensors, meta = _batch_tensors(out)
            self.parts.append(self.store.put(tensors, meta).digest)
        meta = {**self.expected, "batches": len(outs), "wall": wall}
        record = self.store.put(streams.states(), meta)
        info = {"batches": len(outs), "of": self.expected["of"], "parts": list(self.parts)}
        self.store.set_partial(self.key, record, info)
        self.last, self.saved = time.monotonic(), self.saved + 1

    def load(self, streams: Streams) -> tuple[list[AttackOutput], float, list[str]]:
        """The finished batches (none when nothing usable was saved), the seconds they took,
        and the note the attempt records; restores ``streams`` when it resumes."""
        try:
            pointer = self.store.partial(self.key)
        except StorageError as exc:
            self.store.drop_partial(self.key)
            return [], 0.0, [f"discarded the saved batches: {exc}; attacking from batch 0"]
        if pointer is None:
            return [], 0.0, []
        digest = str(pointer["digest"])
        try:
            tensors, meta = self.store.get(digest)
            why = self._mismatch(meta, pointer)
            outs = [] if why else [_batch_output(*self.store.get(d)) for d in pointer["parts"]]
        except (StorageError, KeyError, TypeError, ValueError) as exc:
            why = str(exc)
        if why:
            self.store.drop_partial(self.key)
            note = f"discarded the saved batches {digest[:12]}: {why}; attacking from batch 0"
            return [], 0.0, [note]
        streams.restore(tensors)
        self.parts = list(pointer["parts"])
        note = f"resumed at batch {len(outs)} of {self.expected['of']} from state {digest[:12]}"
        return outs, float(meta.get("wall", 0.0)), [note]

    def _mismatch(self, meta: dict[str, Any], pointer: dict[str, Any]) -> str | None:
        for name in ("kind", "cell_key", "code_version", "device", "batch_size", "of"):
            if meta.get(name) != self.expected.get(name):
                return f"its {name} is {meta.get(name)!r}, this run's {self.expected.get(name)!r}"
        done = meta.get("batches")
        if not isinstance(done, int) or not 0 < done < int(self.expected["of"]):
            return f"it holds {done!r} batches of {self.expected['of']}"
        if len(pointer.get("parts") or []) != done:
            return f"its pointer lists {len(pointer.get('parts') or [])} batches, not {done}"
        return None
