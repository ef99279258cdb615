"""Datasets from files: load throughput against torchvision, planning at 10 000 CIFAR-10 cells,
and peak memory against the uint8 size of the data.

Throughput: every training image of a dataset read from its files and gone through once in
minibatches of 256 as float32 (advgrid: ``datasets.load`` then ``tasks.batches.batches``;
torchvision: its own dataset class on the same files, ``ToTensor``, a ``DataLoader`` with the
same batch size), images/s including the load. Datasets: the real Fashion-MNIST (Debian's
``dataset-fashion-mnist``, when installed), CIFAR-10 written by this script in both published
layouts (the binary version advgrid reads, the python version torchvision reads), and an
ImageFolder of PNG files written by this script (both decode lazily; one worker each; with
no official split advgrid goes through the seeded training part, torchvision through every
image, so compare images/s). advgrid's ImageFolder load decodes up to 1 000 training images
once more for the normalization statistics.

Planning: a generated study of ≈10 000 cells (10 models trained on CIFAR-10, a grid of PGD
budgets, every transfer cell) parsed, validated and expanded, with the digest cache cold
(first run on new files: every file hashed once) and warm (every later run). The target is
< 5 s.

Peak memory: peak RSS of a process that runs a CIFAR-10 train cell (``advgrid run`` inline,
one ``mlp`` epoch on the 50 000 training images) against the same command on 8×8 synthetic
data (the baseline: Python, torch, the index and MLflow), and of a process that loads an
ImageFolder and materializes a 256-image evaluation slice, against one that only imports;
each beside the uint8 size of the data.

    python benchmarks/data.py              # full sizes (CIFAR-10 as published: 60 000 images)
    python benchmarks/data.py --quick      # smoke run: small sizes, no real data, temp folder

Writes ``benchmarks/results/data-cpu.json`` and ``.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
FASHION = Path("/usr/share/datasets/fashion-mnist")
TARGET_S = 5.0
FULL = {"cifar_train": 50_000, "cifar_test": 10_000, "folder_images": 5_000, "cells": 10_000}
QUICK = {"cifar_train": 2_000, "cifar_test": 500, "folder_images": 300, "cells": 1_000}
BATCH = 256


# -- files in the published layouts ----------------------------------------------------


def cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_cifar10(root: Path, n_train: int, n_test: int) -> None:
    """CIFAR-10 in both layouts under ``root``: ``cifar-10-batches-bin/`` (records of a label
    byte and 3 072 pixel bytes) and ``cifar-10-batches-py/`` (protocol-2 pickles of dicts)."""
    binary, python = root / "cifar-10-batches-bin", root / "cifar-10-batches-py"
    binary.mkdir(parents=True)
    python.mkdir(parents=True)
    per = n_train // 5
    parts = [(f"data_batch_{i + 1}", per, i) for i in range(5)] + [("test_batch", n_test, 9)]
    for name, n, seed in parts:
        x, y = cifar_images(n, seed)
        records = np.concatenate([y[:, None], x], axis=1)
        (binary / f"{name}.bin").write_bytes(records.tobytes())
        batch = {"batch_label": name, "labels": y.tolist(), "data": x}
        # the python version, as the peer (torchvision) reads it; written here, never read
        (python / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = "\n".join(["airplane", "automobile", "bird", "cat", "deer"] * 2) + "\n"
    (binary / "batches.meta.txt").write_text(names)
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (python / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_imagefolder(root: Path, n: int, size: int = 32) -> None:
    """``n`` PNG images in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


# -- throughput ------------------------------------------------------------------------


def advgrid_pass(name: str, values: dict[str, Any]) -> tuple[int, float]:
    """Images and seconds: load, then every training image once as float batches."""
    import torch

    from tasks import datasets
    from tasks.batches import batches

    start = time.perf_counter()
    params = datasets.params_of(name, values)
    data = datasets.load(name, params)
    split = datasets.split(len(data.y), params, data.n_train)
    seen = 0
    for xb, _ in batches(data.x, data.y, split.train.split(BATCH), torch.device("cpu")):
        seen += len(xb)
    return seen, time.perf_counter() - start


def torchvision_pass(kind: str, root: Path) -> tuple[int, float]:
    """The same with torchvision's own dataset class on the same files."""
    import torch
    from torchvision import datasets as tv
    from torchvision.transforms import ToTensor

    start = time.perf_counter()
    if kind == "fashion_mnist":
        ds: Any = tv.FashionMNIST(str(root), train=True, download=False, transform=ToTensor())
    elif kind == "cifar10":
        ds = _written_cifar10()(str(root), train=True, download=False, transform=ToTensor())
    else:
        ds = tv.ImageFolder(str(root), transform=ToTensor())
    seen = 0
    for xb, _ in torch.utils.data.DataLoader(ds, batch_size=BATCH):
        seen += len(xb)
    return seen, time.perf_counter() - start


