"""Attack throughput: advgrid vs torchattacks, ART and foolbox vs the bare forward+backward loop.

Measures samples/s of FGSM, PGD-10 (L∞, L2), APGD-CE, C&W-L2 (100 steps, one c), DeepFool
and Square (100 queries) on one model and batch for advgrid and for each peer library that
is installed (torchattacks, ART, foolbox), plus a bare loop doing the same number of
forward+backward passes with no attack logic: the physical floor. One more row runs
advgrid's PGD with ``early_stop`` (samples already fooled stop being attacked) to show how
far that beats the floor. Ratios are taken within the same run.

Every advgrid call returns predictions and per-sample success, which costs one inference
forward pass on the final inputs. torchattacks and ART return the inputs only, so their time
here includes that same scoring pass (a user needs it to report robust accuracy); foolbox
already returns success. ``scoring_s`` in the JSON is that pass alone.

    python benchmarks/attacks.py                       # small CNN, 32×32, batch 256, CPU
    python benchmarks/attacks.py --device cuda --model resnet18 --batch 512

Writes ``benchmarks/results/attacks-<model>-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.attacks import ATTACKS
from tasks.models import MODELS, Normalized

RESULTS = Path(__file__).parent / "results"


def load_model(name: str, device: torch.device) -> nn.Module:
    if name == "resnet18":
        import torchvision

        net = torchvision.models.resnet18(num_classes=10)
    else:
        net = MODELS.get("small_cnn").obj(MODELS.params_of("small_cnn", {}), (3, 32, 32), 10)
    return Normalized(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class _Counter:
    """Samples through the model's forward, by a hook: passes per sample of any library."""

    def __init__(self, model: nn.Module) -> None:
        self.samples = 0
        model.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.samples += int(inputs[0].shape[0])


_FORWARDS: dict[int, float] = {}  # id(fn) -> forward passes per sample of its warm-up call


def _time(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    counter: _Counter | None = None,
    batch: int = 1,
) -> float:
    """Median seconds of ``repeats`` calls after a warm-up; the warm-up itself when slow."""
    before = counter.samples if counter else 0
    start = time.perf_counter()
    fn()  # warm-up
    _sync(device)
    first = time.perf_counter() - start
    if counter:
        _FORWARDS[id(fn)] = (counter.samples - before) / batch
    if first > 3.0:  # long calls: warm-up effects are negligible; keeps the run short
        return first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int) -> Callable[[], None]:
    """``passes`` forward+backward passes for the input gradient, nothing else.

    Parameter gradients are switched off, as every attack needs only the input's.
    """
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            xa = x.clone()
            for _ in range(passes):
                xa.requires_grad_(True)
                grad = torch.autograd.grad(loss_fn(model(xa), y), xa)[0]
                xa = xa.detach() + 0 * grad
        finally:
            for p, flag in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(flag)

    return run


EPS = 8 / 255

# (label, advgrid name, advgrid params, bare passes or None)
CASES: list[tuple[str, str, dict[str, Any], int | None]] = [
    ("fgsm-linf", "fgsm", {"eps": EPS}, 1),
    (
        "pgd-linf-10",
        "pgd",
        {"eps": EPS, "steps": 10, "step_size": EPS / 4, "random_start": True},
        10,
    ),
    (
        "pgd-linf-10 early_stop",
        "pgd",
        {"eps": EPS, "steps": 10, "step_size": EPS / 4, "random_start": True, "early_stop": True},
        10,
    ),
    (
        "pgd-l2-10",
        "pgd",
        {"norm": "l2", "eps": 0.5, "steps": 10, "step_size": 0.125, "random_start": True},
        10,
    ),
    ("apgd_ce-linf-10", "apgd_ce", {"eps": EPS, "steps": 10}, 11),
    ("cw_l2-100", "cw_l2", {"steps": 100, "search_steps": 1, "c": 1.0, "lr": 0.01}, 100),
    ("deepfool-l2-50", "deepfool", {"steps": 50, "overshoot": 0.02, "candidates": 10}, None),
    ("square-linf-100", "square", {"eps": EPS, "max_queries": 100}, None),
]


