"""The pipeline's stages, one module each, shared by the one-shot command and the subcommands:
:mod:`load`, :mod:`prepare`, :mod:`finetune` (and training), :mod:`convert` (and export),
:mod:`simulate` (and the whole run of a :class:`~snnconvert.spec.RunSpec`), :mod:`sweep`, :mod:`direct`."""
from snnconvert.workflow.load import (load, dataset, calibration_loader, eval_loader, calibration_batch, LoadedSNN,
                                      load_snn, model_metadata)
from snnconvert.workflow.prepare import (ensure_prepared, missing_route_sites, add_route_sites, save_prepared,
                                         prepare_masked)
from snnconvert.workflow.finetune import command_line, write_record, train, finetune, build
from snnconvert.workflow.convert import save_converted, calibrate_snn, export
from snnconvert.workflow.simulate import (Exits, simulate_and_summarize, simulate_exported, ann_energy_uj_per_sample,
                                          report_header, finish_report, run)
from snnconvert.workflow.sweep import mask_sweep
from snnconvert.workflow.direct import timestep_summary, direct_train

__all__ = ["load", "dataset", "calibration_loader", "eval_loader", "calibration_batch", "LoadedSNN", "load_snn", "model_metadata", "ensure_prepared", "missing_route_sites", "add_route_sites", "save_prepared", "prepare_masked", "command_line", "write_record", "train", "finetune", "build", "save_converted", "calibrate_snn", "export", "Exits", "simulate_and_summarize", "simulate_exported", "ann_energy_uj_per_sample", "report_header", "finish_report", "run", "mask_sweep", "timestep_summary", "direct_train"]
