"""Reports: JSON, Markdown and PNG plots of conversion runs, masking sweeps and comparisons."""
from snnconvert.report.compare import comparison, write_comparison
from snnconvert.report.report import checkpoints_of, simulation_summary, write_report
from snnconvert.report.sweep import write_sweep_report

__all__ = ["comparison", "write_comparison", "checkpoints_of", "simulation_summary", "write_report", "write_sweep_report"]