def _written_cifar10() -> type:
    """torchvision's CIFAR10, reading the files as it does, minus its MD5 check of them
    against the published files (these are written by the benchmark)."""
    from torchvision import datasets as tv

    class Written(tv.CIFAR10):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:  # its own reads the meta file after an MD5 check
            self.classes = [f"c{i}" for i in range(10)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return Written


def fashion_for_torchvision(tmp: Path) -> Path:
    """torchvision reads ``ROOT/FashionMNIST/raw/``; links to the real files there."""
    raw = tmp / "tv-fashion" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FASHION.iterdir():
        (raw / f.name).symlink_to(f)
        if f.suffix == ".gz":  # it looks for the unpacked names
            import gzip

            (raw / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    return tmp / "tv-fashion"


def throughput(tmp: Path, cifar: Path, folder: Path, *, real: bool) -> list[dict[str, Any]]:
    cases: list[tuple[str, str, dict[str, Any], Path]] = []
    if real and (FASHION / "train-images-idx3-ubyte.gz").is_file():
        cases.append(("fashion_mnist (real)", "fashion_mnist", {}, fashion_for_torchvision(tmp)))
    cases.append(("cifar10 (written)", "cifar10", {"root": str(cifar)}, cifar))
    cases.append(("imagefolder (PNG)", "imagefolder", {"root": str(folder)}, folder))
    rows = []
    for label, name, values, tv_root in cases:
        n, ours = advgrid_pass(name, values)
        kind = "imagefolder" if name == "imagefolder" else name
        n_tv, theirs = torchvision_pass(kind, tv_root)
        rows.append(
            {
                "dataset": label,
                "images": n,
                "torchvision_images": n_tv,
                "advgrid_s": round(ours, 3),
                "torchvision_s": round(theirs, 3),
                "advgrid_images_per_s": round(n / ours),
                "torchvision_images_per_s": round(n_tv / theirs),
                "ratio": round((n / ours) / (n_tv / theirs), 2),
            }
        )
        print(f"throughput {label}: {rows[-1]['ratio']}× torchvision", flush=True)
    return rows


# -- planning --------------------------------------------------------------------------


def planning(tmp: Path, cifar: Path, cells: int) -> list[dict[str, Any]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from store import study_text  # the same generated grid the store benchmark plans

    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    text = study_text(cells, "plan_cifar").replace(
        "{name: digits, eval_size: 64}", f"{{name: cifar10, eval_size: 1000, root: {cifar}}}"
    )
    path = tmp / "plan.yaml"
    path.write_text(text)
    rows = []
    for run in ("cold digest cache", "warm digest cache"):
        if run.startswith("cold"):
            os.environ["ADVGRID_CACHE"] = str(tmp / "digest-cache")
        start = time.perf_counter()
        study = loader.load(path)
        parsed = time.perf_counter()
        plan = expand(study)
        done = time.perf_counter()
        rows.append(
            {
                "run": run,
                "cells": len(plan.cells),
                "parse_s": round(parsed - start, 3),
                "expand_s": round(done - parsed, 3),
                "total_s": round(done - start, 3),
            }
        )
        print(f"planning {run}: {rows[-1]['total_s']} s for {len(plan.cells)} cells", flush=True)
    return rows


# -- peak memory -----------------------------------------------------------------------

TRAIN_STUDY = """\
name: mem
datasets:
  - {dataset}
models:
  - {{name: m, arch: mlp, params: {{hidden: [64]}}, train: {{epochs: 1, batch_size: 256}}}}
attacks:
  - {{name: fgsm, eps: 0.03}}
sources: []
targets: []
"""

SLICE = """\
import sys
from tasks import datasets
if sys.argv[1] == "slice":
    n = int(sys.argv[3])
    params = datasets.params_of("imagefolder", {"root": sys.argv[2], "eval_size": n})
    data = datasets.load("imagefolder", params)
    split = datasets.split(len(data.y), params, data.n_train)
    x = data.images(split.eval)
    assert x.shape[0] == n
"""

# A child's own peak: VmHWM of its address space, printed at exit. Not wait4's ru_maxrss:
# Linux carries the parent's high-water mark over fork and exec into the child's, so every
# child of this (large) process would report at least this process's peak.
PEAK = """import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK_KB " + line.split()[1] + "\\n")
atexit.register(_peak)
"""
CLI = PEAK + "import sys\nfrom orchestrator.cli import main\nsys.argv[0] = 'advgrid'\nmain()\n"


def child_rss_mb(cmd: list[str], env: dict[str, str]) -> float:
    """Peak RSS of a Python child, MB: the VmHWM it prints at exit (see :data:`PEAK`)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    peaks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_KB ")]
    if not peaks:
        raise RuntimeError(f"{' '.join(cmd)} printed no peak:\n{out[-3000:]}")
    return int(peaks[-1]) / 1024


def memory(tmp: Path, cifar: Path, folder: Path, n_cifar: int, n_folder: int) -> list[dict]:
    rows = []
    for label, dataset, uint8 in (
        ("train cell, cifar10", f"{{name: cifar10, root: {cifar}, eval_size: 256}}", n_cifar),
        ("train cell, synthetic 8×8 (baseline)", "{name: synthetic, n_samples: 1000}", 0),
    ):
        work = tmp / f"mem-{len(rows)}"
        work.mkdir()
        study = work / "s.yaml"
        study.write_text(TRAIN_STUDY.format(dataset=dataset))
        env = {
            **os.environ,
            "ADVGRID_DB": f"sqlite:///{work / 'i.db'}",
            "ADVGRID_STORE": str(work / "store"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'm.db'}",
        }
        cmd = [sys.executable, "-c", CLI, "run", str(study), "--executor", "inline"]
        cmd += ["--no-mlflow", "--quiet"]
        rows.append({"process": label, "peak_rss_mb": round(child_rss_mb(cmd, env), 1)})
        rows[-1]["data_uint8_mb"] = round(uint8 * 3072 / 2**20, 1)
    env = dict(os.environ)
    n_slice = min(256, n_folder // 5)
    for label, args, uint8 in (
        (
            f"imagefolder eval slice ({n_slice} images)",
            ["slice", str(folder), str(n_slice)],
            n_folder,
        ),
        ("import only (baseline)", ["none"], 0),
    ):
        rss = child_rss_mb([sys.executable, "-c", PEAK + SLICE, *args], env)
        rows.append(
            {"process": label, "peak_rss_mb": round(rss, 1), "data_uint8_mb": uint8 * 3072 / 2**20}
        )
        rows[-1]["data_uint8_mb"] = round(rows[-1]["data_uint8_mb"], 1)
    print("memory:", json.dumps(rows), flush=True)
    return rows


# -- report ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__}


def markdown(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    lines = [
        f"# Datasets from files ({os.cpu_count()} CPUs)",
        "",
        f"Versions: torch {result['versions']['torch']}, torchvision "
        f"{result['versions']['torchvision']}. Whole run: {result['wall_s'] / 60:.1f} min.",
        "",
        "## Load throughput",
        "",
        f"Every training image once, read from the files and batched ({BATCH}) as float32, "
        "the load included; torchvision's own dataset class on the same files, `ToTensor`, a "
        f"`DataLoader` of the same batch size. CIFAR-10: {sizes['cifar_train']:,} + "
        f"{sizes['cifar_test']:,} random images written in both layouts; ImageFolder: "
        f"{sizes['folder_images']:,} PNG files of 32×32.",
        "",
        "| dataset | images | advgrid s | torchvision s | advgrid img/s | torchvision img/s "
        "| ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['dataset']} | {r['images']:,} | {r['advgrid_s']} | {r['torchvision_s']} | "
            f"{r['advgrid_images_per_s']:,} | {r['torchvision_images_per_s']:,} | "
            f"**{r['ratio']}×** |"
        )
    worst = max(r["total_s"] for r in result["planning"])
    met = "met" if worst < TARGET_S else "NOT met"
    lines += [
        "",
        "## Planning",
        "",
        f"Parse and validate (every dataset's files found and digested) and expand a generated "
        f"CIFAR-10 study; no image is read. Target < {TARGET_S:.0f} s: **{met}** "
        f"(worst {worst} s).",
        "",
        "| run | cells | parse s | expand s | total s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["planning"]:
        lines.append(
            f"| {r['run']} | {r['cells']:,} | {r['parse_s']} | {r['expand_s']} | "
            f"**{r['total_s']}** |"
        )
    lines += [
        "",
        "## Peak memory",
        "",
        "Peak RSS of the process, beside the uint8 size of the images it reads (a float32 "
        "copy of them would be four times that). The baselines are the same process on "
        "data too small to matter.",
        "",
        "| process | peak RSS MB | data uint8 MB |",
        "|---|---:|---:|",
    ]
    for r in result["memory"]:
        lines.append(f"| {r['process']} | {r['peak_rss_mb']} | {r['data_uint8_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="advgrid-data-bench-") as folder:
        tmp = Path(folder)
        os.environ["ADVGRID_CACHE"] = str(tmp / "digest-cache")
        cifar, images = tmp / "cifar", tmp / "images"
        write_cifar10(cifar, sizes["cifar_train"], sizes["cifar_test"])
        write_imagefolder(images, sizes["folder_images"])
        result = {
            "sizes": sizes,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "versions": versions(),
            "throughput": throughput(tmp, cifar, images, real=not args.quick),
            "planning": planning(tmp, cifar, sizes["cells"]),
            "memory": memory(
                tmp,
                cifar,
                images,
                sizes["cifar_train"] + sizes["cifar_test"],
                sizes["folder_images"],
            ),
        }
    result["wall_s"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "data-cpu.md").write_text(markdown(result))
    print(f"wrote {out / 'data-cpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
