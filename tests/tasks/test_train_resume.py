"""Resume inside a train cell: an interrupted run continued from its saved state ends with
the weights of an uninterrupted one, bit for bit; a state that does not fit is discarded
with a note, never mixed in; a finished cell leaves no state behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from orchestrator.study import loader
from orchestrator.study.plan import expand
from storage import ArtifactStore
from tasks import models, resume, training
from tasks.cells import saved_state
from tasks.cells.payload import CellPayload
from tasks.cells.run import run_cell

pytestmark = pytest.mark.usefixtures("one_thread")


class Stopped(Exception):
    """The run was 'killed' right after it saved a state."""


class Through:
    """Checkpoints that round-trip every state through a store and stop after ``stop``."""

    def __init__(self, store: ArtifactStore, every: int, stop: int | None) -> None:
        self.store, self.every, self.stop = store, every, stop
        self.states: list[resume.TrainState] = []

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0

    def save(self, state: resume.TrainState) -> None:
        record = self.store.put(state.tensors, state.meta)
        tensors, meta = self.store.get(record.digest)  # what a later attempt reads back
        self.states.append(resume.TrainState(state.epoch, tensors, meta))
        if state.epoch == self.stop:
            raise Stopped


def _net(dropout: bool = False) -> nn.Module:
    torch.manual_seed(3)
    layers: list[nn.Module] = [
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
    ]
    if dropout:
        layers.append(nn.Dropout(0.3))
    return nn.Sequential(*layers, nn.Linear(4 * 8 * 8, 3))


RECIPES = {
    "adam": {},
    "sgd": {
        "optimizer": "sgd",
        "nesterov": True,
        "weight_decay": 5e-4,
        "norm_bias_decay": False,
        "schedule": "multistep",
        "milestones": [2, 3],
        "warmup_epochs": 1,
        "ema": 0.9,
        "augment": ["crop", "flip", "cutout"],
    },
    "cosine": {"optimizer": "adamw", "schedule": "cosine", "label_smoothing": 0.1},
    "pgd_at": {"defense": {"name": "pgd_at", "eps": 0.1, "steps": 2}, "schedule": "onecycle"},
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_resumed_fit_ends_with_the_uninterrupted_weights(name: str, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(80, 1, 8, 8, generator=g), torch.randint(0, 3, (80,), generator=g)
    recipe = training.TrainParams(epochs=4, batch_size=16, lr=0.02, **RECIPES[name])
    dropout = name == "adam"  # torch's own stream too
    whole = _net(dropout)
    every = Through(ArtifactStore(tmp_path / "a"), every=1, stop=None)
    training.fit(whole, x, y, recipe, checkpoints=every)
    assert [s.epoch for s in every.states] == [1, 2, 3]  # never after the last epoch
    cut = Through(ArtifactStore(tmp_path / "b"), every=2, stop=2)
    with pytest.raises(Stopped):
        training.fit(_net(dropout), x, y, recipe, checkpoints=cut)
    resumed = _net(dropout)
    metrics = training.fit(resumed, x, y, recipe, start=cut.states[-1])
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics["train_loss"] > 0
    halfway = cut.states[-1].tensors  # and the resumed run trained on from there
    assert not all(torch.equal(a[k], halfway[f"model/{k}"]) for k in a)


STUDY = """\
name: resume
datasets:
  - {name: digits, eval_size: 50}
models:
  - name: cnn
    arch: small_cnn
    params: {width: 4, hidden: 16}
    train: {epochs: 4, lr: 0.01, seed: 0}
attacks:
  - {name: fgsm, eps: 0.1}
