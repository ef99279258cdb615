"""Checkpoint files named in a study: read without running their code
(:mod:`tasks.checkpoint_io`), checked against their architecture, imported to the store."""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.study.schema import Resolved, Study
from storage import ArtifactStore
from tasks import checkpoint_io, datasets, models
from tasks.checkpoint_io import CheckpointError, LoadError
from tasks.errors import TaskError


def import_all(study: Study, store_root: str) -> dict[str, str]:
    """Import every checkpoint file of ``study``; returns model name → artifact digest, and
    ``sha256:<hex>`` → its digest for each generator file (an advgrid artifact already, so
    its digest is its hash; :mod:`orchestrator.study.generator_files`).

    A checkpoint may hold the bare network's state dict or advgrid's own (with ``net.``
    prefixes and normalization buffers). It must load into the model's architecture for the
    first dataset the model is used on; otherwise nothing is written. Its inputs are
    normalized as its ``normalization:`` says (default: the dataset's statistics).
    """
    if not study.checkpoints and not study.generator_files:
        return {}
    store, out = ArtifactStore(store_root), {}
    for sha, f in study.generator_files.items():
        store.put_bytes(sha, Path(f.path).read_bytes())  # refused if the file changed since
        out[f"sha256:{sha}"] = sha
    for i, m in enumerate(study.file.models):
        if m.name not in study.checkpoints:
            continue
        path, sha = study.checkpoints[m.name]
        homes = study.home_datasets()  # out-of-domain data keeps the training statistics
        d = next(d for d in homes if m.datasets is None or d.label in m.datasets)
        info = study.data_info[d.label]
        mean, std = _normalization(study, i, d, info.input_shape[0])
        arch_params = models.params_of(m.arch, m.params)
        try:
            net = models.build(
                m.arch,
                arch_params,
                input_shape=info.input_shape,
                num_classes=info.num_classes,
                mean=mean,
                std=std,
                allow_imports=study.file.allow_imports,
            )
        except TaskError as exc:
            raise ConfigError(study.path, [f"models[{i}].arch: {exc}"]) from exc
        try:
            state = checkpoint_io.read_state_dict(path)
        except CheckpointError as exc:
            raise ConfigError(study.path, [f"models[{i}].checkpoint: {exc}"]) from exc
        try:
            checkpoint_io.load_strict(
                net,
                state,
                arch=m.arch,
                path=path,
                input_shape=info.input_shape,
                num_classes=info.num_classes,
            )
        except LoadError as exc:
            raise ConfigError(
                study.path,
                [
                    f"models[{i}].checkpoint: {exc.file} does not load into {m.arch} for "
                    f"dataset {d.label!r}: {exc.detail}"
                ],
            ) from exc
        meta = {
            "kind": "checkpoint",
            "arch": m.arch,
            "params": models.dump_params(arch_params),
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            "mean": list(mean),
            "std": list(std),
            "model": m.name,
            "source_file_sha256": sha,
        }
        record = store.put(
            {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, meta
        )
        out[m.name] = record.digest
    return out


def _normalization(
    study: Study, i: int, d: Resolved, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std model ``i``'s checkpoint normalizes its inputs by on dataset ``d``."""
    norm = study.file.models[i].normalization
    if norm == "inside":
        return (0.0,) * channels, (1.0,) * channels
    if norm is None or norm == "dataset":
        return datasets.normalization_stats(d.name, datasets.params_of(d.name, d.params))
    if len(norm.mean) != channels or len(norm.std) != channels:
        raise ConfigError(
            study.path,
            [
                f"models[{i}].normalization: {len(norm.mean)} means and {len(norm.std)} stds "
                f"for dataset {d.label!r}, whose images have {channels} channel(s)"
            ],
        )
    return tuple(norm.mean), tuple(norm.std)
