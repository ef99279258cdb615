"""What every kind of cell shares on the worker: the per-process cache, the device, the
worker's name, loading datasets and models by name and digest, precision and layout, and
the defended model.

These helpers read the payload as the plain data it travels as (``payload["inputs"]``),
so a caller holding only part of one (a test that rebuilds a stored model) can use them.
What a kind module needs (:func:`load_dataset`, :func:`load_model`, :func:`behind_defense`,
:func:`device`) is public: a new kind's module uses the same helpers as the built-in ones.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections import OrderedDict
from typing import Any, TypeVar

import torch
from torch import nn

from storage import ArtifactStore, __version__
from tasks import datasets, defenses, models
from tasks.errors import WorkerDataError

CODE_VERSION = __version__

# Per-process caches keyed by content: Ray reuses worker processes between tasks, so a
# model or dataset is loaded once per worker, not once per cell.
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 32


def cached(key: tuple, load: Any) -> Any:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = load()
    _CACHE[key] = value
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def device() -> torch.device:
    """The GPU Ray assigned (or the first visible one), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def worker_name() -> str:
    """``host:pid``, or ``host:pid:node`` on a Ray worker (the first 8 characters of the Ray
    node id): several nodes can share a host, and the node is what a failure is traced to."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    node = _ray_node_id()
    return f"{name}:{node[:8]}" if node else name


def _ray_node_id() -> str | None:
    """The id of the Ray node this process belongs to, or None outside Ray."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing else needs to
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def load_dataset(spec: dict) -> tuple[datasets.Data, datasets.Split]:
    """The dataset a cell spec names, and its split; once per process. For a dataset read
    from files, the files found here must be the ones the study was planned with (the
    spec's ``digest``): a worker with another copy fails the cell, naming both digests."""
    name, values = spec["name"], spec["params"]
    params = datasets.params_of(name, values)
    expected = spec.get("digest")

    def load() -> tuple[datasets.Data, datasets.Split]:
        if expected is not None:
            found = datasets.describe(name, params).digest
            if found != expected:
                raise WorkerDataError(
                    f"dataset {spec.get('label', name)!r}: the files found on this worker "
                    f"(digest {str(found)[:12]}…) are not the ones the study was planned with "
                    f"({expected[:12]}…); give every machine the same copy (the same "
                    "`root:` or $ADVGRID_DATA)"
                )
        data = datasets.load(name, params)
        return data, datasets.split(len(data.y), params, data.n_train)

    return cached(("dataset", name, repr(sorted(values.items())), expected), load)


def allow_imports_of(payload: dict) -> bool:
    """Whether the payload says its study trusts model factories named by import path."""
    return payload.get("allow_imports") is True


def load_model(payload: dict, role: str, store: ArtifactStore, dev: torch.device) -> nn.Module:
    digest, allow = payload["inputs"][role], allow_imports_of(payload)

    def load() -> nn.Module:
        tensors, meta = store.get(digest)
        arch = meta["arch"]
        net = models.build(
            arch,
            models.params_of(arch, meta["params"]),
            input_shape=meta["input_shape"],
            num_classes=meta["num_classes"],
            mean=meta["mean"],
            std=meta["std"],
            allow_imports=allow,
        )
        net.load_state_dict(tensors)
        return memory_layout(net.to(dev), payload).eval()

    # the flag is part of the cache key: a payload without it never gets a model that one
    # with it built from an import path
    layout = bool(payload.get("channels_last"))
    return cached(("model", digest, str(dev), allow, layout), load)


def memory_layout(net: ModuleT, payload: dict) -> ModuleT:
    """``channels_last`` memory format when the study asks (faster convolutions on GPUs)."""
    if payload.get("channels_last"):
        return net.to(memory_format=torch.channels_last)
    return net


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bfloat16 when the cell's spec says ``precision: bf16``.

    Weights, inputs, gradients with respect to the inputs and the stored examples stay
    float32; matrix products and convolutions run in bfloat16. float16 is not offered: its
    training needs loss scaling and its input gradients underflow.
    """
    if precision == "bf16":
        # no weight-cast cache: it lives as long as the context, which here spans every
        # optimizer step of a training run, and would keep casting the initial weights
        return torch.autocast(device_type=device().type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def behind_defense(
    model: nn.Module, spec: dict, payload: dict, store: ArtifactStore, dev: torch.device
) -> nn.Module:
    """``model`` behind the defense component ``spec``; a defense whose class ``requires``
    trained artifacts (``autoencoder_purify``) gets each its params need from the cell's input
    of that role."""
    name = spec["name"]
    entry = defenses.DEFENSES.get(name)
    needs = getattr(entry.obj, "requires", {})
    given = {
        role: load_model(payload, role, store, dev)
        for role, requirement in needs.items()
        if requirement.needed(spec["params"])
    }
    return entry.obj(defenses.DEFENSES.params_of(name, spec["params"]), **given).wrap(model)
