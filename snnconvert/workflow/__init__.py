"""The pipeline's stages, one module each, shared by the one-shot command and the subcommands:
:mod:`load`, :mod:`prepare`, :mod:`calibrate`, :mod:`finetune` (and training), :mod:`convert` (and
export), :mod:`simulate` (and the whole run of a :class:`~snnconvert.spec.RunSpec`), :mod:`sweep`,
:mod:`direct`. A command's stage takes its spec (:mod:`snnconvert.spec`) and returns its record."""
from snnconvert.workflow.load import (load, load_source, dataset, calibration_loader, eval_loader, calibration_batch, LoadedSNN,
                                      load_snn, model_metadata)
from snnconvert.workflow.prepare import (ensure_prepared, missing_route_sites, add_route_sites, save_prepared,
                                         prepare_masked, prepare_checkpoint)
from snnconvert.workflow.calibrate import calibrate
from snnconvert.workflow.finetune import command_line, write_record, train, finetune, training, build
from snnconvert.workflow.convert import save_converted, calibrate_snn, convert_checkpoint, export
from snnconvert.workflow.simulate import (Exits, Measures, simulate_and_summarize, simulate_exported,
                                          ann_energy_uj_per_sample, report_header, finish_report, run, simulate_model)
from snnconvert.workflow.sweep import mask_sweep
from snnconvert.workflow.direct import timestep_summary, direct_train

__all__ = ["load", "load_source", "dataset", "calibration_loader", "eval_loader", "calibration_batch", "LoadedSNN", "load_snn",
           "model_metadata", "ensure_prepared", "missing_route_sites", "add_route_sites", "save_prepared",
           "prepare_masked", "prepare_checkpoint", "calibrate", "command_line", "write_record", "train", "finetune",
           "training", "build", "save_converted", "calibrate_snn", "convert_checkpoint", "export", "Exits", "Measures",
           "simulate_and_summarize", "simulate_exported", "ann_energy_uj_per_sample", "report_header", "finish_report",
           "run", "simulate_model", "mask_sweep", "timestep_summary", "direct_train"]