def _torchattacks(model: nn.Module) -> dict[str, Callable[..., Any]]:
    import torchattacks as ta

    return {
        "fgsm-linf": lambda: ta.FGSM(model, eps=EPS),
        "pgd-linf-10": lambda: ta.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=True),
        "pgd-l2-10": lambda: ta.PGDL2(model, eps=0.5, alpha=0.125, steps=10, random_start=True),
        "apgd_ce-linf-10": lambda: ta.APGD(model, eps=EPS, steps=10, loss="ce", seed=0),
        "cw_l2-100": lambda: ta.CW(model, c=1.0, kappa=0, steps=100, lr=0.01),
        "deepfool-l2-50": lambda: ta.DeepFool(model, steps=50, overshoot=0.02),
        "square-linf-100": lambda: ta.Square(model, eps=EPS, n_queries=100, p_init=0.8, seed=0),
    }


def _art(model: nn.Module, x: torch.Tensor, device: torch.device) -> dict[str, Callable[..., Any]]:
    from art.attacks import evasion as ev
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    b = len(x)
    return {
        "fgsm-linf": lambda: ev.FastGradientMethod(clf, norm=np.inf, eps=EPS, batch_size=b),
        "pgd-linf-10": lambda: ev.ProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=EPS,
            eps_step=EPS / 4,
            max_iter=10,
            num_random_init=1,
            batch_size=b,
            verbose=False,
        ),
        "pgd-l2-10": lambda: ev.ProjectedGradientDescent(
            clf,
            norm=2,
            eps=0.5,
            eps_step=0.125,
            max_iter=10,
            num_random_init=1,
            batch_size=b,
            verbose=False,
        ),
        "apgd_ce-linf-10": lambda: ev.AutoProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=EPS,
            eps_step=2 * EPS,
            max_iter=10,
            nb_random_init=1,
            batch_size=b,
            loss_type="cross_entropy",
            verbose=False,
        ),
        "cw_l2-100": lambda: ev.CarliniL2Method(
            clf,
            confidence=0.0,
            learning_rate=0.01,
            binary_search_steps=1,
            max_iter=100,
            initial_const=1.0,
            batch_size=b,
            verbose=False,
        ),
        "deepfool-l2-50": lambda: ev.DeepFool(
            clf, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=b, verbose=False
        ),
        "square-linf-100": lambda: ev.SquareAttack(
            clf,
            norm=np.inf,
            eps=EPS,
            max_iter=100,
            p_init=0.8,
            nb_restarts=1,
            batch_size=b,
            verbose=False,
        ),
    }


def _foolbox() -> dict[str, tuple[Callable[..., Any], float | None]]:
    import foolbox.attacks as fa

    return {
        "fgsm-linf": (lambda: fa.FGSM(), EPS),
        "pgd-linf-10": (lambda: fa.LinfPGD(abs_stepsize=EPS / 4, steps=10), EPS),
        "pgd-l2-10": (lambda: fa.L2PGD(abs_stepsize=0.125, steps=10), 0.5),
        "cw_l2-100": (
            lambda: fa.L2CarliniWagnerAttack(
                binary_search_steps=1, steps=100, stepsize=0.01, initial_const=1.0
            ),
            None,
        ),
        "deepfool-l2-50": (lambda: fa.L2DeepFoolAttack(steps=50, candidates=10), None),
    }


