"""ONNX export of a trained refiner (its runner, :class:`OnnxRefiner`, is
:mod:`posefix.onnx_runner`'s, re-exported here).

The exported graph is the whole refinement step of one crop batch: input-pose heatmap
rendering, the network and soft-argmax decoding. Inputs and outputs (batch axis dynamic):

* ``images``: (B, 3, H, W) float32, RGB normalized with the ImageNet mean/std
  (:func:`posefix.imagenet.normalize`);
* ``input_pose``: (B, K, 3) float32 ``x, y, valid`` in input (crop) pixels;
* ``coords``: (B, K, 2) the heatmaps' ``x, y`` in input pixels; ``confidence``: (B, K);
  ``heatmaps``: (B, K, H/4, W/4) logits;
* ``input_error``: (B, K) the probability that each input keypoint is a gross error, only
  for a model with an error head.

The graph holds no decoding policy: the gate, steps and hold of the checkpoint (or those
given) travel as the metadata ``posefix.decoding`` (:meth:`posefix.decoding.Decoding.to_json`)
and the :class:`~posefix.refiner.Refiner` applies them, as it does for PyTorch. The file's
``metadata_props`` also carry the keypoint spec, input size, stride, backbone and training
box padding (keys ``posefix.*``), so :class:`OnnxRefiner` needs nothing but the file. Files
of the earlier format ``posefix-onnx/1`` applied the gate inside the graph; they still run,
as they are, and refuse another gate.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import default_checkpoint_path, load_checkpoint
from .config import ConfigError, GateOverride
from .decoding import Decoding
from .jsonfiles import new_file_mode
from .model import PoseFixNet
from .onnx_runner import ERROR_OUTPUT, INPUT_NAMES, OUTPUT_NAMES, OnnxRefiner
from .spec import KeypointSpec

__all__ = ["ERROR_OUTPUT", "INPUT_NAMES", "OUTPUT_NAMES", "OnnxRefiner", "RefinerModule", "export_onnx"]

_META_FORMAT = "posefix-onnx/2"  # 1: the gate was part of the graph


class RefinerModule(nn.Module):
    """``(images, input_pose) -> (coords px, confidence, heatmap logits[, input error])``
    for export."""

    def __init__(self, net: PoseFixNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor, input_pose: Tensor) -> tuple[Tensor, ...]:
        """Run the network and decode its heatmaps."""
        logits, error_logits = self.net(images, input_pose, with_error=True)
        coords, confidence = self.net.decode(logits)
        if error_logits is None:
            return coords, confidence, logits
        return coords, confidence, logits, torch.sigmoid(error_logits.float())


def _metadata(net: PoseFixNet, spec: KeypointSpec, backbone: str, bbox_padding: float,
              decoding: Decoding) -> dict[str, str]:
    from . import __version__

    return {
        "posefix.format": _META_FORMAT,
        "posefix.version": __version__,
        "posefix.spec_name": spec.name,
        "posefix.spec": json.dumps(spec.to_dict()),
        "posefix.num_keypoints": str(net.num_keypoints),
        "posefix.input_size": json.dumps(list(net.input_size)),
        "posefix.stride": str(net.stride),
        "posefix.input_sigma": repr(float(net.input_sigma)),
        "posefix.backbone": backbone,
        "posefix.bbox_padding": repr(float(bbox_padding)),
        "posefix.decoding": decoding.to_json(),
    }


def export_onnx(checkpoint: str | Path | None, onnx_path: str | Path, opset: int = 17,
                error_gate: float | GateOverride | None = None) -> Path:
    """Export a checkpoint (None: the shipped demo model) to an ONNX file, atomically.

    Uses the TorchScript-based exporter (no ``onnxscript`` dependency), with a dynamic
    batch axis. ``error_gate`` replaces the checkpoint's ``model.error_gate`` (a
    :class:`~posefix.config.GateOverride`: and its blend; 0 refines every keypoint) in the
    decoding the file carries as metadata (the graph is the same). Returns ``onnx_path``.
    """
    import onnx

    ckpt = load_checkpoint(default_checkpoint_path() if checkpoint is None else checkpoint)
    net = ckpt.model.float().cpu().eval()
    decoding = ckpt.decoding
    if error_gate is not None:
        override = GateOverride.of(error_gate)
        if override.threshold and net.error_head is None:
            raise ConfigError("error gate: this network has no error head "
                              "(model.error_head: false)")
        decoding = decoding.with_gate(override.threshold, override.blend)
    wrapper = RefinerModule(net).eval()
    h, w = net.input_size
    k = net.num_keypoints
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, h, w, generator=gen)
    pose = torch.cat([torch.rand(2, k, 2, generator=gen) * torch.tensor([w, h]),
                      torch.ones(2, k, 1)], dim=-1)

    outputs = OUTPUT_NAMES + ((ERROR_OUTPUT,) if net.error_head is not None else ())
    out = Path(onnx_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp.onnx", dir=out.parent)
    os.close(fd)
    try:
        batch = {0: "batch"}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(
                wrapper, (images, pose), tmp, dynamo=False, opset_version=int(opset),
                input_names=list(INPUT_NAMES), output_names=list(outputs),
                dynamic_axes=dict.fromkeys(INPUT_NAMES + outputs, batch),
                do_constant_folding=True,
            )
        model = onnx.load(tmp)
        meta = _metadata(net, ckpt.spec, ckpt.config.model.backbone,
                         ckpt.config.data.bbox_padding, decoding)
        for key, value in meta.items():
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's file is private (0600)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
