"""A CIFAR-shaped study end to end on one device: advgrid's train and PGD cells against a bare
PyTorch loop and torchattacks on the same model, samples/s.

The benchmark writes CIFAR-10 in the published binary layout (``cifar-10-batches-bin``:
records of a label byte and 3 072 pixel bytes; class prototypes plus noise, so the model
learns something) and runs a study on it with ``advgrid run --executor inline``: one
ResNet-18 (the 32×32 variant) trained with the field's recipe (SGD, cosine schedule, crop and
flip) and PGD-10 at 8/255 on the evaluation slice. Cell durations come from the index:

- train: training images × epochs / train cell seconds (the cell also loads the data, builds
  the model and scores the evaluation slice once);
- PGD: evaluation images / attack cell seconds (the cell also loads the model, scores clean
  and adversarial inputs and stores the examples).

Peers, in the same process and on the same device, on the same uint8 data:

- bare training loop: the same model, optimizer, schedule and batch size, each batch
  converted to float and augmented on the device, no advgrid code;
- bare PGD loop: 10 steps of forward, backward and a signed step, plus one scoring pass;
- torchattacks' PGD (when installed), plus the same scoring pass.

    python benchmarks/cifar_study.py --device cuda                 # 50 000 + 10 000 images
    python benchmarks/cifar_study.py --quick                       # smoke run on the CPU

Writes ``benchmarks/results/cifar-study-<device>.json`` and ``.md`` (``--out`` to change;
``--quick`` writes to a temporary folder unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
FULL = {"train": 50_000, "test": 10_000, "eval": 2_000, "epochs": 2, "batch": 256}
QUICK = {"train": 1_000, "test": 200, "eval": 100, "epochs": 1, "batch": 100}
EPS, STEPS = 8 / 255, 10

STUDY = """\
name: cifar_bench
datasets:
  - {{name: cifar10, root: {root}, eval_size: {eval}}}
models:
  - name: r18
    arch: resnet18
    train: {{epochs: {epochs}, batch_size: {batch}, optimizer: sgd, lr: 0.1,
            weight_decay: 5.0e-4, schedule: cosine, augment: [crop, flip]}}
attacks:
  - {{name: pgd, eps: 8/255, steps: {steps}}}
targets: []
execution:
  batch_size: {batch}
  channels_last: {channels_last}
  resources:
    train: {{num_cpus: {cpus}, num_gpus: {gpus}}}
    attack: {{num_cpus: {cpus}, num_gpus: {gpus}}}
