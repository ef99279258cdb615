"""Reading published checkpoint files without running their code, with errors that say what
went wrong and what to do.

:func:`read_state_dict` reads a ``.safetensors`` file or a ``torch.save`` file through
PyTorch's weights-only unpickler, which refuses anything beyond tensors and plain
containers: a file whose unpickling would import a class or call a function is refused
before any of it runs. Failed downloads (an HTML page, a cut-off file) are recognised and
named. The state dict is taken out of the usual wrappers (``state_dict``,
``model_state_dict``, ``model``, ``last``) and the prefixes that ``DataParallel`` and
wrapper modules add (``module.``, ``model.``) are dropped.

:func:`load_strict` loads it into a network and, when it does not fit, lists the missing,
unexpected and mis-shaped keys and names the registered architecture the file matches best.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks import models
from tasks.errors import InputError

log = logging.getLogger(__name__)

WRAPPERS = ("state_dict", "model_state_dict", "model", "last")
PREFIXES = ("module.", "model.")
SHOWN = 10  # keys listed per kind of mismatch
REDOWNLOAD = "download it again"
TRUNCATED = r"EOF|truncated|central directory|Ran out of input|unpack requires a buffer"


class CheckpointError(InputError):
    """A checkpoint file that cannot be read as a state dict, or that does not fit a model."""


class LoadError(CheckpointError):
    """A state dict that does not load into the architecture named for it.

    Attributes:
        file: The checkpoint's file name.
        arch: The architecture it was loaded into.
        detail: What did not fit, and the closest registered architecture.
    """

    def __init__(self, file: str, arch: str, detail: str) -> None:
        super().__init__(f"{file} does not load into {arch}: {detail}")
        self.file, self.arch, self.detail = file, arch, detail


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a ``.safetensors`` file or a ``torch.save`` file.

    Raises:
        CheckpointError: the file is an HTML page, truncated or corrupt, a pickle that
            holds Python objects beyond tensors (refused unexecuted), or holds something
            other than a state dict. The message names the file.
    """
    path = Path(path)
    head = _head(path)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        raise CheckpointError(
            f"{path.name} is an HTML page, not a checkpoint: most likely a failed download "
            "(Google Drive answers a large file with a quota or virus-scan confirmation page); "
            f"{REDOWNLOAD}"
        )
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        state: Any = _read_safetensors(path)
    else:
        state = _read_torch(path, head)
    return _strip_prefixes(_state_dict_in(state, path.name))


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if not head:
        raise CheckpointError(f"{path.name} is empty (0 bytes); {REDOWNLOAD}")
    return head


def _looks_like_safetensors(head: bytes) -> bool:
    """A safetensors file under another name (``.bin``, ``.pt``): 8 bytes of header length,
    then the header's JSON."""
    return head[8:10] == b'{"' and 0 < int.from_bytes(head[:8], "little") < 1 << 40


