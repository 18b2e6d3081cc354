"""Reports: JSON, Markdown and a PNG of accuracy vs t."""
from snnconvert.report.report import checkpoints_of, simulation_summary, write_report

__all__ = ["checkpoints_of", "simulation_summary", "write_report"]
