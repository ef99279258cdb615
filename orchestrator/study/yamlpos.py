"""Line numbers for paths inside a YAML document, so errors can point into the file."""

from __future__ import annotations

from collections.abc import Sequence

import yaml


def format_path(loc: Sequence[object]) -> str:
    """``("attacks", 2, "eps", 0)`` → ``attacks[2].eps[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Positions:
    """Maps a path in the loaded data to the 1-based line it came from."""

    def __init__(self, text: str) -> None:
        try:
            self._root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self._root = None

    def line(self, loc: Sequence[object]) -> int | None:
        node, best = self._root, None
        for part in loc:
            if node is None:
                break
            best = node.start_mark.line + 1
            node = self._child(node, part)
        if node is not None:
            best = node.start_mark.line + 1
        return best

    @staticmethod
    def _child(node: yaml.Node, part: object) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    return value
        is_seq = isinstance(node, yaml.SequenceNode) and isinstance(part, int)
        if is_seq and 0 <= part < len(node.value):  # type: ignore[operator]
            return node.value[part]
        return None
