"""``imagefolder``: PNG and JPEG images sorted into one folder per class, decoded on demand.

The layout is torchvision's ImageFolder one, ``root/<class>/<image>`` (images may sit in
subfolders of their class folder), or, with an official split, ``root/train/<class>/…`` and
``root/test/<class>/…`` (or ``root/val/…``): the split layout is the one where ``train/``
and ``test/`` or ``val/`` are both there. A class's index is its place among the sorted
class folder names, unless ``classes`` lists the classes to use, in order.

Nothing is decoded at load but a seeded sample of at most 1000 training images for the mean
and standard deviation: ``Data.x`` is a :class:`FolderImages`, which decodes with Pillow
only the images it is indexed with and holds only their paths (it travels to data-loader
workers as a few strings).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from tasks.datasets.base import DATASETS, Data, FileParams, uint8_stats
from tasks.datasets.files import FileFormat, Info, MissingDataError
from tasks.errors import InputError

SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_FOLDERS = ("test", "val")
STATS_SAMPLE = 1000
# what Pillow raises on a file it cannot read: not an image, truncated, too large
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageFolderParams(FileParams):
    """Settings of ``imagefolder``."""

    classes: list[str] | None = Field(
        None, description="only these class folders, in this order (default: all, sorted)"
    )
    image_size: int | None = Field(
        None,
        ge=1,
        description="resize the shorter side to this and centre-crop a square (required "
        "when the images differ in size)",
    )
    mode: Literal["RGB", "L"] = Field("RGB", description="RGB colour or L grey")


@dataclass
class FolderImages:
    """Images in files, decoded when indexed: ``x[index]`` is uint8 ``(k, C, H, W)``.

    Attributes:
        root: The folder the paths are relative to.
        files: Each sample's image file, relative to ``root``.
        mode: Pillow mode the images are converted to (``RGB`` or ``L``).
        height: Height of every decoded image.
        width: Width of every decoded image.
        image_size: Resize the shorter side to this and centre-crop a square; None: as stored.
    """

    root: str
    files: tuple[str, ...]
    mode: str
    height: int
    width: int
    image_size: int | None = None
    dtype: torch.dtype = field(default=torch.uint8, init=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), 1 if self.mode == "L" else 3, self.height, self.width)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: Any) -> torch.Tensor:
        picks = torch.arange(len(self.files))[index]
        if picks.dim() == 0:
            return self.decode(int(picks))
        if not len(picks):
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.stack([self.decode(i) for i in picks.tolist()])

    def decode(self, i: int) -> torch.Tensor:
        """Sample ``i`` as uint8 ``(C, H, W)``."""
        path = Path(self.root) / self.files[i]
        try:
            with Image.open(path) as stored:
                img = stored.convert(self.mode)
                if self.image_size is not None:
                    img = resize_crop(img, self.image_size)
                pixels = np.array(img, dtype=np.uint8)
        except _DECODE_ERRORS as exc:
            raise InputError(f"{path}: cannot decode image ({exc})") from exc
        if pixels.shape[:2] != (self.height, self.width):
            raise InputError(
                f"{path}: {pixels.shape[1]}×{pixels.shape[0]} pixels, the others are "
                f"{self.width}×{self.height}; set the dataset's image_size"
            )
        t = torch.from_numpy(pixels)
        return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """``img`` with its shorter side resized to ``size`` (bilinear), centre-cropped square."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _class_folders(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(folder.iterdir()) if d.is_dir() and d.name[0] != "."}


