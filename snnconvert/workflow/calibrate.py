"""The calibrate stage: a model's thresholds (and BatchNorm statistics) from sample images, and
optionally its SNN corrected layer by layer."""
from __future__ import annotations

from snnconvert.calibrate import calibrate_batchnorm, calibrate_thresholds
from snnconvert.convert import convert
from snnconvert.report.records import CalibrationRecord
from snnconvert.spec import CalibrateSpec
from snnconvert.workflow.convert import calibrate_snn, save_converted
from snnconvert.workflow.load import calibration_batch, calibration_loader, load_source
from snnconvert.workflow.prepare import ensure_prepared, save_prepared


def calibrate(spec: CalibrateSpec, out: str, device: str, progress: bool) -> CalibrationRecord:
    """Calibrate the model ``spec`` names and save it to ``out``: an ANN is prepared (its changes'
    costs recorded) and calibrated; a prepared model gets its thresholds (and, with
    ``spec.batchnorm``, its BatchNorm statistics) again. With a correction the model is converted
    and corrected for T, and ``out`` is a converted checkpoint; with ``error_at`` the SNN's
    per-layer errors are measured (against ``spec.reference``).

    Returns the record (:class:`~snnconvert.report.records.CalibrationRecord`).
    """
    source, calibration = spec.model, spec.calibration
    loaded = load_source(source)
    prepared, config, preparation = ensure_prepared(loaded, spec.data.name, calibration, device, progress,
                                                    spec.prepare)
    loader = calibration_loader(loaded.recipe, spec.data.name)
    if loaded.stage == "prepared":
        if spec.batchnorm:
            calibrate_batchnorm(prepared, loader, calibration.num_samples, device, progress)
        calibrate_thresholds(prepared, loader, calibration, device, progress)
    timesteps = spec.timesteps or loaded.recipe.timesteps
    snn_record = None
    if spec.correction is None and spec.error_at is None:
        save_prepared(out, prepared, loaded.recipe, config)
    else:
        snn = convert(prepared, "compensated", spec.neuron)
        images, _ = calibration_batch(loader, calibration.num_samples)
        reference = spec.reference or ("ann" if loaded.stage == "ann" else "qcfs")
        error_at = [] if spec.error_at is None else list(spec.error_at) or [timesteps]
        snn_record = calibrate_snn(snn, prepared, images.to(device), timesteps, spec.correction, error_at, reference,
                                   progress)
        if spec.correction is not None:
            save_converted(out, snn, loaded.recipe, config, "compensated", spec.neuron, snn_record)
        else:
            save_prepared(out, prepared, loaded.recipe, config)
    return CalibrationRecord(loaded.stage, loaded.metadata.get("loading", {}), preparation, snn_record, timesteps,
                             spec.correction is not None)
