"""Argument checks of the public API, run before any work starts: a wrong type, swapped arguments,
an empty batch or a shape the model does not take is refused with what was expected and what came.

:func:`check_fields` checks a config dataclass's fields against their annotations (``int``,
``float``, ``str``, ``bool``, ``X | None``, ``tuple[X, ...]``, ``dict[K, V]``, other classes), so
every config is checked by one piece of code.
"""
from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from snnconvert.errors import ArgumentError


def describe(value: Any) -> str:
    """What a value is, for an error: ``a tensor of shape (2, 1, 28, 28)``, ``a PrepareConfig``."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (str, bool, numbers.Number)):
        return f"{type(value).__name__} {value!r}"
    return f"a {type(value).__name__}"


def expect(ok: bool, function: str, name: str, expected: str, value: Any, fix: str = "") -> None:
    """Raise an :class:`ArgumentError` unless ``ok``: ``function``'s argument ``name`` should be
    ``expected``, and what came was ``value``."""
    if not ok:
        raise ArgumentError(f"{function}: {name} must be {expected}, got {describe(value)}" + (f"; {fix}" if fix else ""))


def module(value: Any, function: str, name: str = "model", call: str = "") -> None:
    """``value`` is an ``nn.Module`` (``call`` shows the right order of the arguments)."""
    swapped = isinstance(value, torch.Tensor) or dataclasses.is_dataclass(value)
    expect(isinstance(value, nn.Module), function, name, "an nn.Module", value,
           f"the arguments may be swapped: call {call}" if swapped and call else "")


def batch(value: Any, function: str, name: str = "example", input_shape: tuple[int, ...] | None = None,
          call: str = "") -> None:
    """``value`` is a non-empty floating-point batch ``[N, …]`` (``[N, *input_shape]`` if given)."""
    fix = f"call {call}" if call and (isinstance(value, nn.Module) or dataclasses.is_dataclass(value)) else ""
    shape = f"[N, {', '.join(map(str, input_shape))}]" if input_shape else "[N, C, H, W]"
    expect(isinstance(value, torch.Tensor), function, name, f"an input batch tensor {shape}", value, fix)
    expect(value.is_floating_point(), function, name, f"a floating-point batch {shape} (images as floats)", value)
    expect(value.dim() >= 2, function, name, f"a batch {shape} with the samples along dimension 0", value,
           "add a batch dimension (x.unsqueeze(0))")
    expect(len(value) > 0, function, name, f"a batch {shape} of at least one sample", value)
    if input_shape is not None and tuple(value.shape[1:]) != tuple(input_shape):
        raise ArgumentError(f"{function}: {name} has shape {tuple(value.shape)}, the model expects {shape}: resize "
                            "the data or pick the matching model")


def instance(value: Any, cls: type | tuple[type, ...], function: str, name: str, optional: bool = True) -> None:
    """``value`` is a ``cls`` (or None where ``optional``)."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    names = " or ".join(c.__name__ for c in classes) + (" or None" if optional else "")
    expect(isinstance(value, classes) or (optional and value is None), function, name, f"a {names}", value)


def count(value: Any, function: str, name: str, least: int = 1) -> None:
    """``value`` is an int ≥ ``least``."""
    expect(isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least, function, name,
           f"an int >= {least}", value)


def loader(value: Any, function: str, name: str = "loader") -> None:
    """``value`` yields batches: an iterable that is neither a tensor nor a string."""
    expect(isinstance(value, Iterable) and not isinstance(value, (torch.Tensor, str, nn.Module)), function, name,
           "an iterable of (images, labels) batches (a DataLoader or a list)", value,
           "wrap a tensor batch x as [(x, None)]" if isinstance(value, torch.Tensor) else "")


def nonempty(seen: int, function: str, what: str) -> None:
    """Refuse a loader that yielded nothing (after the pass that read it)."""
    if seen == 0:
        raise ArgumentError(f"{function}: the {what} yielded no samples; pass a loader of at least one batch")


def check_fields(config: Any) -> None:
    """Check every field of the dataclass ``config`` against its annotation."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        hint = hints.get(f.name, Any)
        if not _matches(value, hint):
            raise ArgumentError(f"{type(config).__name__}: {f.name} must be {_name(hint)}, got {describe(value)}")


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_matches(k, args[0]) and _matches(v, args[1])
                                                            for k, v in value.items()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a form this checker does not read


def _name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in args)
    if origin is tuple:
        return f"a tuple of {_name(args[0])}" if len(args) == 2 and args[1] is Ellipsis else "a tuple"
    if origin is dict:
        return f"a dict of {_name(args[0])} → {_name(args[1])}" if args else "a dict"
    if origin is list:
        return f"a list of {_name(args[0])}" if args else "a list"
    name = getattr(hint, "__name__", str(hint))
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"
