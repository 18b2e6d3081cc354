"""Export: a converted model (or its ANN) as ONNX, its step run in onnxruntime, and NIR where it maps."""
from snnconvert.export.onnx import (
    OPSET,
    StateEntry,
    StepFunction,
    export_ann,
    export_snn,
    initial_state,
)

__all__ = ["OPSET", "StateEntry", "StepFunction", "export_ann", "export_snn", "initial_state"]
