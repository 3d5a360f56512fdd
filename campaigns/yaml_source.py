"""Read YAML while remembering where each value came from, so errors can name the line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode


class YamlSyntaxError(Exception):
    def __init__(self, line: int | None, problem: str):
        self.line = line
        self.problem = problem
        super().__init__(problem)


def parse(text: str) -> tuple[Any, Node | None]:
    """Return the document's data and its node tree (for line look-ups)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = (exc.problem or exc.context or "not valid YAML").strip()
        raise YamlSyntaxError(line, f"the YAML is malformed ({problem})") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"the YAML is malformed ({exc})") from None
    return data, node


def line_of(node: Node | None, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the value at ``path``, or of the deepest part of it that exists.

    Path parts that match nothing (pydantic adds the tag of a tagged union, for instance) are
    skipped rather than ending the walk.
    """
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child = _child(node, part)
        if child is None:
            continue
        key_node, node = child
        line = (key_node or node).start_mark.line + 1
        if key_node is not None and not isinstance(node, (MappingNode, SequenceNode)):
            line = node.start_mark.line + 1
    return line


def _child(node: Node, part: str | int) -> tuple[Node | None, Node] | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == str(part):
                return key_node, value_node
    elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None
