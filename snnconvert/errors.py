"""Errors that name the problem and the fix."""
from __future__ import annotations


class SnnConvertError(Exception):
    """Base class of every error snnconvert raises on bad input."""


class UnsupportedLayersError(SnnConvertError):
    """The converter met ops it has no spiking form for; all of them are listed at once."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"  - {name or '<root>'} ({type_name}): {why}" for name, type_name, why in problems]
        super().__init__(
            f"{len(problems)} op(s) cannot be converted to spiking form:\n"
            + "\n".join(lines)
            + "\nFix: write them with ops that have a spiking form, or declare one: "
            "snnconvert.graph.ops.register_module_kind / register_function_kind (a module or function "
            "with a known role), snnconvert.graph.rules.register_module_rule (an exact, traceable rewrite)."
        )


class CheckpointError(SnnConvertError):
    """A checkpoint file is missing, corrupt or of the wrong kind."""


class DataError(SnnConvertError):
    """A dataset path or name could not be resolved."""
