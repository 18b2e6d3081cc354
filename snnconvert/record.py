"""Typed records: frozen dataclasses that write themselves as the JSON-able data of reports and
specs (:class:`~snnconvert.spec.Spec` and the workflow's records in
:mod:`snnconvert.report.records` build on it)."""
from __future__ import annotations

import json
from dataclasses import field, fields, is_dataclass
from typing import Any


def optional(default: Any = None, kw_only: bool = False) -> Any:
    """A field left out of :meth:`Record.to_dict` while it is None (a key some records have);
    ``kw_only``: given by keyword only (so that a subclass may add fields without defaults)."""
    return field(default=default, kw_only=kw_only, metadata={"omit_none": True})


class Record:
    """A frozen dataclass written as JSON-able data: its fields in declaration order, nested
    dataclasses as mappings, tuples as lists; fields declared :func:`optional` are left out
    while None."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able data (what a report stores)."""
        return json.loads(json.dumps(_plain(self)))


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)
                if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