def _truncated(path: Path, what: str) -> CheckpointError:
    size = path.stat().st_size
    return CheckpointError(
        f"{path.name} is truncated or corrupt ({what}; the file has {size:,} bytes): most "
        f"likely an interrupted download; {REDOWNLOAD}"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        length = int.from_bytes(raw, "little") if len(raw) == 8 else size
        if 8 + length > size:
            raise _truncated(path, f"its header says {length:,} bytes of header follow")
        try:
            header = json.loads(fh.read(length))
            end = max(
                (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
            )
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise CheckpointError(
                f"{path.name} is not a valid safetensors file (unreadable header: {exc})"
            ) from exc
    if 8 + length + end > size:
        raise _truncated(path, f"its tensors end at byte {8 + length + end:,}")
    try:
        return load_file(path)
    except SafetensorError as exc:
        raise CheckpointError(f"{path.name} is not a valid safetensors file: {exc}") from exc


def _read_torch(path: Path, head: bytes) -> Any:
    """``torch.load(weights_only=True)``, its failures told apart."""
    if head.startswith(b"PK\x03\x04"):  # the zip archive torch.save writes since PyTorch 1.6
        _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError...
        message = str(exc)
        needs = re.search(r"GLOBAL ([\w.]+)", message)
        if needs:
            raise CheckpointError(
                f"{path.name} holds Python objects beyond tensors (it needs {needs.group(1)!r}), "
                "and unpickling it would run code, so it was refused: nothing in it was "
                "executed. To use it, load it yourself in an environment you trust and save "
                "the weights alone: safetensors.torch.save_file(model.state_dict(), "
                "'model.safetensors')"
            ) from exc
        if isinstance(exc, EOFError) or re.search(TRUNCATED, message):
            raise _truncated(path, _gist(message) or "it ends early") from exc
        raise CheckpointError(
            f"{path.name} cannot be read as a torch.save file ({type(exc).__name__}: "
            f"{_gist(message) or 'no detail'})"
        ) from exc


def _gist(message: str) -> str:
    """The line of a ``torch.load`` error that says what was wrong (not its advice)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    found = next((line for line in lines if re.search(TRUNCATED, line)), None)
    if found is None and "WeightsUnpickler error:" in message:
        rest = message.split("WeightsUnpickler error:", 1)[1].strip()
        found = rest.splitlines()[0] if rest else None
    return found or (lines[0] if lines else "")


def _check_zip(path: Path) -> None:
    """A torch zip archive that is whole: its directory is there and every CRC matches
    (``torch.load`` would read flipped bytes as weights without a word)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _truncated(path, f"not a whole zip archive: {exc}") from exc
    if bad is not None:
        raise _truncated(path, f"the CRC of {bad} does not match")


def _state_dict_in(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The state dict ``obj`` is or wraps."""
    while isinstance(obj, Mapping) and not _all_tensors(obj):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{name} holds a {type(obj).__name__}, not a state dict (parameter name -> tensor)"
        )
    if not obj:
        raise CheckpointError(f"{name} holds an empty dict, not a state dict")
    if not _all_tensors(obj):
        other = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise CheckpointError(
            f"{name} holds no state dict (parameter name -> tensor): found a dict with keys "
            f"{_listing([str(k) for k in obj])}, of which {_listing(other)} are not tensors; "
            f"a state dict may be wrapped under one of {', '.join(WRAPPERS)}"
        )
    return {str(k): v for k, v in obj.items()}


def _all_tensors(obj: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``module.`` and ``model.`` while every key has one (``module.model.`` too)."""
    while state:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _listing(keys: Sequence[str], shown: int = SHOWN) -> str:
    """``'a', 'b' … and 3 more``."""
    out = ", ".join(repr(k) for k in keys[:shown])
    return out + (f" … and {len(keys) - shown} more" if len(keys) > shown else "")


def load_strict(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    arch: str,
    path: str | Path,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> None:
    """Load ``state`` into ``net`` with every key and shape matching.

    ``net`` may be advgrid's :class:`~tasks.models.Normalized` wrapper: a state dict of
    advgrid's own (``net.`` keys and the ``mean``/``std`` buffers) loads into all of it, a
    bare network's into ``net.net``. Batch-norm step counters (``num_batches_tracked``)
    may be missing, as in files older than PyTorch 0.4.1.

    Args:
        net: The freshly built model.
        state: What :func:`read_state_dict` returned.
        arch: The architecture ``net`` was built as (for the message).
        path: The checkpoint file (for the message).
        input_shape: The data's ``(channels, height, width)``, to build other architectures
            for comparison; by default read off ``net``'s first layer, 32×32.
        num_classes: Likewise; by default ``net``'s last linear layer's outputs.

    Raises:
        LoadError: missing or unexpected keys or mismatched shapes, with the registered
            architecture whose names and shapes match ``state`` best.
    """
    own = any(k.startswith("net.") for k in state)
    target = net.net if isinstance(net, models.Normalized) and not own else net
    name = Path(path).name
    problems = _mismatches(target, state)
    if problems:
        shape, classes = _io_of(target, input_shape, num_classes)
        problems.append(closest_architecture(_bare_keys(state), shape, classes))
        raise LoadError(name, arch, "; ".join(problems))
    try:
        target.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:  # dtype or other trouble the key check does not see
        raise LoadError(name, arch, str(exc)) from exc


def _mismatches(net: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``net``."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in expected if k not in state and not _optional(k)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (checkpoint {list(v.shape)}, model {list(expected[k])})"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    out = [f"{len(missing)} missing keys: {_listing(missing)}"] if missing else []
    if unexpected:
        out.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if shapes:
        more = f" … and {len(shapes) - SHOWN} more" if len(shapes) > SHOWN else ""
        out.append(f"{len(shapes)} shape mismatches: {', '.join(shapes[:SHOWN])}{more}")
    return out


def _optional(key: str) -> bool:
    """Keys a module fills in itself when a state dict lacks them."""
    return key.endswith("num_batches_tracked")


def _bare_keys(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the bare network's parameters (advgrid's wrapper taken off)."""
    own = any(k.startswith("net.") for k in state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if not own:
        return shapes
    return {k[4:]: s for k, s in shapes.items() if k.startswith("net.")}


def _io_of(
    net: nn.Module, input_shape: Sequence[int] | None, num_classes: int | None
) -> tuple[tuple[int, ...], int]:
    """The input shape and number of classes to build comparison architectures with."""
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if input_shape is None:
        first = layers[0] if layers else None
        channels = first.in_channels if isinstance(first, nn.Conv2d) else 3
        input_shape = (channels, 32, 32)
    if num_classes is None:
        last = [m for m in layers if isinstance(m, nn.Linear)]
        num_classes = last[-1].out_features if last else 10
    return tuple(int(n) for n in input_shape), int(num_classes)


def closest_architecture(
    keys: Mapping[str, tuple[int, ...]], input_shape: Sequence[int], num_classes: int
) -> str:
    """A sentence naming the registered architecture whose parameter names and shapes agree
    best with ``keys`` (name → shape), WideResNet's depth and width read off the keys.

    Each candidate is built on the meta device: names and shapes, no memory, no weights.
    Of the keys of both together, the share with the same name and the share with the same
    name and shape are added up; the highest sum wins.
    """
    best: tuple[tuple[float, float], str, dict[str, Any]] | None = None
    for arch, overrides in _candidates(keys):
        shapes = _shapes_of(arch, overrides, input_shape, num_classes)
        if shapes is None:
            continue
        score = _score(keys, shapes)
        if best is None or sum(score) > sum(best[0]):
            best = (score, arch, overrides)
    if best is None or best[0][0] == 0:
        return "no registered architecture has these parameter names"
    (names, both), arch, overrides = best
    return (
        f"these keys match {_label(arch, overrides)} best ({names:.0%} of names and {both:.0%} "
        "of shapes agree)"
    )


def _candidates(keys: Mapping[str, tuple[int, ...]]) -> list[tuple[str, dict[str, Any]]]:
    """Variants read off the keys first (they win ties), then every registered default."""
    out = []
    blocks = [m for k in keys if (m := re.match(r"block1\.layer\.(\d+)\.", k))]
    first = keys.get("block1.layer.0.conv1.weight")
    if blocks and first is not None and len(first) == 4:
        n = 1 + max(int(m.group(1)) for m in blocks)
        wrn: dict[str, Any] = {"depth": 6 * n + 4, "widen": max(1, first[0] // 16)}
        if any(k.startswith("sub_block1.") for k in keys):
            wrn["sub_block1"] = True
        out.append(("wide_resnet", wrn))
    if "bn.weight" in keys and "linear.weight" in keys:
        out.append(("preact_resnet18", {"bn_before_fc": True}))
    return out + [(name, {}) for name in models.MODELS.names()]


def _shapes_of(
    arch: str, overrides: dict[str, Any], input_shape: Sequence[int], num_classes: int
) -> dict[str, tuple[int, ...]] | None:
    try:
        params = models.params_of(arch, overrides)
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            net = models.MODELS.get(arch).obj(params, tuple(input_shape), num_classes)
    except Exception:  # a plugin's network may not build on the meta device or at this size
        log.debug("cannot build %s %s to compare a checkpoint with", arch, overrides, exc_info=True)
        return None
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _score(
    keys: Mapping[str, tuple[int, ...]], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[float, float]:
    """Shares of the union of both key sets: same name, and same name and shape."""
    ours = {k: s for k, s in keys.items() if not _optional(k)}
    theirs = {k: s for k, s in shapes.items() if not _optional(k)}
    union = max(1, len(ours.keys() | theirs.keys()))
    names = sum(1 for k in ours if k in theirs)
    both = sum(1 for k, s in ours.items() if theirs.get(k) == s)
    return names / union, both / union


def _label(arch: str, overrides: Mapping[str, Any]) -> str:
    """``wide_resnet (depth 34, widen 10)``."""
    if not overrides:
        return arch
    shown = (f"{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items())
    return f"{arch} ({', '.join(shown)})"
