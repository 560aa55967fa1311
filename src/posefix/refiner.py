"""The network behind refinement: a :class:`Refiner` runs any predictor (a ``PoseFixNet``,
an ONNX runtime session, a callable) on crop batches with the flip test, and
:func:`load_backend` opens a checkpoint or an ONNX file as one.

**Predict** (paper section 6). The network draws the input pose as Gaussian heatmaps and
predicts every keypoint in crop pixels with a confidence. With the flip test (on by default)
the crop and the input pose are mirrored (left/right swapped with ``spec.flip_index``),
predicted again, un-mirrored and averaged with the first prediction, as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import InputError
from .spec import KeypointSpec, load_spec

__all__ = ["Predictor", "Refiner", "as_refiner", "load_backend", "resolve_device"]

Predictor = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Refiner:
    """A predictor with its crop size, spec, device and flip test: crops in, keypoints out.

    Args:
        predict: ``(images (B, 3, H, W) normalized float, input_pose (B, K, 3)) ->
            (coords (B, K, 2) crop pixels, confidence (B, K))``, e.g. ``PoseFixNet.predict``
            or an :class:`posefix.export.OnnxRefiner`; it may add a third output, the
            probability (B, K) that each input keypoint is a gross error
            (``PoseFixNet.predict_with_error``), which :meth:`refine_batch` returns too.
        input_size: (height, width) of the crops.
        spec: keypoint layout (its ``flip_index`` un-mirrors the flipped prediction).
        device: where crops are normalized and ``predict`` is run.
        flip: average with the prediction on the mirrored crop.
    """

    def __init__(self, predict: Predictor, input_size: tuple[int, int], spec: KeypointSpec,
                 device: str | torch.device = "cpu", flip: bool = True) -> None:
        self.predict = predict
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.spec = spec
        self.device = resolve_device(device)
        self.flip = bool(flip)
        self._flip_index = torch.as_tensor(spec.flip_index, device=self.device)

    def prepare(self, crops: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network inputs: normalized crops (B or 2B, 3, H, W) and poses (B or 2B, K, 3).

        With the flip test the mirrored copies follow the originals in the same batch.
        """
        from .model import normalize

        x = torch.as_tensor(crops).to(self.device, non_blocking=True)
        p = torch.as_tensor(poses, dtype=torch.float32).to(self.device, non_blocking=True)
        x = normalize(x, channels_last=True).contiguous()
        if self.flip:
            w = self.input_size[1]
            fp = p[:, self._flip_index].clone()
            fp[..., 0] = w - 1 - fp[..., 0]
            x = torch.cat([x, torch.flip(x, dims=[3])])
            p = torch.cat([p, fp])
        return x, p

    def combine(self, coords: torch.Tensor, conf: torch.Tensor, n: int,
                error: torch.Tensor | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Average the mirrored half of a prepared batch's predictions back in; to numpy."""
        coords = torch.as_tensor(coords).float()
        conf = torch.as_tensor(conf).float()
        error = None if error is None else torch.as_tensor(error).float()
        if self.flip:
            index = self._flip_index.to(coords.device)
            fc = coords[n:][:, index].clone()
            fc[..., 0] = self.input_size[1] - 1 - fc[..., 0]
            coords = (coords[:n] + fc) / 2
            conf = (conf[:n] + conf[n:][:, index.to(conf.device)]) / 2
            if error is not None:
                error = (error[:n] + error[n:][:, index.to(error.device)]) / 2
        return (coords.double().cpu().numpy(), conf.double().cpu().numpy(),
                None if error is None else error.double().cpu().numpy())

    @torch.inference_mode()
    def refine_batch(self, crops: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`__call__` and the input-error probability (B, K), or None where the
        predictor gives none."""
        n = len(crops)
        x, p = self.prepare(crops, poses)
        out = self.predict(x, p)
        return self.combine(out[0], out[1], n, out[2] if len(out) > 2 else None)

    def __call__(self, crops: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor,
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Refine a batch: uint8 RGB crops (B, H, W, 3), input poses (B, K, 3) in crop pixels
        ``x, y, valid`` -> (coords (B, K, 2) in crop pixels, confidence (B, K))."""
        return self.refine_batch(crops, poses)[:2]


def as_refiner(model: Any, spec: KeypointSpec | None, input_size: tuple[int, int] | None,
                device: str | torch.device, flip: bool,
                ) -> tuple[Refiner, KeypointSpec, float | None]:
    """A :class:`Refiner` from a loaded checkpoint, a ``PoseFixNet``, a predictor object
    with ``predict`` or a plain callable; also the spec and the checkpoint's box padding."""
    padding = None
    if isinstance(model, Refiner):
        return model, model.spec, None
    if hasattr(model, "model") and hasattr(model, "config") and hasattr(model, "spec"):
        spec = spec if spec is not None else model.spec
        input_size = input_size or tuple(model.config.model.input_size)
        padding = float(model.config.data.bbox_padding)
        model = model.model
    if spec is None:
        spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("refine: a keypoint spec is needed (pass spec= or a loaded checkpoint)")
    spec = load_spec(spec)
    if input_size is None:
        input_size = getattr(model, "input_size", None)
    if input_size is None:
        raise ValueError("refine: the crop size is unknown (pass input_size=(h, w))")
    dev = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model = model.to(dev).eval()
        predict = (model.predict_with_error if getattr(model, "error_head", None) is not None
                   else model.predict if hasattr(model, "predict") else model)
    elif hasattr(model, "session"):  # an OnnxRefiner: numpy in and out, on the CPU
        dev = torch.device("cpu")
        onnx_model = model

        def predict(x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(torch.from_numpy(o) for o in onnx_model(x.numpy(), p.numpy()))
    else:
        predict = model.predict if hasattr(model, "predict") else model
    if not callable(predict):
        raise TypeError(f"refine: cannot predict with a {type(model).__name__}")
    return Refiner(predict, tuple(input_size), spec, dev, flip), spec, padding


def load_backend(checkpoint: str | Path | None, backend: str, onnx: str | Path | None,
                  tmp: Path, error_gate: float | None = None,
                  ) -> tuple[Any, KeypointSpec, float | None, str]:
    """(model object for :func:`refine`, spec, box padding, description); ``error_gate``
    replaces the checkpoint's."""
    from .checkpoint import default_checkpoint_path, load_checkpoint

    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if backend == "torch":
        ckpt = load_checkpoint(ckpt_path or default_checkpoint_path())
        if error_gate is not None:
            ckpt.model.set_error_gate(error_gate)
        return ckpt, ckpt.spec, float(ckpt.config.data.bbox_padding), f"torch {ckpt.path}"
    from .export import OnnxRefiner, export_onnx

    padding = None
    spec = None
    if ckpt_path is not None or onnx is None:
        ckpt = load_checkpoint(ckpt_path or default_checkpoint_path())
        padding, spec = float(ckpt.config.data.bbox_padding), ckpt.spec
        if onnx is None:
            onnx = export_onnx(ckpt.path, tmp / "refiner.onnx", error_gate=error_gate)
        elif error_gate is not None:
            raise InputError(onnx, "the error gate of an exported model is fixed; export "
                             "again with posefix export --error-gate")
    runner = OnnxRefiner(onnx)
    spec = spec or runner.spec
    if spec is None:
        raise InputError(onnx, "the ONNX file names no keypoint spec; pass --checkpoint too")
    return runner, spec, padding, f"onnxruntime {onnx}"
