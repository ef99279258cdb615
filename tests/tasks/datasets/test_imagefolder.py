"""``imagefolder``: class folders of PNG and JPEG files, decoded only when indexed; class
order, ``classes``, ``image_size``, the official train/test layout, and errors naming the
file at fault."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import datasets
from tasks.datasets.imagefolder import FolderImages
from tasks.errors import InputError
from tests.tasks.datasets.writers import write_image_folder


def params(root: Path, **values: object) -> datasets.DatasetParams:
    return datasets.params_of("imagefolder", {"root": str(root), **values})


def load(root: Path, **values: object) -> datasets.Data:
    return datasets.load("imagefolder", params(root, **values))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files ``PIL.Image.open`` is called on, from now on."""
    calls: list[str] = []
    real = Image.open

    def spy(fp, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(Path(fp).name)
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return calls


def test_classes_are_the_sorted_folders_and_pixels_come_back_exactly(tmp_path: Path) -> None:
    written = write_image_folder(tmp_path, {"dog": 2, "cat": 3, "emu": 1})
    data = load(tmp_path)
    assert isinstance(data.x, FolderImages)
    assert isinstance(data.x, datasets.ImageSource)
    assert data.x.dtype == torch.uint8
    assert data.x.shape == (6, 3, 10, 12)
    assert data.num_classes == 3
    assert data.n_train is None
    assert data.y.tolist() == [0, 0, 0, 1, 1, 2]  # cat, dog, emu
    first = np.array(Image.open(written["cat"][0]))
    assert torch.equal(data.x[torch.tensor([0])][0], torch.from_numpy(first).permute(2, 0, 1))
    assert data.images(torch.tensor([1, 4])).dtype == torch.float32
    assert data.input_shape == (3, 10, 12)
    info = datasets.describe("imagefolder", params(tmp_path))
    assert (info.size, info.n_train, info.input_shape, info.num_classes) == (
        6,
        None,
        (3, 10, 12),
        3,
    )


def test_indexing_decodes_only_the_samples_asked_for(tmp_path: Path, opened: list[str]) -> None:
    write_image_folder(tmp_path, {"a": 4, "b": 4})
    data = load(tmp_path, image_size=8)
    opened.clear()
    batch = data.x[torch.tensor([1, 6])]
    assert batch.shape == (2, 3, 8, 8)
    assert batch.dtype == torch.uint8
    assert opened == ["001.png", "002.png"]  # a/001 and b/002, nothing else
    assert data.x[3].shape == (3, 8, 8)
    assert len(opened) == 3
    # what travels to a data-loader worker: the paths, no pixels
    assert len(pickle.dumps(data.x)) < 2000
    assert not any(isinstance(v, torch.Tensor) for v in vars(data.x).values())
    assert data.x.files[:2] == ("a/000.png", "a/001.png")


def test_mean_and_std_come_from_at_most_1000_training_images(
    tmp_path: Path, opened: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.datasets.imagefolder as imagefolder

    write_image_folder(tmp_path, {"a": 5, "b": 4})
    monkeypatch.setattr(imagefolder, "STATS_SAMPLE", 3)
    data = load(tmp_path, image_size=6)
    assert len(opened) == 3
    again = load(tmp_path, image_size=6)
    assert data.mean == again.mean
    assert data.std == again.std
    assert len(data.mean) == 3
    assert all(0 < s < 1 for s in data.std)


def test_classes_picks_and_orders_them_and_names_unknown_ones(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"cat": 1, "dog": 2, "emu": 1})
    data = load(tmp_path, classes=["emu", "cat"])
    assert data.num_classes == 2
    assert data.y.tolist() == [0, 1]
    assert len(data.x) == 2
    with pytest.raises(InputError, match="no class folder 'yak', 'owl'; the classes there are cat"):
        load(tmp_path, classes=["cat", "yak", "owl"])


def test_images_of_different_sizes_need_image_size(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "a", {"x": 1}, size=(12, 10))
    write_image_folder(tmp_path / "b", {"y": 1}, size=(20, 16))
    root = tmp_path / "mixed"
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir()
    (tmp_path / "a" / "x" / "000.png").rename(root / "x" / "000.png")
    (tmp_path / "b" / "y" / "000.png").rename(root / "y" / "000.png")
    with pytest.raises(InputError) as caught:
        load(root)
    message = str(caught.value)
    assert f"{root}/x/000.png is 12×10" in message
    assert f"{root}/y/000.png is 20×16" in message
    assert "image_size" in message
    data = load(root, image_size=8, mode="L")
    assert data.x.shape == (2, 1, 8, 8)
    assert data.x[torch.tensor([0, 1])].shape == (2, 1, 8, 8)


def test_resize_keeps_the_centre(tmp_path: Path) -> None:
    """A 16×8 image whose middle 8×8 square is white and the rest black, resized to 4: the
    shorter side is 8 already at half size, so the crop is the white square."""
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, 4:12] = 255
    (tmp_path / "c").mkdir()
    Image.fromarray(pixels).save(tmp_path / "c" / "wide.png")
    data = load(tmp_path, image_size=4)
    out = data.x[torch.tensor([0])]
    assert out.shape == (1, 3, 4, 4)
    assert int(out.min()) >= 200


