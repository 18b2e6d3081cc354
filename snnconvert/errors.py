"""Errors that name the problem and the fix."""
from __future__ import annotations

from collections.abc import Sequence


def shorten(items: Sequence[str], limit: int = 5) -> str:
    """``a, b, c, d, e … and 95 more``: a list an error can name without running on for pages."""
    return ", ".join(items[:limit]) + (f" … and {len(items) - limit} more" if len(items) > limit else "")


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, at most ``limit`` characters (library errors can run
    on for lines, with advice that does not apply)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SnnConvertError(Exception):
    """Base class of every error snnconvert raises on bad input."""


class UnsupportedLayersError(SnnConvertError):
    """The converter met ops it has no spiking form for; all of them are listed at once."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems  # every one, by name
        kinds: dict[tuple[str, str], list[str]] = {}  # ops of one type failing for one reason, together
        for name, type_name, why in problems:
            kinds.setdefault((type_name, why), []).append(name or "<root>")
        lines = [f"  - {names[0]} ({type_name}): {why}" if len(names) == 1 else
                 f"  - {type_name} ×{len(names)} ({shorten(names, 4)}): {why}" for (type_name, why), names in kinds.items()]
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
    """A dataset path or name could not be resolved, or its files cannot be read."""


class OutputError(SnnConvertError):
    """An output place cannot be written, or another run is writing it."""


class ArgumentError(SnnConvertError, ValueError):
    """A public function or config was called with an argument of the wrong type, shape or value."""
