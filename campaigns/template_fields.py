"""Which of a member's fields a campaign's templates can reach (pure: reads template sources only).

Delivery reads a member's names (encrypted at rest when ``LOYALTY_DATA_KEYS`` is set) only for
messages whose templates use them. A template *may* use a field when it names it
(``member.first_name``, ``member["first_name"]``) or when it uses ``member`` as a whole (passes it to
a filter or macro, loops over it, prints it): then every field is assumed used. Templates it
extends, includes or imports are followed; one chosen at render time (a name that is not a
constant) makes the answer "every field".
"""

from __future__ import annotations

from collections.abc import Iterable

from jinja2 import Environment, nodes

EVERY_FIELD = None  # the answer when a template may reach any field


def member_fields(env: Environment, template_names: Iterable[str], sources: Iterable[str] = ()) -> frozenset[str] | None:
    """The ``member`` fields the templates (by loader name) and inline sources (subjects) may read;
    None when they may read any (or a template cannot be parsed: rendering will say why)."""
    used: set[str] = set()
    seen: set[str] = set()
    pending = list(template_names)
    parsed = []
    try:
        for source in sources:
            parsed.append(env.parse(source))
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            if env.loader is None:  # no templates to follow: whatever they name may be read
                return EVERY_FIELD
            source, _, _ = env.loader.get_source(env, name)
            parsed.append(env.parse(source))
            for template in _referenced(parsed[-1]):
                if template is None:
                    return EVERY_FIELD
                pending.append(template)
    except Exception:  # noqa: BLE001 - a missing or broken template: rendering reports it, read everything
        return EVERY_FIELD
    for tree in parsed:
        fields = _member_fields_in(tree)
        if fields is EVERY_FIELD:
            return EVERY_FIELD
        used |= fields
    return frozenset(used)


def _referenced(tree: nodes.Template) -> Iterable[str | None]:
    """The templates ``tree`` extends, includes or imports (None for one named at render time)."""
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        assert isinstance(node, (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))  # find_all's typing
        target = node.template
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            yield target.value
        elif isinstance(target, (nodes.List, nodes.Tuple)) and all(isinstance(i, nodes.Const) for i in target.items):
            yield from (i.value for i in target.items if isinstance(i, nodes.Const))  # all are
        else:
            yield None


def _member_fields_in(tree: nodes.Node) -> set[str] | None:
    fields: set[str] = set()
    whole = False

    def visit(node: nodes.Node, parent: nodes.Node | None) -> None:
        nonlocal whole
        if isinstance(node, nodes.Name) and node.name == "member":
            if isinstance(parent, nodes.Getattr) and parent.node is node:
                fields.add(parent.attr)
            elif (isinstance(parent, nodes.Getitem) and parent.node is node and isinstance(parent.arg, nodes.Const)
                  and isinstance(parent.arg.value, str)):
                fields.add(parent.arg.value)
            elif node.ctx == "load":
                whole = True
        for child in node.iter_child_nodes():
            visit(child, node)

    visit(tree, None)
    return EVERY_FIELD if whole else fields
