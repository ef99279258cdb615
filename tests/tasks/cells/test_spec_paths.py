"""Every JSON path the index's queries read resolves to a field of the spec models of the
kinds it is read on."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from storage import spec_paths
from tasks.cells import CELL_KINDS

ROOT = Path(__file__).resolve().parents[3]
QUERIES = [ROOT / "storage" / f for f in ("table_queries.py", "defense_queries.py", "spec_json.py")]


def _resolves(model: type[BaseModel], path: tuple[str, ...]) -> bool:
    """Whether ``path`` names a field of ``model``; past a plain dict (component params)
    any key may follow."""
    head, rest = path[0], path[1:]
    if head not in model.model_fields:
        return False
    annotation = model.model_fields[head].annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
    if not rest:
        return True
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return _resolves(option, rest)
    return typing.get_origin(annotation) is dict


@pytest.mark.parametrize("path", list(spec_paths.USED_ON), ids=".".join)
def test_each_path_is_a_field_of_the_kinds_it_is_read_on(path: tuple[str, ...]) -> None:
    for kind in spec_paths.USED_ON[path]:
        for model in CELL_KINDS[kind].specs:
            assert _resolves(model, path), f"{'.'.join(path)} is no field of {model.__name__}"


def test_the_check_sees_a_wrong_path() -> None:
    (attack,) = CELL_KINDS["attack"].specs
    assert not _resolves(attack, ("target",))
    assert not _resolves(attack, ("attack", "label"))
    assert not _resolves(attack, ("source", "name"))
    assert _resolves(attack, ("attack", "params", "anything"))


def test_every_exported_path_is_listed() -> None:
    public = {k: v for k, v in vars(spec_paths).items() if k.isupper() and k[0] != "_"}
    paths = [v for v in public.values() if isinstance(v, tuple)]
    flat = {p for v in paths for p in (v if isinstance(v, spec_paths.ModelSide) else [v])}
    assert flat == set(spec_paths.USED_ON)


@pytest.mark.parametrize("module", QUERIES, ids=lambda p: p.name)
def test_queries_spell_no_path_of_their_own(module: Path) -> None:
    """The queries read specs only through :mod:`storage.spec_paths`."""
    spelled = [
        ast.unparse(node)
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("text", "number", "kind", "boolean_text")
        and any(isinstance(a, ast.Constant) for a in node.args)
    ]
    assert spelled == []