"""


def write_cifar(root: Path, n_train: int, n_test: int) -> None:
    """Learnable CIFAR-10-shaped data in the binary layout: a prototype per class, noise."""
    rng = np.random.default_rng(0)
    prototypes = rng.integers(40, 216, (10, 3072))
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    per = n_train // 5
    for name, n in [
        *((f"data_batch_{i}.bin", per) for i in range(1, 6)),
        ("test_batch.bin", n_test),
    ]:
        y = rng.integers(0, 10, n)
        x = np.clip(prototypes[y] + rng.normal(0, 40, (n, 3072)), 0, 255).astype(np.uint8)
        (folder / name).write_bytes(np.concatenate([y[:, None].astype(np.uint8), x], 1).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")


def advgrid_cells(tmp: Path, root: Path, sizes: dict, device: str) -> dict[str, float]:
    """Run the study; seconds of its train and attack cells, from the index."""
    import torch

    study = tmp / "study.yaml"
    study.write_text(
        STUDY.format(
            root=root,
            eval=sizes["eval"],
            epochs=sizes["epochs"],
            batch=sizes["batch"],
            steps=STEPS,
            channels_last=str(device == "cuda").lower(),
            gpus=1 if device == "cuda" else 0,
            cpus=torch.get_num_threads(),  # the same threads as the peers
        )
    )
    db = tmp / "index.db"
    env = {
        **os.environ,
        "ADVGRID_DB": f"sqlite:///{db}",
        "ADVGRID_STORE": str(tmp / "store"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "ADVGRID_CACHE": str(tmp / "cache"),
    }
    cmd = [sys.executable, "-m", "orchestrator", "run", str(study), "--executor", "inline"]
    run = subprocess.run([*cmd, "--no-mlflow", "--quiet"], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(run.stdout[-3000:] + run.stderr[-3000:])
    with sqlite3.connect(db) as con:
        rows = con.execute("select kind, duration_s from cells where state = 'done'").fetchall()
    return {kind: float(s) for kind, s in rows}


def peers(root: Path, sizes: dict, device: str) -> dict[str, Any]:
    """Bare training and PGD loops, and torchattacks' PGD, on the same data and model."""
    import torch
    from torch import nn

    from tasks import datasets, models
    from tasks.augmentation import Augmenter

    dev = torch.device(device)
    params = datasets.params_of("cifar10", {"root": str(root), "eval_size": sizes["eval"]})
    data = datasets.load("cifar10", params)
    split = datasets.split(len(data.y), params, data.n_train)
    assert isinstance(data.x, torch.Tensor)

    def fresh() -> nn.Module:
        net = models.build(
            "resnet18",
            models.params_of("resnet18", {}),
            input_shape=data.input_shape,
            num_classes=10,
            mean=data.mean,
            std=data.std,
        ).to(dev)
        return net.to(memory_format=torch.channels_last) if device == "cuda" else net

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    net, bs = fresh(), sizes["batch"]
    steps = sizes["epochs"] * -(-len(split.train) // bs)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    augment = Augmenter(("crop", "flip"), 0, dev)
    x_u8, y = data.x, data.y
    sync()
    start = time.perf_counter()
    net.train()
    for _ in range(sizes["epochs"]):
        for idx in torch.randperm(len(split.train)).split(bs):
            xb = x_u8[idx].to(dev, non_blocking=True).float().div_(255)
            loss = nn.functional.cross_entropy(net(augment(xb)), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    sync()
    train_s = time.perf_counter() - start
    net.eval()
    x_eval = data.images(split.eval).to(dev)
    y_eval = data.y[split.eval].to(dev)
    out: dict[str, Any] = {"train_s": train_s}

    def timed(attack) -> float:
        sync()
        begin = time.perf_counter()
        for xb, yb in zip(x_eval.split(bs), y_eval.split(bs), strict=True):
            adv = attack(xb, yb)
            with torch.no_grad():
                net(adv).argmax(1)  # the scoring pass every advgrid cell makes
        sync()
        return time.perf_counter() - begin

    def bare_pgd(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        alpha = 2.5 * EPS / STEPS
        adv = (xb + torch.empty_like(xb).uniform_(-EPS, EPS)).clamp(0, 1)
        for _ in range(STEPS):
            adv.requires_grad_(True)
            loss = nn.functional.cross_entropy(net(adv), yb)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = (xb + (adv.detach() + alpha * grad.sign() - xb).clamp(-EPS, EPS)).clamp(0, 1)
        return adv.detach()

    out["bare_pgd_s"] = timed(bare_pgd)
    try:
        import torchattacks
    except ImportError:
        out["torchattacks_pgd_s"] = None
    else:
        ta = torchattacks.PGD(net, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS)
        out["torchattacks_pgd_s"] = timed(ta)
    return out


def markdown(result: dict[str, Any]) -> str:
    s, rows = result["sizes"], result["rows"]
    lines = [
        f"# A CIFAR-shaped study ({result['device_name']})",
        "",
        f"torch {result['torch']}; {s['train']:,} training images × {s['epochs']} epochs, "
        f"batch {s['batch']}, ResNet-18 (32×32), SGD + cosine + crop/flip; PGD-{STEPS} at "
        f"8/255 on {s['eval']:,} test images. advgrid's numbers are whole cells (data "
        "loading, scoring and storing included); the peers run in one process on data "
        "already loaded.",
        "",
        "| work | advgrid samples/s | bare loop samples/s | torchattacks samples/s "
        "| advgrid / bare | advgrid / torchattacks |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ta = "" if r["torchattacks"] is None else f"{r['torchattacks']:,.0f}"
        vs_ta = "" if r["torchattacks"] is None else f"{r['advgrid'] / r['torchattacks']:.2f}×"
        lines.append(
            f"| {r['work']} | {r['advgrid']:,.0f} | {r['bare']:,.0f} | {ta} | "
            f"{r['advgrid'] / r['bare']:.2f}× | {vs_ta} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    sizes = QUICK if args.quick else FULL
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    with tempfile.TemporaryDirectory(prefix="advgrid-cifar-bench-") as folder:
        tmp = Path(folder)
        root = tmp / "cifar10"
        write_cifar(root, sizes["train"], sizes["test"])
        cells = advgrid_cells(tmp, root, sizes, args.device)
        peer = peers(root, sizes, args.device)
    n_train = (sizes["train"] // 5) * 5 * sizes["epochs"]
    ta = peer["torchattacks_pgd_s"]
    rows = [
        {
            "work": "train (epoch samples)",
            "advgrid": n_train / cells["train"],
            "bare": n_train / peer["train_s"],
            "torchattacks": None,
        },
        {
            "work": f"PGD-{STEPS}",
            "advgrid": sizes["eval"] / cells["attack"],
            "bare": sizes["eval"] / peer["bare_pgd_s"],
            "torchattacks": None if ta is None else sizes["eval"] / ta,
        },
    ]
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    result = {
        "device": args.device,
        "device_name": f"{name}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "sizes": sizes,
        "cells_s": cells,
        "peers_s": peer,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cifar-study-{args.device}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
