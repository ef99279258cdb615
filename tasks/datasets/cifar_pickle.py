"""The python version of CIFAR-10/100 (``cifar-10-batches-py``, ``cifar-100-python``), read
without unpickling.

Each batch file is a pickle (written by Python 2's cPickle, protocol 2) of a dict whose
``data`` is a numpy uint8 array ``(N, 3072)`` and whose ``labels`` (CIFAR-10) or
``fine_labels`` and ``coarse_labels`` (CIFAR-100) are lists of ints. Unpickling a file runs
whatever callables it names, so this module never does: it walks the opcodes with
:func:`pickletools.genops` and evaluates a small inert subset of them (containers, numbers,
strings, the memo), recording each ``REDUCE`` and ``BUILD`` as plain data instead of calling
anything. A global other than the four a numpy array's pickle names is refused as soon as it
is read, so no structure outside the published layout gets past the walk.

The numpy array arrives as numpy's ``ndarray.__reduce__`` writes it: ``_reconstruct(ndarray,
(0,), b"b")`` then ``BUILD`` with the state ``(1, shape, dtype("u1", 0, 1), fortran, raw)``,
the raw bytes in a ``BINSTRING`` (Python 2), ``BINBYTES`` (protocol 3 and later) or a
``_codecs.encode(text, "latin1")`` call (Python 3 writing protocol 2).
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from tasks.errors import InputError

# the callables a numpy uint8 array's protocol-2 pickle names (numpy 2 moved the module)
RECONSTRUCT = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
NDARRAY, DTYPE, ENCODE = ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")
ALLOWED = RECONSTRUCT | {NDARRAY, DTYPE, ENCODE}

_MARK = object()
_STRINGS = {"SHORT_BINSTRING", "BINSTRING", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_BYTES = {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_INTS = {"BININT", "BININT1", "BININT2", "LONG1", "LONG4"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_DICT": dict, "EMPTY_LIST": list, "EMPTY_TUPLE": tuple}
_PUT = {"BINPUT", "LONG_BINPUT", "MEMOIZE"}
_GET = {"BINGET", "LONG_BINGET"}
_SKIP = {"PROTO", "FRAME"}


class PickleLayoutError(InputError):
    """A python-version CIFAR file whose pickle is not the published layout."""


@dataclass(frozen=True)
class Global:
    """A callable a pickle names, by name only (never imported)."""

    module: str
    name: str


@dataclass(eq=False)
class Call:
    """A ``REDUCE`` recorded, not performed: ``func(*args)``, then ``BUILD`` with ``state``."""

    func: Global
    args: tuple
    state: Any = field(default=None)


@dataclass(frozen=True)
class Batch:
    """What one batch file holds: images ``(N, 3072)`` uint8 (1024 R, 1024 G, 1024 B) and
    the label lists by key (``labels``, or ``fine_labels`` and ``coarse_labels``)."""

    data: np.ndarray
    labels: dict[str, list[int]]


def read_batch(path: Path, label_keys: tuple[str, ...]) -> Batch:
    """The images and label lists of one python-version batch file, read by its opcodes.

    Raises:
        PickleLayoutError: when the file is not a pickle of the published layout (naming why).
    """
    try:
        with path.open("rb") as fh:
            top = _walk(fh)
    except PickleLayoutError as exc:
        raise PickleLayoutError(f"{path}: {exc}") from None
    except (ValueError, EOFError) as exc:  # genops on bytes that are not a pickle
        raise PickleLayoutError(f"{path}: not a readable pickle ({exc})") from exc
    if not isinstance(top, dict):
        raise PickleLayoutError(f"{path}: the pickle holds {_kind(top)}, not a dict of arrays")
    keys = {_text(k): v for k, v in top.items()}
    missing = [k for k in ("data", *label_keys) if k not in keys]
    if missing:
        raise PickleLayoutError(f"{path}: no {', '.join(missing)} in the pickled dict")
    try:
        data = _array(keys["data"])
        labels = {k: _int_list(keys[k], k) for k in label_keys}
    except PickleLayoutError as exc:
        raise PickleLayoutError(f"{path}: {exc}") from None
    for k, v in labels.items():
        if len(v) != len(data):
            raise PickleLayoutError(f"{path}: {len(data)} images but {len(v)} {k}")
    return Batch(data=data, labels=labels)


def _walk(fh: Any) -> Any:
    """The value the pickle in ``fh`` would build, with calls recorded as :class:`Call`."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, value, at in pickletools.genops(fh):
        name, arg, pos = op.name, cast(Any, value), -1 if at is None else at
        if name == "STOP":
            if len(stack) != 1:
                raise PickleLayoutError(f"the pickle ends with {len(stack)} values on its stack")
            return stack[0]
        if name in _SKIP:
            continue
        if name in _STRINGS:
            stack.append(arg)
        elif name in _BYTES:
            stack.append(bytes(arg))
        elif name in _INTS:
            stack.append(int(arg))
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name in _EMPTY:
            stack.append(_EMPTY[name]())
        elif name == "MARK":
            stack.append(_MARK)
        elif name in _PUT:
            memo[len(memo) if name == "MEMOIZE" else arg] = _top(stack, pos)
        elif name in _GET:
            if arg not in memo:
                raise PickleLayoutError(f"memo entry {arg} read before it is written (byte {pos})")
            stack.append(memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            stack.append(_global(stack, arg, pos))
        else:
            _structure(name, stack, pos)
    raise PickleLayoutError("the pickle has no STOP opcode (truncated?)")


def _global(stack: list[Any], arg: str | None, pos: int) -> Global:
    if arg is None:  # STACK_GLOBAL: module and name are the two strings on the stack
        name, module = _pop(stack, pos), _pop(stack, pos)
    else:
        module, _, name = arg.partition(" ")
    g = Global(str(module), str(name))
    if (g.module, g.name) not in ALLOWED:
        raise PickleLayoutError(
            f"the pickle names {g.module}.{g.name} (byte {pos}), which a CIFAR batch never "
            "does; refused without running it"
        )
    return g


def _structure(name: str, stack: list[Any], pos: int) -> None:
    """The opcodes that build containers and record calls."""
    if name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = [_pop(stack, pos) for _ in range(n)][::-1]
        stack.append(tuple(items))
    elif name in ("TUPLE", "LIST", "DICT"):
        items = _pop_mark(stack, pos)
        if name == "DICT":
            stack.append(_pairs({}, items, pos))
        else:
            stack.append(tuple(items) if name == "TUPLE" else list(items))
    elif name in ("APPEND", "APPENDS"):
        items = [_pop(stack, pos)] if name == "APPEND" else _pop_mark(stack, pos)
        target = _top(stack, pos)
        if not isinstance(target, list):
            raise PickleLayoutError(f"{name} onto {_kind(target)} (byte {pos})")
        target.extend(items)
    elif name in ("SETITEM", "SETITEMS"):
        if name == "SETITEM":
            items = [_pop(stack, pos) for _ in range(2)][::-1]
        else:
            items = _pop_mark(stack, pos)
        target = _top(stack, pos)
        if not isinstance(target, dict):
            raise PickleLayoutError(f"{name} onto {_kind(target)} (byte {pos})")
        _pairs(target, items, pos)
    elif name == "REDUCE":
        args, func = _pop(stack, pos), _pop(stack, pos)
        if not isinstance(func, Global) or not isinstance(args, tuple):
            raise PickleLayoutError(f"REDUCE of {_kind(func)} (byte {pos})")
        stack.append(_reduce(func, args, pos))
    elif name == "BUILD":
        state = _pop(stack, pos)
        target = _top(stack, pos)
        if not isinstance(target, Call) or target.state is not None:
            raise PickleLayoutError(f"BUILD onto {_kind(target)} (byte {pos})")
        target.state = state
    else:
        raise PickleLayoutError(
            f"opcode {name} at byte {pos} is not in a CIFAR batch's layout; refused"
        )


def _reduce(func: Global, args: tuple, pos: int) -> Any:
    """A recorded call; ``_codecs.encode(text, "latin1")`` (how Python 3 writes bytes at
    protocol 2) is folded to its bytes, the one call whose result is plain data."""
    if (func.module, func.name) == ENCODE:
        if len(args) != 2 or not isinstance(args[0], str) or args[1] != "latin1":
            raise PickleLayoutError(f"_codecs.encode with unexpected arguments (byte {pos})")
        return args[0].encode("latin1")
    return Call(func, args)


def _array(value: Any) -> np.ndarray:
    """The uint8 ``(N, 3072)`` array of a recorded ``ndarray`` reconstruction."""
    ok = (
        isinstance(value, Call)
        and (value.func.module, value.func.name) in RECONSTRUCT
        and len(value.args) == 3
        and value.args[0] == Global(*NDARRAY)
        and isinstance(value.state, tuple)
        and len(value.state) == 5
    )
    if not ok:
        raise PickleLayoutError(f"'data' is {_kind(value)}, not a pickled numpy array")
    _, shape, dtype, fortran, raw = value.state
    if not (isinstance(dtype, Call) and dtype.func == Global(*DTYPE) and dtype.args[:1] == ("u1",)):
        raise PickleLayoutError(f"'data' has dtype {_dtype_name(dtype)}, expected uint8 ('u1')")
    if not (isinstance(shape, tuple) and len(shape) == 2 and shape[1] == 3072):
        raise PickleLayoutError(f"'data' has shape {shape}, expected (N, 3072)")
    if fortran:
        raise PickleLayoutError("'data' is in Fortran order, expected C order")
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, bytes) or len(raw) != shape[0] * 3072:
        size = len(raw) if isinstance(raw, bytes) else _kind(raw)
        raise PickleLayoutError(f"'data' holds {size} bytes, its shape {shape} needs more")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _int_list(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in value
    ):
        raise PickleLayoutError(f"{key!r} is {_kind(value)}, not a list of class indices")
    return value


