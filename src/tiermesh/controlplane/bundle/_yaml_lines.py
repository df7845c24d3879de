"""Line numbers of field paths (``tenants[1].residency[0]``) in a YAML or JSON text."""

from __future__ import annotations

import re

import yaml

__all__ = ["field_line"]

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _segments(field_path: str) -> list[str | int]:
    return [
        int(index) if index else name
        for name, index in _SEGMENT.findall(field_path)
        if name or index
    ]


def field_line(text: str, field_path: str) -> int | None:
    """1-based line of the deepest node of ``field_path`` that exists in ``text``.

    ``""`` gives None. Never raises: unparsable text gives None. A missing field points at
    its closest existing parent (where it should be added).
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None or not field_path:
        return None
    line: int | None = None
    for segment in _segments(field_path):
        if isinstance(segment, int) and isinstance(node, yaml.SequenceNode):
            if segment >= len(node.value):
                break
            node = node.value[segment]
        elif isinstance(segment, str) and isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == segment), None)
            if match is None:
                break
            line = next(k for k, v in node.value if v is match).start_mark.line + 1
            node = match
            continue
        else:
            break
        line = node.start_mark.line + 1
    return line
