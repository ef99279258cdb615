"""Attack throughput: advgrid vs torchattacks vs the bare forward+backward loop.

Measures samples/s of FGSM and PGD-10 (L∞ and L2) on one model and batch for advgrid,
torchattacks (when installed) and a bare loop doing the same number of forward+backward
passes with no attack logic — the physical floor. Ratios are taken within the same run.

    python benchmarks/attacks.py                       # small CNN, 32×32, batch 256, CPU
    python benchmarks/attacks.py --device cuda --model resnet18 --batch 512

Writes ``benchmarks/results/attacks-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tasks.attacks import ATTACKS
from tasks.models import MODELS, Normalized

RESULTS = Path(__file__).parent / "results"


def _model(name: str, device: torch.device) -> nn.Module:
    if name == "resnet18":
        import torchvision

        net = torchvision.models.resnet18(num_classes=10)
    else:
        net = MODELS.get("small_cnn").obj(MODELS.params_of("small_cnn", {}), (3, 32, 32), 10)
    return Normalized(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int) -> Callable[[], None]:
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        xa = x.clone()
        for _ in range(passes):
            xa.requires_grad_(True)
            grad = torch.autograd.grad(loss_fn(model(xa), y), xa)[0]
            xa = xa.detach() + 0 * grad

    return run


def _cases(eps: float) -> list[tuple[str, dict, int, str | None, dict]]:
    """(label, advgrid params, passes, torchattacks class, torchattacks kwargs)."""
    return [
        ("fgsm", {"eps": eps}, 1, "FGSM", {"eps": eps}),
        (
            "pgd",
            {"norm": "linf", "eps": eps, "steps": 10, "step_size": eps / 4, "random_start": True},
            10,
            "PGD",
            {"eps": eps, "alpha": eps / 4, "steps": 10, "random_start": True},
        ),
        (
            "pgd",
            {"norm": "l2", "eps": 0.5, "steps": 10, "step_size": 0.125, "random_start": True},
            10,
            "PGDL2",
            {"eps": 0.5, "alpha": 0.125, "steps": 10, "random_start": True},
        ),
        (
            "apgd_ce",
            {"eps": eps, "steps": 10},
            11,
            "APGD",
            {"eps": eps, "steps": 10, "loss": "ce", "seed": 0},
        ),
        (
            "cw_l2",
            {"steps": 100, "search_steps": 1, "c": 1.0, "lr": 0.01},
            100,
            "CW",
            {"c": 1.0, "kappa": 0, "steps": 100, "lr": 0.01},
        ),
        (
            "square",
            {"eps": eps, "max_queries": 100},
            0,
            "Square",
            {"eps": eps, "n_queries": 100, "p_init": 0.8, "seed": 0},
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="small_cnn", choices=["small_cnn", "resnet18"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = _model(args.model, device)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    # labels = the model's own predictions: every sample starts correctly classified, so an
    # implementation that skips misclassified samples (torchattacks' APGD) skips none
    with torch.no_grad():
        y = model(x).argmax(1)
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    rows = []
    for name, params, passes, ta_name, ta_kwargs in _cases(8 / 255):
        attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, params))
        norm = getattr(attack.params, "norm", attack.norm)
        label = f"{name}-{norm}" + (f"-{passes}" if passes > 1 else "")
        row = {"attack": label, "passes": passes}
        # the floor: as many forward+backward passes (none for the black-box Square)
        row["bare_s"] = _time(_bare(model, x, y, passes), device, args.repeats) if passes else 0.0
        row["advgrid_s"] = _time(lambda a=attack: a(model, x, y), device, args.repeats)
        if torchattacks is not None:
            ta = getattr(torchattacks, ta_name)(model, **ta_kwargs)
            row["torchattacks_s"] = _time(lambda t=ta: t(x, y), device, args.repeats)
        for k in [k for k in row if k.endswith("_s") and row[k]]:
            row[k.replace("_s", "_samples_per_s")] = args.batch / row[k]
        row["advgrid_vs_bare"] = row["bare_s"] / row["advgrid_s"] if passes else None
        if "torchattacks_s" in row:
            row["advgrid_vs_torchattacks"] = row["torchattacks_s"] / row["advgrid_s"]
        rows.append(row)
        print(json.dumps(row))
    _write(args, device, rows)


def _write(args: argparse.Namespace, device: torch.device, rows: list[dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "device": str(device),
        "model": args.model,
        "batch": args.batch,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }
    stem = RESULTS / f"attacks-{args.model}-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"# Attack throughput ({args.model}, batch {args.batch}, {meta['gpu'] or 'CPU'}, "
        f"{meta['threads']} threads, torch {meta['torch']})",
        "",
        "| attack | bare loop samples/s | advgrid samples/s | torchattacks samples/s "
        "| advgrid / bare | advgrid / torchattacks |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ta = r.get("torchattacks_samples_per_s")
        ratio = r.get("advgrid_vs_torchattacks")
        bare, vs_bare = r.get("bare_samples_per_s"), r["advgrid_vs_bare"]
        lines.append(
            f"| {r['attack']} | {'—' if bare is None else f'{bare:.0f}'} | "
            f"{r['advgrid_samples_per_s']:.0f} | {'' if ta is None else f'{ta:.0f}'} | "
            f"{'—' if vs_bare is None else f'{vs_bare:.2f}×'} | "
            f"{'' if ratio is None else f'{ratio:.2f}×'} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
