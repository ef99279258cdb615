"""Training throughput: advgrid's train cell against a bare PyTorch loop, same recipe, same run.

A small CNN (advgrid's ``small_cnn``, built once per row from the same seed) is trained on
Fashion-MNIST-shaped data (``synthetic``: class prototypes plus noise, 1×28×28, 10 classes;
throughput does not depend on what the images show). Every row trains the same recipe
(Adam, lr 1e-3, batch 64, ``--epochs``) on the same training part (about ``--train``
images: the seeded split of ``--train`` + 500 generated ones), on one CPU thread
(as a cell with ``num_cpus: 1`` runs), and reports training samples/s (samples × epochs over
the wall time; the best of ``--repeat`` runs) and the ratio to the bare loop of the same run:

- **bare loop**: the loop a paper's script writes: a seeded permutation per epoch, each
  minibatch converted from uint8 to float, forward, cross-entropy, backward, Adam step. It
  mirrors ``tasks.training.fit`` step for step, so the two must end with the same weights,
  bit for bit; the row records whether they did.
- **fit**: ``tasks.training.fit`` on the same tensors (what a train cell runs).
- **train cell**: a whole train cell through ``tasks.cells.run.run_cell`` on the same
  images (dataset from the worker cache, model built, trained, evaluated on the 500 held-out
  images, checkpoint stored), timed end to end; and the same with ``checkpoint_every: 1``
  (its whole state saved to the store after every epoch), which prices resume inside a cell.
- **fit, augmented + EMA**: ``augment: [crop, flip]`` and ``ema: 0.999``, the CIFAR recipe's
  extra per-step work, against the same bare loop.

    python benchmarks/train.py                 # 10 000 images, 3 epochs, best of 3
    python benchmarks/train.py --quick         # smoke run: 1 000 images, 1 epoch, temp folder

Writes ``benchmarks/results/train-cpu.json`` and ``.md`` (``--out`` to change). GPU rows (a
ResNet-18 on CIFAR-shaped data, bf16, channels_last, compile) are not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks import datasets, models, training

RESULTS = Path(__file__).parent / "results"
EVAL = 500
ARCH, ARCH_PARAMS = "small_cnn", {"width": 16, "hidden": 64}


def _dataset(n: int) -> tuple[str, dict[str, Any]]:
    """Fashion-MNIST-shaped data: ``n`` training images (1×28×28, 10 classes) and 500 held out."""
    return "synthetic", {
        "n_samples": n + EVAL,
        "num_classes": 10,
        "image_size": 28,
        "noise": 0.3,
        "eval_size": EVAL,
    }


def _model(data: datasets.Data, seed: int) -> nn.Module:
    return models.build(
        ARCH,
        models.params_of(ARCH, ARCH_PARAMS),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        seed=seed,
    )


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """A plain PyTorch training loop: Adam, batch 64, a seeded permutation per epoch."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for idx in order.split(64):
                xb = x[idx].float().div_(255) if x.dtype == torch.uint8 else x[idx]
                loss = nn.functional.cross_entropy(model(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()


def _best(run: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _cell(name: str, values: dict, epochs: int, store: Path, **execution: Any) -> float:
    """Seconds of one whole train cell (planned from a one-model study), end to end."""
    from orchestrator.study import loader
    from orchestrator.study.plan import expand
    from tasks.cells.payload import CellPayload
    from tasks.cells.run import run_cell

    component = json.dumps({"name": name, **values})
    text = (
        f"name: bench\ndatasets:\n  - {component}\nmodels:\n  - name: cnn\n    arch: {ARCH}\n"
        f"    params: {json.dumps(ARCH_PARAMS)}\n    train: {{epochs: {epochs}, seed: 0}}\n"
        "attacks:\n  - {name: fgsm, eps: 0.1}\n"
    )
    cell = next(c for c in expand(loader.parse(text)).cells if c.kind == "train")
    payload = CellPayload(
        key=cell.key, kind="train", spec=cell.typed, store=str(store), batch_size=500, **execution
    )
    start = time.perf_counter()
    run_cell(payload)
    return time.perf_counter() - start


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    name, values = _dataset(args.train)
    params = datasets.params_of(name, values)
    data = datasets.load(name, params)
    split = datasets.split(len(data.y), params, data.n_train)
    x, y = data.x[split.train], data.y[split.train]
    samples = len(y) * args.epochs
    recipe = training.TrainParams(epochs=args.epochs, batch_size=64, lr=1e-3, seed=0)
    extra = training.TrainParams(
        **{**recipe.model_dump(), "augment": ["crop", "flip"], "ema": 0.999}
    )
    bare, fitted = _model(data, 0), _model(data, 0)
    # warm-up, untimed: first calls of each kernel, the worker's dataset cache, imports
    bare_loop(_model(data, 0), x[:256], y[:256], 1)
    training.fit(_model(data, 0), x[:256], y[:256], recipe)
    _cell(name, values, 1, work / "warm")
    timed = {
        "bare loop": _best(lambda: bare_loop(_reset(bare, data), x, y, args.epochs), args.repeat),
        "fit": _best(lambda: training.fit(_reset(fitted, data), x, y, recipe), args.repeat),
        "fit, augmented + EMA": _best(
            lambda: training.fit(_model(data, 0), x, y, extra), args.repeat
        ),
    }
    for label, execution in CELL_ROWS:
        store = work / str(len(timed))
        timed[label] = _best(
            lambda s=store, e=execution: _cell(name, values, args.epochs, s, **e), args.repeat
        )
    same = all(
        torch.equal(a, b)
        for a, b in zip(bare.state_dict().values(), fitted.state_dict().values(), strict=True)
    )
    rows = [
        {
            "row": label,
            "seconds": seconds,
            "samples_per_s": samples / seconds,
            "ratio_to_bare": timed["bare loop"] / seconds,
        }
        for label, seconds in timed.items()
    ]
    rows[1]["same_weights_as_bare"] = same
    return {
        "dataset": f"{name} (Fashion-MNIST shape: 1×28×28, 10 classes)",
        "train_images": len(y),
        "epochs": args.epochs,
        "repeat": args.repeat,
        "threads": 1,
        "arch": ARCH,
        "arch_params": ARCH_PARAMS,
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.processor(),
        },
    }


CELL_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("train cell", {}),
    ("train cell, state saved every epoch", {"checkpoint_every": 1}),
]


def _reset(model: nn.Module, data: datasets.Data) -> nn.Module:
    """``model`` with its initial weights again (a repeat trains from the same start)."""
    model.load_state_dict(_model(data, 0).state_dict())
    return model


def summary(result: dict[str, Any]) -> str:
    lines = [
        "# Training throughput (CPU, one thread)",
        "",
        f"{result['arch']} {result['arch_params']} on {result['dataset']} "
        f"({result['train_images']} training images, {result['epochs']} epochs, best of "
        f"{result['repeat']}; Adam, batch 64). Ratios are to the bare PyTorch loop of the "
        "same run.",
        "",
        "| row | seconds | samples/s | × bare loop |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        speed, ratio = f"{r['samples_per_s']:.0f}", f"{r['ratio_to_bare']:.3f}"
        lines.append(f"| {r['row']} | {r['seconds']:.2f} | {speed} | {ratio} |")
    fit = next(r for r in result["rows"] if r["row"] == "fit")
    lines += [
        "",
        f"`fit` and the bare loop end with the same weights: {fit['same_weights_as_bare']}.",
        "The train-cell rows also build the model, evaluate it on 500 held-out images and",
        "store the checkpoint.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000, help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 000 images, 1 epoch, 1 run")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results")
    args = parser.parse_args()
    if args.quick:
        args.train, args.epochs, args.repeat = 1_000, 1, 1
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        result = measure(args, Path(work))
    (out / "train-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "train-cpu.md").write_text(summary(result))
    print(summary(result))
    print(f"wrote {out / 'train-cpu.json'}")


if __name__ == "__main__":
    main()