def _peers(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> dict[str, dict[str, Callable[[], object]]]:
    """{peer: {case label: a call that attacks the batch and has its predictions}}."""

    def scored(adv: Any) -> torch.Tensor:
        adv = torch.as_tensor(adv, device=device)
        with torch.inference_mode():
            return model(adv).argmax(1)

    peers: dict[str, dict[str, Callable[[], object]]] = {}
    with contextlib.suppress(ImportError):
        peers["torchattacks"] = {
            k: (lambda make=make: scored(make()(x.clone(), y)))
            for k, make in _torchattacks(model).items()
        }
    with contextlib.suppress(ImportError):
        xn, yn = x.cpu().numpy(), y.cpu().numpy()
        peers["art"] = {  # a copy per call: the array shares memory with x
            k: (lambda make=make: scored(make().generate(x=xn.copy(), y=yn.copy())))
            for k, make in _art(model, x, device).items()
        }
    with contextlib.suppress(ImportError):
        import foolbox

        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=device)
        peers["foolbox"] = {
            k: (lambda make=make, eps=eps: make()(fmodel, x.clone(), y, epsilons=eps))
            for k, (make, eps) in _foolbox().items()
        }
    return peers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="small_cnn", choices=["small_cnn", "resnet18"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="case labels to run (default: all)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = load_model(args.model, device)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    # labels = the model's own predictions: every sample starts correctly classified, so an
    # implementation that skips misclassified samples (torchattacks' APGD) skips none
    with torch.no_grad():
        y = model(x).argmax(1)
    pristine, labels = x.clone(), y.clone()
    counter = _Counter(model)
    began = time.perf_counter()
    peers = _peers(model, x, y, device)

    def scoring() -> None:
        with torch.inference_mode():
            model(x).argmax(1)

    scoring_s = _time(scoring, device, args.repeats)
    rows = []
    for label, name, params, passes in CASES:
        if args.only and label not in args.only:
            continue
        attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, params))
        row: dict[str, Any] = {"attack": label, "passes": passes, "scoring_s": scoring_s}
        if passes:
            row["bare_s"] = _time(_bare(model, x, y, passes), device, args.repeats)
        out = attack(model, x, y)
        row["advgrid_backward_per_sample"] = out.backward / len(x)
        run = lambda a=attack: a(model, x, y)  # noqa: E731
        row["advgrid_s"] = _time(run, device, args.repeats, counter, args.batch)
        row["advgrid_forward_per_sample"] = _FORWARDS[id(run)]
        for peer, calls in peers.items():
            if label in calls:
                row[f"{peer}_s"] = _time(calls[label], device, args.repeats, counter, args.batch)
                row[f"{peer}_forward_per_sample"] = _FORWARDS[id(calls[label])]
        for k in [k for k in list(row) if k.endswith("_s") and k != "scoring_s"]:
            row[k.replace("_s", "_samples_per_s")] = args.batch / row[k]
            if k != "advgrid_s":
                row[f"advgrid_vs_{k[:-2]}"] = row[k] / row["advgrid_s"]
        if not (torch.equal(x, pristine) and torch.equal(y, labels)):
            raise RuntimeError(f"{label}: an implementation modified the benchmark's inputs")
        rows.append(row)
        print(json.dumps(row), flush=True)
    _write(args, device, rows, list(peers), time.perf_counter() - began)


def _write(
    args: argparse.Namespace,
    device: torch.device,
    rows: list[dict],
    peers: list[str],
    total_s: float,
) -> None:
    RESULTS.mkdir(exist_ok=True)
    versions = {"torch": torch.__version__}
    for peer, module in (("torchattacks", "torchattacks"), ("art", "art"), ("foolbox", "foolbox")):
        if peer in peers:
            versions[peer] = __import__(module).__version__
    meta = {
        "device": str(device),
        "model": args.model,
        "batch": args.batch,
        "versions": versions,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "total_s": total_s,
    }
    stem = RESULTS / f"attacks-{args.model}-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    cols = ["bare", "advgrid", *peers]
    lines = [
        f"# Attack throughput ({args.model}, batch {args.batch}, {meta['gpu'] or 'CPU'}, "
        f"{meta['threads']} threads)",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f". "
        f"Whole run: {total_s / 60:.1f} min. Samples/s (higher is better); ratios are "
        "advgrid's throughput over the other's, measured in the same run (> 1: advgrid "
        "faster). Peers that return only inputs are timed with one scoring forward pass.",
        "",
        "| attack | "
        + " | ".join(f"{c} samples/s" for c in cols)
        + " | "
        + " | ".join(f"advgrid / {c}" for c in cols if c != "advgrid")
        + " |",
        "|---|" + "---:|" * (2 * len(cols) - 1),
    ]

    def cell(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    for r in rows:
        speeds = [cell(r.get(f"{c}_samples_per_s"), ".0f") for c in cols]
        ratios = [cell(r.get(f"advgrid_vs_{c}"), ".2f") for c in cols if c != "advgrid"]
        ratios = [v if v == "—" else f"{v}×" for v in ratios]
        lines.append(f"| {r['attack']} | " + " | ".join(speeds + ratios) + " |")
    lines += [
        "",
        "Forward passes per sample (counted by a hook on the model; includes scoring and the "
        "passes of any early exit):",
        "",
        "| attack | " + " | ".join(c for c in cols if c != "bare") + " |",
        "|---|" + "---:|" * (len(cols) - 1),
    ]
    for r in rows:
        counts = [cell(r.get(f"{c}_forward_per_sample"), ".1f") for c in cols if c != "bare"]
        lines.append(f"| {r['attack']} | " + " | ".join(counts) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