"""


def _payload(store: Path, **execution: object) -> dict:
    cell = next(c for c in expand(loader.parse(STUDY)).cells if c.kind == "train")
    return CellPayload(
        key=cell.key, kind="train", spec=cell.typed, store=str(store), **execution
    ).wire()


def test_a_train_cell_continues_from_its_saved_state(tmp_path: Path, monkeypatch) -> None:
    whole = run_cell(_payload(tmp_path / "a"))
    assert whole["notes"] == []
    payload = _payload(tmp_path / "b", checkpoint_every=1)
    store, key = ArtifactStore(tmp_path / "b"), payload["key"]
    save = saved_state.StoreCheckpoints.save

    def dies_after_two(self, state):
        save(self, state)
        if state.epoch == 2:
            raise Stopped

    monkeypatch.setattr(saved_state.StoreCheckpoints, "save", dies_after_two)
    with pytest.raises(Stopped):
        run_cell(payload)
    monkeypatch.undo()
    pointer = store.partial(key)
    assert pointer is not None
    assert pointer["epoch"] == 2
    again = run_cell(payload)
    (note,) = again["notes"]
    assert note.startswith(f"resumed at epoch 2 of 4 from state {pointer['digest'][:12]}")
    # content-addressed: the same digest is the same weights and metadata, bit for bit
    assert again["artifacts"]["checkpoint"]["digest"] == whole["artifacts"]["checkpoint"]["digest"]
    assert again["metrics"] == whole["metrics"]
    assert store.partial(key) is None  # done: the state is gone, file and pointer
    assert not store.exists(pointer["digest"])
    assert list(store.iter_partials()) == []


def _saved(tmp_path: Path) -> tuple[dict, ArtifactStore, dict]:
    payload = _payload(tmp_path, checkpoint_every=1)
    save = saved_state.StoreCheckpoints.save

    def dies_after_one(self, state):
        save(self, state)
        raise Stopped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(saved_state.StoreCheckpoints, "save", dies_after_one)
        with pytest.raises(Stopped):
            run_cell(payload)
    store = ArtifactStore(tmp_path)
    pointer = store.partial(payload["key"])
    assert pointer is not None
    return payload, store, pointer


def test_a_corrupt_state_is_discarded_with_a_note(tmp_path: Path) -> None:
    payload, store, pointer = _saved(tmp_path)
    path = store.path(pointer["digest"])
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    out = run_cell(payload)
    (note,) = out["notes"]
    assert note.startswith(f"discarded the saved state {pointer['digest'][:12]}")
    assert "is corrupt" in note
    assert note.endswith("training from epoch 0")
    fresh = run_cell(_payload(tmp_path / "fresh"))
    assert out["artifacts"]["checkpoint"]["digest"] == fresh["artifacts"]["checkpoint"]["digest"]
    assert store.partial(payload["key"]) is None


def test_a_state_of_another_cell_or_code_is_discarded(tmp_path: Path) -> None:
    payload, store, pointer = _saved(tmp_path)
    tensors, meta = store.get(pointer["digest"])
    for field, value, says in [
        ("cell_key", "0" * 64, "its cell_key is '000"),
        ("code_version", "0.0.1", "its code_version is '0.0.1'"),
        ("epochs", 9, "its epochs is 9, this run's 4"),
    ]:
        record = store.put(tensors, {**meta, field: value})
        store.set_partial(payload["key"], record, {"epoch": 1})
        out = run_cell(payload)
        (note,) = out["notes"]
        assert says in note, note
        assert store.partial(payload["key"]) is None
    # a pointer that is not JSON is refused too
    rel = tmp_path / "partials" / payload["key"][:2] / f"{payload['key'][2:]}.json"
    rel.parent.mkdir(parents=True, exist_ok=True)
    rel.write_text("{not json")
    (note,) = run_cell(payload)["notes"]
    assert "saved state pointer" in note
    assert "is corrupt" in note
    assert not rel.exists()


def test_weights_of_another_shape_are_refused() -> None:
    net = models.build(
        "small_cnn",
        models.params_of("small_cnn", {"width": 4, "hidden": 16}),
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.5,),
        std=(0.5,),
    )
    other = models.build(
        "small_cnn",
        models.params_of("small_cnn", {"width": 8, "hidden": 16}),
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.5,),
        std=(0.5,),
    )
    tensors = {f"model/{k}": v for k, v in other.state_dict().items()}
    expected = {"kind": resume.KIND, "cell_key": "k", "code_version": "v", "device": "cpu"}
    expected["epochs"] = 4
    meta = {**expected, "epoch": 2}
    why = resume.mismatch(meta, tensors, expected, net)
    assert why is not None
    assert "this model's" in why
    assert (
        resume.mismatch(meta, {f"model/{k}": v for k, v in net.state_dict().items()}, expected, net)
        is None
    )
    assert "epoch 4 is not between 1 and 3" in str(
        resume.mismatch({**meta, "epoch": 4}, tensors, expected, net)
    )
    json.dumps(meta)  # what a state's metadata holds is plain JSON
