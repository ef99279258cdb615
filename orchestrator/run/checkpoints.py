"""Checkpoint files named in a study: loaded without pickle, checked, imported to the store."""

from __future__ import annotations

from pathlib import Path

import torch

from orchestrator.errors import ConfigError
from orchestrator.study.schema import Study
from storage import ArtifactStore
from tasks import datasets, models
from tasks.errors import TaskError


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("expected a state dict (parameter name -> tensor)")
    return state


def import_all(study: Study, store_root: str) -> dict[str, str]:
    """Import every checkpoint file of ``study``; returns model name → artifact digest.

    A checkpoint may hold the bare network's state dict or advgrid's own (with ``net.``
    prefixes and normalization buffers). It must load into the model's architecture for
    every dataset the model is used on; otherwise nothing is written.
    """
    if not study.checkpoints:
        return {}
    store, out = ArtifactStore(store_root), {}
    for i, m in enumerate(study.file.models):
        if m.name not in study.checkpoints:
            continue
        path, sha = study.checkpoints[m.name]
        d = next(d for d in study.datasets if m.datasets is None or d.label in m.datasets)
        data = datasets.load(d.name, datasets.params_of(d.name, d.params))
        arch_params = models.params_of(m.arch, m.params)
        try:
            net = models.build(
                m.arch,
                arch_params,
                input_shape=data.input_shape,
                num_classes=data.num_classes,
                mean=data.mean,
                std=data.std,
                allow_imports=study.file.allow_imports,
            )
        except TaskError as exc:
            raise ConfigError(study.path, [f"models[{i}].arch: {exc}"]) from exc
        try:
            state = read_state_dict(path)
            target = net if any(k.startswith("net.") for k in state) else net.net
            target.load_state_dict(state)
        except Exception as exc:
            raise ConfigError(
                study.path,
                [
                    f"models[{i}].checkpoint: {Path(path).name} does not load into "
                    f"{m.arch} for dataset {d.label!r}: {exc}"
                ],
            ) from exc
        meta = {
            "kind": "checkpoint",
            "arch": m.arch,
            "params": models.dump_params(arch_params),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "mean": list(data.mean),
            "std": list(data.std),
            "model": m.name,
            "source_file_sha256": sha,
        }
        record = store.put(
            {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, meta
        )
        out[m.name] = record.digest
    return out
