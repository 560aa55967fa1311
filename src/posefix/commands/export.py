"""``posefix export``: a checkpoint to an ONNX file, float32 or the int8 copy the default
backend runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..config import GateOverride
from ..errors import InputError
from ..export import export_onnx
from ..outputs import check_outputs

__all__ = ["export_file"]


def export_file(checkpoint: str | Path | None, onnx: str | Path, *, opset: int = 17,
                error_gate: float | GateOverride | None = None, int8: bool = False) -> Path:
    """Write ``checkpoint`` (None: the shipped model) as ONNX to ``onnx`` (atomically) and
    return that path. ``error_gate`` (a threshold or a
    :class:`~posefix.config.GateOverride`) replaces the checkpoint's in the decoding the
    file carries (:mod:`posefix.decoding`; the graph is the same); ``int8``
    writes the int8 copy (:func:`posefix.quantize.quantize_onnx`, calibrated on the set
    shipped with the package) instead of the float32 export, or raises an
    :class:`InputError` naming the checkpoint where that set does not fit the model. The
    output is checked first (:func:`posefix.outputs.check_outputs`): never the checkpoint,
    by any path or link."""
    from ..builtin import default_checkpoint_path

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(checkpoint, "checkpoint file does not exist")
    check_outputs({"--onnx": onnx}, inputs={
        "checkpoint": checkpoint if checkpoint is not None else default_checkpoint_path()})
    if not int8:
        return export_onnx(checkpoint, onnx, opset=opset, error_gate=error_gate)
    from ..quantize import quantize_onnx, shipped_calibration

    with tempfile.TemporaryDirectory(prefix="posefix-export-") as tmp:
        full = export_onnx(checkpoint, Path(tmp) / "float32.onnx", opset=opset,
                           error_gate=error_gate)
        try:
            batches = shipped_calibration(full, required=True)
        except ValueError as e:  # the model is not the calibration set's size or layout
            raise InputError(checkpoint or "the shipped model", str(e)) from None
        return quantize_onnx(full, onnx, batches)
