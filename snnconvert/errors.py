"""Errors that name the problem and the fix."""
from __future__ import annotations


class SnnConvertError(Exception):
    """Base class of every error snnconvert raises on bad input."""


class UnsupportedLayersError(SnnConvertError):
    """The converter met modules it cannot rewrite; all of them are listed at once."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"  - {name or '<root>'} ({type_name}): {why}" for name, type_name, why in problems]
        super().__init__(
            f"{len(problems)} module(s) cannot be converted to spiking form:\n"
            + "\n".join(lines)
            + "\nFix: replace them with supported layers (Linear, Conv2d, BatchNorm, LayerNorm, "
            "ReLU/ReLU6/GELU, pooling, dropout) or register an architecture rule with "
            "snnconvert.convert.register_rule()."
        )


class CheckpointError(SnnConvertError):
    """A checkpoint file is missing, corrupt or of the wrong kind."""


class DataError(SnnConvertError):
    """A dataset path or name could not be resolved."""
