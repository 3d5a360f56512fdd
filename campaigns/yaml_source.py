"""Read YAML while remembering where each value came from, so errors can name the line.

Stricter than plain YAML where plain YAML would silently do something else: a key given twice in
one mapping is refused (YAML keeps the last one), and so is a document nested deeper than
:data:`MAX_DEPTH` (a definition needs a handful of levels; hundreds would exhaust the parser's
recursion and take down everything reading the definitions).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import yaml
from yaml.events import CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, SequenceNode

#: How deeply mappings and lists may nest in one document.
MAX_DEPTH = 50


class YamlSyntaxError(Exception):
    def __init__(self, line: int | None, problem: str, advice: str = "check the indentation and quoting there"):
        self.line = line
        self.problem = problem
        self.advice = advice
        super().__init__(problem)

    @property
    def sentence(self) -> str:
        """The problem and what to do about it, without the file (the caller names it)."""
        return f"{self.problem}; {self.advice}."


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (at the second one's line)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            first_seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first_seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base constructor says so
                    continue
                if earlier is not key_node:
                    raise _DuplicateKey(
                        "while constructing a mapping", node.start_mark,
                        f"the key {key!r} is given twice (first on line {earlier.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse(text: str) -> tuple[Any, Node | None]:
    """Return the document's data and its node tree (for line look-ups)."""
    try:
        _check_depth(text)
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _DuplicateKey as exc:  # raised above with both a mark and a problem
        duplicate = exc.problem_mark
        raise YamlSyntaxError(duplicate.line + 1 if duplicate else None, exc.problem or "a key is given twice",
                              "keep one of them (YAML would silently use the last)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = (exc.problem or exc.context or "not valid YAML").strip()
        raise YamlSyntaxError(line, f"the YAML is malformed ({problem})") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"the YAML is malformed ({exc})") from None
    return data, node


def _check_depth(text: str) -> None:
    """Refuse a document nested deeper than :data:`MAX_DEPTH`, from the parser's event stream
    (which does not recurse), before anything builds it recursively."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlSyntaxError(event.start_mark.line + 1 if event.start_mark else None,
                                      f"the YAML is nested more than {MAX_DEPTH} levels deep, where a definition "
                                      "needs a few", "remove the extra nesting")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


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
