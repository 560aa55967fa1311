"""Running an exported refiner with ONNX Runtime: numpy in, numpy out, no torch.

The file's inputs, outputs and ``metadata_props`` are those :func:`posefix.export.export_onnx`
writes (see :mod:`posefix.export`); :class:`OnnxRefiner` needs nothing but the file, so that
the default CPU refinement (:mod:`posefix.backends`) runs without importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .decoding import Decoding
from .errors import InputError
from .spec import KeypointSpec

__all__ = ["ERROR_OUTPUT", "INPUT_NAMES", "OUTPUT_NAMES", "OnnxRefiner"]

INPUT_NAMES = ("images", "input_pose")
OUTPUT_NAMES = ("coords", "confidence", "heatmaps")
ERROR_OUTPUT = "input_error"  # the fourth output of a model with an error head


class OnnxRefiner:
    """Run an exported refiner with onnxruntime (CPU by default).

    Attributes:
        spec: the keypoint spec stored in the file (None if absent).
        input_size: (height, width) of the crops the model takes.
        num_keypoints: K.
        stride: input pixels per heatmap cell.
        bbox_padding: the box padding the model was trained with (None if absent).
        decoding: the decoding the file carries (:class:`~posefix.decoding.Decoding`,
            metadata ``posefix.decoding``); None for a file of the earlier format
            ``posefix-onnx/1``, whose graph applies its gate itself.
        error_gate: the gate of a ``posefix-onnx/1`` file (None: none, or a later file).
        metadata: all ``metadata_props`` of the file.
    """

    def __init__(self, onnx_path: str | Path, *, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("onnxruntime is needed for the ONNX backend: "
                              "pip install 'posefix[onnx]'") from e
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path}: file does not exist")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        self.path = path
        if path.stat().st_size == 0:
            raise InputError(path, "ONNX model file is empty")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own errors: InvalidProtobuf, InvalidArgument...
            why = str(e).rpartition("failed:")[2].strip() or type(e).__name__
            raise InputError(path, f"not an ONNX model ONNX Runtime can load ({why})") from None
        meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        self.outputs = [o.name for o in self.session.get_outputs()]
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise ValueError(f"ONNX model {path}: inputs {names}, expected {list(INPUT_NAMES)}"
                             " (not a posefix export)")
        shape = self.session.get_inputs()[0].shape
        pose_shape = self.session.get_inputs()[1].shape
        self.input_size: tuple[int, int] = (
            tuple(json.loads(meta["posefix.input_size"])) if "posefix.input_size" in meta
            else (int(shape[2]), int(shape[3])))
        self.num_keypoints = int(meta.get("posefix.num_keypoints", pose_shape[1]))
        self.stride = int(meta.get("posefix.stride", 4))
        self.bbox_padding: float | None = (
            float(meta["posefix.bbox_padding"]) if "posefix.bbox_padding" in meta else None)
        self.decoding: Decoding | None = None
        if "posefix.decoding" in meta:
            try:
                self.decoding = Decoding.from_json(meta["posefix.decoding"])
            except (ValueError, TypeError) as e:
                raise InputError(path, f"metadata posefix.decoding: {e}") from None
        gate = meta.get("posefix.error_gate", "None")
        self.error_gate: float | None = None if gate == "None" else float(gate)
        self.spec: KeypointSpec | None = (
            KeypointSpec.from_dict(json.loads(meta["posefix.spec"]), source=f"{path}: spec")
            if "posefix.spec" in meta else None)

    def run(self, images: np.ndarray, input_pose: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs: ``coords`` (B, K, 2) px, ``confidence`` (B, K), ``heatmaps``."""
        h, w = self.input_size
        imgs = np.ascontiguousarray(images, dtype=np.float32)
        pose = np.ascontiguousarray(input_pose, dtype=np.float32)
        if imgs.ndim != 4 or imgs.shape[1:] != (3, h, w):
            raise ValueError(f"images must be (B, 3, {h}, {w}), got {imgs.shape}")
        if pose.shape != (imgs.shape[0], self.num_keypoints, 3):
            raise ValueError(f"input_pose must be ({imgs.shape[0]}, {self.num_keypoints}, 3), "
                             f"got {pose.shape}")
        outs: list[Any] = self.session.run(self.outputs,
                                           {INPUT_NAMES[0]: imgs, INPUT_NAMES[1]: pose})
        return dict(zip(self.outputs, outs, strict=True))

    def __call__(self, images: np.ndarray, input_pose: np.ndarray
                 ) -> tuple[np.ndarray, ...]:
        """The heatmaps' ``coords`` (B, K, 2) in input pixels (gated in a
        ``posefix-onnx/1`` file) and ``confidence`` (B, K), and the
        ``input_error`` (B, K) probabilities where the model has an error head."""
        out = self.run(images, input_pose)
        extra = tuple(out[k] for k in (ERROR_OUTPUT,) if k in out)
        return (out["coords"], out["confidence"], *extra)