def test_jpeg_files_and_the_official_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", {"b": 2, "a": 3}, suffix=".jpg")
    write_image_folder(tmp_path / "val", {"a": 1, "b": 2}, suffix=".jpeg", seed=1)
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    data = load(tmp_path)
    assert data.n_train == 5
    assert len(data.y) == 8
    assert data.y.tolist() == [0, 0, 0, 1, 1, 0, 1, 1]
    assert data.x[torch.arange(8)].shape == (8, 3, 10, 12)
    split = datasets.split(len(data.y), params(tmp_path), data.n_train)
    assert split.train.tolist() == [0, 1, 2, 3, 4]
    assert split.eval.tolist() == [5, 6, 7]
    info = datasets.describe("imagefolder", params(tmp_path))
    assert info.n_train == 5
    assert info.size == 8


def test_a_test_class_without_a_training_folder_is_an_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", {"a": 1})
    write_image_folder(tmp_path / "test", {"a": 1, "zebra": 1})
    with pytest.raises(InputError, match="class folders zebra have no training folder"):
        load(tmp_path)
    assert load(tmp_path, classes=["a"]).n_train == 1


def test_a_corrupt_image_is_named_when_decoded(tmp_path: Path) -> None:
    written = write_image_folder(tmp_path, {"a": 3})
    broken = written["a"][1]
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(InputError, match=rf"{broken}: cannot decode image"):
        load(tmp_path)  # the mean and std decode every image of so small a set
    broken.write_bytes(b"\x89PNG but nothing more")
    with pytest.raises(InputError, match=rf"{broken}: cannot decode image"):
        load(tmp_path, image_size=4)


def test_an_empty_or_missing_folder_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(datasets.MissingDataError, match="there is no such folder"):
        load(tmp_path / "nowhere")
    with pytest.raises(
        datasets.MissingDataError, match="no class folders. Expected there: <class>/"
    ):
        load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(datasets.MissingDataError, match="holds no PNG or JPEG images"):
        load(tmp_path)


def test_data_loader_workers_decode_the_same_batches(tmp_path: Path) -> None:
    from tasks.batches import batches

    write_image_folder(tmp_path, {"a": 3, "b": 3})
    data = load(tmp_path)
    order = [torch.tensor([0, 4]), torch.tensor([5, 1, 2])]
    cpu = torch.device("cpu")
    inline = list(batches(data.x, data.y, order, cpu))
    in_workers = list(batches(data.x, data.y, order, cpu, workers=2))
    assert [y.tolist() for _, y in in_workers] == [[0, 1], [1, 0, 0]]
    for (xa, ya), (xb, yb) in zip(inline, in_workers, strict=True):
        assert xa.dtype == torch.float32
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)
