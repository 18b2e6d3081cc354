"""Reports: JSON, Markdown and PNG plots of conversion runs and masking sweeps."""
from snnconvert.report.report import checkpoints_of, simulation_summary, write_report
from snnconvert.report.sweep import write_sweep_report

__all__ = ["checkpoints_of", "simulation_summary", "write_report", "write_sweep_report"]
