"""Resume inside an attack cell: a run killed after 3 of 6 batches continues at batch 3 and
stores the adversarial set of an uninterrupted run, byte for byte, also through a
randomized defense under EOT whose draws must continue where they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.study import loader
from orchestrator.study.plan import expand
from storage import ArtifactStore
from tasks.cells import attack_state
from tasks.cells.payload import CellPayload
from tasks.cells.run import run_cell

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: batches
datasets:
  - {name: digits, eval_size: 60}
models:
  - name: cnn
    arch: small_cnn
    params: {width: 4, hidden: 16}
    train: {epochs: 2, lr: 0.01, seed: 0}
defenses:
  - name: none
  - {name: gaussian_noise, l2: 0.3, adaptive: eot, eot_samples: 2}
  - {name: gaussian_noise, label: fresh_noise, l2: 0.3, adaptive: none}
attacks:
  - {name: pgd, eps: 0.1, steps: 3, random_start: true}
"""


class Stopped(Exception):
    """The run was 'killed' right after it saved its batches."""


def _cells(root: Path) -> tuple[dict, dict]:
    """The checkpoint (trained into ``root``) and the attack cells by defense label."""
    plan = expand(loader.parse(STUDY))
    train = next(c for c in plan.cells if c.kind == "train")
    out = run_cell(CellPayload(key=train.key, kind="train", spec=train.typed, store=str(root)))
    attacks = {  # the EOT cell on gaussian_noise (not its twin), the others as they are
        c.spec["defense"]["label"]: c
        for c in plan.cells
        if c.kind == "attack"
        and ("adaptive" in c.spec["defense"]) == (c.spec["defense"]["label"] == "gaussian_noise")
    }
    assert sorted(attacks) == ["fresh_noise", "gaussian_noise", "none"]
    assert attacks["gaussian_noise"].spec["defense"]["adaptive"] == "eot"
    return {"checkpoint": out["artifacts"]["checkpoint"]["digest"]}, attacks


def _payload(cell, inputs: dict, root: Path, **execution: object) -> dict:
    return CellPayload(
        key=cell.key,
        kind="attack",
        spec=cell.typed,
        inputs=inputs,
        store=str(root),
        batch_size=10,
        **execution,
    ).wire()


# the noise under EOT replays common draws; fresh noise draws anew on every call, so its
# stream must continue where it stopped
@pytest.mark.parametrize("which", ["gaussian_noise", "fresh_noise", "none"])
def test_an_attack_cell_resumes_at_the_batch_it_saved(which: str, tmp_path: Path) -> None:
    inputs, cells = _cells(tmp_path)
    cell = cells[which]
    blob = ArtifactStore(tmp_path).read_bytes(inputs["checkpoint"])
    for root in ("whole", "cut"):  # each run's store holds the checkpoint
        ArtifactStore(tmp_path / root).put_bytes(inputs["checkpoint"], blob)
    whole = run_cell(_payload(cell, inputs, tmp_path / "whole"))
    payload = _payload(cell, inputs, tmp_path / "cut", checkpoint_every=1)
    save = attack_state.Batches.save

    def dies_after_three(self, outs, streams, wall):
        save(self, outs, streams, wall)
        if len(outs) == 3:
            raise Stopped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attack_state.Batches, "save", dies_after_three)
        with pytest.raises(Stopped):
            run_cell(payload)
    store = ArtifactStore(tmp_path / "cut")
    pointer = store.partial(cell.key)
    assert pointer is not None
    assert (pointer["batches"], pointer["of"], len(pointer["parts"])) == (3, 6, 3)
    again = run_cell(payload)
    (note,) = again["notes"]
    assert note.startswith(f"resumed at batch 3 of 6 from state {pointer['digest'][:12]}")
    adv = again["artifacts"]["adversarial"]["digest"]
    assert adv == whole["artifacts"]["adversarial"]["digest"]  # the same bytes
    timing = {"wall_s", "samples_per_s"}
    same = {k: v for k, v in again["metrics"].items() if k not in timing}
    assert same == {k: v for k, v in whole["metrics"].items() if k not in timing}
    assert store.partial(cell.key) is None
    assert not any(store.exists(d) for d in [pointer["digest"], *pointer["parts"]])


def test_batches_of_another_batch_size_are_discarded(tmp_path: Path) -> None:
    inputs, cells = _cells(tmp_path)
    cell = cells["none"]
    payload = _payload(cell, inputs, tmp_path, checkpoint_every=2)
    save = attack_state.Batches.save

    def dies(self, outs, streams, wall):
        save(self, outs, streams, wall)
        raise Stopped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attack_state.Batches, "save", dies)
        with pytest.raises(Stopped):
            run_cell(payload)
    other = {**payload, "batch_size": 20}
    out = run_cell(other)
    (note,) = out["notes"]
    assert "discarded the saved batches" in note
    assert "its batch_size is 10, this run's 20" in note
    assert ArtifactStore(tmp_path).partial(cell.key) is None


def test_an_eot_anchor_is_saved_with_the_streams() -> None:
    """The generator state an EOT wrapper's common draws replay is put back too (before its
    first call there is none, and none is put back)."""
    import torch

    from tasks.defenses.adaptive import EOT

    eot = EOT(torch.nn.Identity(), 2)
    gen = torch.Generator().manual_seed(3)
    streams = attack_state.Streams([gen], torch.device("cpu"), attack_state.kept_states(eot))
    assert "kept/0" not in streams.states()  # no anchor yet
    eot._anchor = gen.get_state()
    saved = streams.states()
    eot._anchor = None
    torch.rand(3, generator=gen)
    streams.restore(saved)
    assert torch.equal(eot._anchor, saved["kept/0"])
    assert torch.equal(gen.get_state(), saved["rng/0"])
