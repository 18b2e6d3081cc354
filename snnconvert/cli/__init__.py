"""The ``snnconvert`` command line: :mod:`options` (option groups and the specs they make) and
:mod:`commands` (one command per workflow stage)."""
from snnconvert.cli.commands import entry, main

__all__ = ["entry", "main"]
