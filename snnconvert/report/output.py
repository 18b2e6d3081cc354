"""What every report shares: one figure style (headless PNG) and the JSON + Markdown + PNG files."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def saved_figure(path: Path, title: str, xlabel: str, ylabel: str) -> Iterator:
    """Yield the axes of a new figure; on exit label it, add grid and legend, and save it to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def write_files(report: dict[str, Any], out_dir: str | Path, names: tuple[str, str, str],
                markdown: Callable[[dict], str], plot: Callable[[dict, Path], None] | None) -> dict[str, Path]:
    """Write ``report`` as JSON, its Markdown and (unless ``plot`` is None) its PNG under ``names``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(zip(("json", "markdown", "plot"), (out / name for name in names)))
    paths["json"].write_text(json.dumps(report, indent=2))
    paths["markdown"].write_text(markdown(report))
    if plot is None:
        del paths["plot"]
    else:
        plot(report, paths["plot"])
    return paths
