"""Ship the shipped model's ONNX exports with the package, so that refining with it needs
no PyTorch: ``posefix/assets/demo_model.onnx`` (float32, :func:`posefix.export.export_onnx`)
and ``demo_model-int8.onnx`` (:func:`posefix.quantize.quantize_onnx` on the calibration set
shipped with the package), and ``demo_model.onnx.json``, which records the checkpoint's
SHA-256 (the default backend uses the files for that checkpoint only), each file's and the
versions that made them.

Run it after every re-ship of ``demo_model.pt`` (``ship.py``): ``tests/test_shipped_onnx.py``
fails until then. With torch (``pip install -e ".[dev]"``):

    OMP_NUM_THREADS=1 .venv/bin/python recipes/demo/ship_onnx.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from posefix.backends import write_shipped_record
from posefix.builtin import default_checkpoint_path
from posefix.export import export_onnx
from posefix.quantize import quantize_onnx, shipped_calibration

COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python recipes/demo/ship_onnx.py"


def ship_onnx(checkpoint: Path, opset: int = 17) -> tuple[Path, Path, Path]:
    """Write the float32 and int8 exports of ``checkpoint`` beside it and their record;
    return the three paths."""
    float32 = checkpoint.with_suffix(".onnx")
    int8 = checkpoint.with_name(f"{checkpoint.stem}-int8.onnx")
    with tempfile.TemporaryDirectory(prefix="ship-onnx-") as tmp:
        # both written elsewhere first: the record is never beside a half-written pair
        f32 = export_onnx(checkpoint, Path(tmp) / float32.name, opset=opset)
        q8 = quantize_onnx(f32, Path(tmp) / int8.name, shipped_calibration(f32, required=True))
        f32.replace(float32)
        q8.replace(int8)
    record = write_shipped_record(checkpoint, float32, int8, opset, COMMAND)
    return float32, int8, record


def main() -> None:
    """Export and quantize the package's demo model into the package."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None,
                    help="default: the package's demo model (the files go beside it)")
    args = ap.parse_args()
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint_path()
    for path in ship_onnx(checkpoint):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