def _images(folder: Path) -> list[Path]:
    """The image files under a class folder, hidden ones (``.name``) left out."""
    found = (p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    return sorted(p for p in found if not any(q[0] == "." for q in p.relative_to(folder).parts))


def split_folders(root: Path) -> tuple[Path, Path] | None:
    """``(train, test)`` folders when ``root`` has the split layout, else None."""
    if not (root / "train").is_dir():
        return None
    test = next((root / n for n in TEST_FOLDERS if (root / n).is_dir()), None)
    return None if test is None else (root / "train", test)


def class_names(root: Path, params: ImageFolderParams) -> list[str]:
    """The classes in index order: ``classes`` when given (each must have a folder), else
    the sorted class folder names of the training split."""
    splits = split_folders(root)
    folders = _class_folders(splits[0] if splits else root)
    if params.classes is None:
        return sorted(folders)
    unknown = [c for c in params.classes if c not in folders]
    if unknown:
        raise InputError(
            f"imagefolder at {root}: no class folder {', '.join(map(repr, unknown))}; the "
            f"classes there are {', '.join(sorted(folders)) or '(none)'}"
        )
    if len(set(params.classes)) != len(params.classes):
        raise InputError(f"imagefolder classes list a class twice: {params.classes}")
    return list(params.classes)


class ImageFolder(FileFormat):
    """PNG/JPEG images in class folders (optional train/ and test/ or val/), decoded on demand."""

    name = "imagefolder"

    def expected(self, params: FileParams) -> list[str]:
        return ["<class>/<image>.png|.jpg", "or train/<class>/… and test/<class>/… (or val/)"]

    def missing_message(self, root: Path, params: FileParams, what: str) -> str:
        return (
            f"dataset {self.name!r} at {root}: {what}. Expected there: "
            f"{' '.join(self.expected(params))}. Point the dataset's `root:` at a folder of "
            "class folders"
        )

    def find(self, root: Path, params: FileParams) -> list[Path]:
        assert isinstance(params, ImageFolderParams), params
        classes = class_names(root, params)
        if not classes:
            raise MissingDataError(self.missing_message(root, params, "no class folders"))
        train, test = split_folders(root) or (root, None)
        files = []
        for c in classes:
            images = _images(train / c)
            if not images:
                what = f"class folder {train / c} holds no PNG or JPEG images"
                raise MissingDataError(self.missing_message(root, params, what))
            files += images
        if test is not None:
            known = _class_folders(test)
            stray = sorted(set(known) - set(classes))
            if stray and params.classes is None:
                raise InputError(
                    f"{test}: class folders {', '.join(stray)} have no training folder in {train}"
                )
            files += [f for c in classes if c in known for f in _images(known[c])]
        return files

    def _samples(
        self, root: Path, files: list[Path], params: FileParams
    ) -> Iterator[tuple[Path, int, bool]]:
        """``(file, label, is_training)`` of each file."""
        assert isinstance(params, ImageFolderParams), params
        index = {c: i for i, c in enumerate(class_names(root, params))}
        split = split_folders(root) is not None
        for f in files:
            parts = f.relative_to(root).parts
            yield f, index[parts[1] if split else parts[0]], not split or parts[0] == "train"

    def _size(self, files: list[Path], params: ImageFolderParams) -> tuple[int, int]:
        """``(height, width)`` every image decodes to; read from headers when not resized."""
        if params.image_size is not None:
            return params.image_size, params.image_size
        first: tuple[Path, tuple[int, int]] | None = None
        for f in files:
            try:
                with Image.open(f) as img:
                    size = img.size
            except _DECODE_ERRORS as exc:
                raise InputError(f"{f}: cannot decode image ({exc})") from exc
            if first is None:
                first = (f, size)
            elif size != first[1]:
                raise InputError(
                    f"images differ in size: {first[0]} is {first[1][0]}×{first[1][1]}, {f} "
                    f"is {size[0]}×{size[1]}; set the dataset's image_size to resize them"
                )
        assert first is not None
        return first[1][1], first[1][0]

    def info(self, root: Path, files: list[Path], params: FileParams) -> Info:
        assert isinstance(params, ImageFolderParams), params
        samples = list(self._samples(root, files, params))
        n_train = sum(s[2] for s in samples) if split_folders(root) else None
        h, w = self._size(files, params)
        return Info(
            size=len(files),
            n_train=n_train,
            input_shape=(1 if params.mode == "L" else 3, h, w),
            num_classes=len(class_names(root, params)),
        )

    def read(self, root: Path, files: list[Path], params: FileParams) -> Data:
        assert isinstance(params, ImageFolderParams), params
        samples = list(self._samples(root, files, params))
        n_train = sum(s[2] for s in samples) if split_folders(root) else None
        h, w = self._size(files, params)
        x = FolderImages(
            root=str(root),
            files=tuple(f.relative_to(root).as_posix() for f in files),
            mode=params.mode,
            height=h,
            width=w,
            image_size=params.image_size,
        )
        y = torch.tensor([s[1] for s in samples], dtype=torch.int64)
        n = n_train if n_train is not None else len(files)
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]
        mean, std = uint8_stats(x[pick.sort().values])
        return Data(
            x=x,
            y=y,
            num_classes=len(class_names(root, params)),
            mean=mean,
            std=std,
            n_train=n_train,
        )


DATASETS.register("imagefolder", params=ImageFolderParams)(ImageFolder())