def _pairs(target: dict, items: list[Any], pos: int) -> dict:
    if len(items) % 2:
        raise PickleLayoutError(f"odd number of dict items (byte {pos})")
    for k, v in zip(items[::2], items[1::2], strict=True):
        if not isinstance(k, str | bytes | int):
            raise PickleLayoutError(f"a dict key that is {_kind(k)} (byte {pos})")
        target[k] = v
    return target


def _pop(stack: list[Any], pos: int) -> Any:
    if not stack or stack[-1] is _MARK:
        raise PickleLayoutError(f"stack underflow at byte {pos}")
    return stack.pop()


def _top(stack: list[Any], pos: int) -> Any:
    if not stack or stack[-1] is _MARK:
        raise PickleLayoutError(f"stack underflow at byte {pos}")
    return stack[-1]


def _pop_mark(stack: list[Any], pos: int) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise PickleLayoutError(f"no MARK before byte {pos}")


def _text(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def _dtype_name(dtype: Any) -> str:
    return repr(dtype.args[0]) if isinstance(dtype, Call) and dtype.args else _kind(dtype)


def _kind(value: Any) -> str:
    if isinstance(value, Call):
        return f"a call to {value.func.module}.{value.func.name}"
    if isinstance(value, Global):
        return f"the callable {value.module}.{value.name}"
    return f"a {type(value).__name__}"
