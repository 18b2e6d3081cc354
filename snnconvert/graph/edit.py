"""Small graph edits shared by the passes: naming new modules, inserting, replacing, cleaning up.

A module a pass adds lives under the module that owns the op it is for (``blocks.0.attn.q_act``
for attention's Q), so names read like the model and stay the same every time the same
architecture is prepared: checkpoints store state by these names.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import fx, nn


def owner(node: fx.Node) -> str:
    """Qualified name of the module whose forward created ``node`` ('' for the root); for a
    ``call_module`` node, the module that called it."""
    if node.op == "call_module":
        return node.target.rpartition(".")[0]
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _taken(gm: fx.GraphModule, path: str) -> bool:
    parent, _, attr = path.rpartition(".")
    try:
        holder = gm.get_submodule(parent) if parent else gm
    except AttributeError:
        return False
    return hasattr(holder, attr)


def add_module(gm: fx.GraphModule, path: str, module: nn.Module) -> str:
    """Register ``module`` at ``path`` (or ``path_1``, ``path_2`` … if taken); returns the path used."""
    candidate, i = path, 0
    while _taken(gm, candidate):
        i += 1
        candidate = f"{path}_{i}"
    gm.add_submodule(candidate, module)
    return candidate


def new_node(gm: fx.GraphModule, anchor: fx.Node, op: str, target, args: tuple, kwargs: dict | None = None) -> fx.Node:
    """A node at the graph's insertion point, owned by the module that owns ``anchor``."""
    node = gm.graph.create_node(op, target, args, kwargs or {})
    node.meta["nn_module_stack"] = dict(anchor.meta.get("nn_module_stack") or {})
    return node


def _new_node(gm: fx.GraphModule, anchor: fx.Node, path: str, args: tuple, kwargs: dict | None = None) -> fx.Node:
    return new_node(gm, anchor, "call_module", path, args, kwargs)


def insert_after(gm: fx.GraphModule, node: fx.Node, path: str, module: nn.Module,
                 users: Iterable[fx.Node] | None = None) -> fx.Node:
    """Put ``module`` after ``node``: its output replaces ``node`` for ``users`` (default: all)."""
    path = add_module(gm, path, module)
    targets = list(node.users) if users is None else list(users)
    with gm.graph.inserting_after(node):
        new = _new_node(gm, node, path, (node,))
    for user in targets:
        user.replace_input_with(node, new)
    return new


def insert_before(gm: fx.GraphModule, user: fx.Node, value: fx.Node, path: str, module: nn.Module) -> fx.Node:
    """Put ``module`` on the edge from ``value`` into ``user`` only."""
    path = add_module(gm, path, module)
    with gm.graph.inserting_before(user):
        new = _new_node(gm, user, path, (value,))
    user.replace_input_with(value, new)
    return new


def replace_with_module(gm: fx.GraphModule, node: fx.Node, path: str, module: nn.Module,
                        args: tuple | None = None, kwargs: dict | None = None) -> fx.Node:
    """Replace ``node`` by a call of ``module`` (on ``args``/``kwargs``; default: its first input).
    A ``call_module`` node's module is replaced at its own path when ``path`` is that path."""
    if node.op == "call_module" and path == node.target:
        gm.delete_submodule(path)
    path = add_module(gm, path, module)
    with gm.graph.inserting_before(node):
        new = _new_node(gm, node, path, args if args is not None else (node.args[0],), kwargs)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def unshare_stateless(gm: fx.GraphModule) -> None:
    """Give every call of a module without parameters or buffers that is called more than once
    (torchvision's ResNet blocks reuse one ReLU) its own copy, ``path_1``, ``path_2`` …, so that
    each call can be rewritten alone. Modules with weights stay shared (tied weights)."""
    seen: dict[str, int] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        count = seen.get(node.target, 0)
        seen[node.target] = count + 1
        module = gm.get_submodule(node.target)
        if count and next(iter(module.parameters()), None) is None and next(iter(module.buffers()), None) is None:
            node.target = add_module(gm, node.target, copy.deepcopy(module))


def move(gm: fx.GraphModule, node: fx.Node, path: str) -> None:
    """Move the module a ``call_module`` node calls to ``path`` (a path no other node uses)."""
    module = gm.get_submodule(node.target)
    gm.delete_submodule(node.target)
    gm.add_submodule(path, module)
    node.target = path


def drop_if_unused(gm: fx.GraphModule, nodes: Iterable[fx.Node]) -> None:
    """Erase ``nodes`` that no longer have users (e.g. the parameters of an op just replaced)."""
    for node in nodes:
        if isinstance(node, fx.Node) and not node.users:
            gm.graph.erase_node(node)


def bypass(gm: fx.GraphModule, node: fx.Node) -> None:
    """Remove a one-input op that returns its input (an identity, dropout in evaluation)."""
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def finish(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop dead nodes, unused modules and unused parameters or buffers, check the graph and
    regenerate its code."""
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    _drop_unused_tensors(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _drop_unused_tensors(gm: fx.GraphModule) -> None:
    """Remove parameters and buffers that no node reads and no called module holds (e.g. a
    relative-position table once its bias is computed at conversion)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    names = [n for n, _ in gm.named_parameters(remove_duplicate=False)] + \
        [n for n, _ in gm.named_buffers(remove_duplicate=False)]
    for name in names:
        parts = name.split(".")
        if name in used or any(".".join(parts[:i]) in called for i in range(1, len(parts))):
            continue
        holder = gm.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else gm
        delattr(holder, parts[-1])


def in_run_order(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.named_modules()``, those a graph calls first and in the order it calls them."""
    modules = dict(model.named_modules())
    called = [n.target for n in model.graph.nodes if n.op == "call_module"] if isinstance(model, fx.GraphModule) else []
    return [(name, modules[name]) for name in dict.fromkeys(called + list(modules))]
