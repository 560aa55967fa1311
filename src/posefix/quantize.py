"""int8 quantization of an exported refiner (:func:`posefix.export.export_onnx`) for
ONNX Runtime on a CPU.

Only the network is quantized: the convolutions of the backbone (but its first,
full-resolution blocks: :data:`FLOAT_SCOPES`), the deconvolution head and the final 1x1
convolution, with the activations, residual additions and concatenations between them
(static QDQ, int8 weights per output channel, uint8 activations, ranges from a calibration
set). The input-pose heatmap rendering in front of the network, the error head and the
soft-argmax decoding stay float32. The first convolution, which reads the image and the
heatmaps concatenated, is split into one convolution of each, added: no copy of the
concatenation, and each half its own range should it be quantized.

ONNX Runtime has no int8 CPU kernel for ``ConvTranspose``, which takes about 30 % of the
float network's time. Each stride-2, 4x4, padding-1 transposed convolution (with the
batch norm after it folded in) is therefore first rewritten as the four 2x2 convolutions
of its output phases, concatenated and interleaved by ``DepthToSpace``: the same function
(float32 rounding apart), with the same multiply-adds, and quantizable.

Torch-free: needs ``onnx``, ``onnxruntime`` and numpy. The calibration set shipped with the
package (``assets/calibration/``: 64 crops of the shipped model's size, from LSP's
*training* split, see ``recipes/demo/make_calibration.py``) serves models with 128x96
COCO-17 inputs; other models pass batches made by their own pipeline.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .crops import network_inputs
from .jsonfiles import atomic_write

__all__ = ["CALIBRATION_DIR", "FLOAT_SCOPES", "NETWORK_SCOPES", "CalibrationSet", "QuantizeOptions",
           "calibration_batches", "load_calibration", "quantize_onnx", "shipped_calibration",
           "split_deconvolutions", "split_input_convolution"]

#: The shipped calibration set: ``crops.jpg`` (the crops one under the other) and
#: ``calibration.json`` (input size, spec, poses in crop pixels, provenance).
CALIBRATION_DIR = Path(__file__).resolve().parent / "assets" / "calibration"
#: Node-name prefixes of the network inside an export (``RefinerModule.net``'s modules):
#: MobileNetV2's backbone, ResNet's stem and stages, the deconvolutions, the final layer.
NETWORK_SCOPES = ("/net/backbone/", "/net/conv1/", "/net/bn1/", "/net/relu/", "/net/maxpool/",
                  "/net/layer1/", "/net/layer2/", "/net/layer3/", "/net/layer4/",
                  "/net/deconv/", "/net/final/")
#: Node-name prefixes kept float32 by default: MobileNetV2's first three blocks, at strides
#: 1-4 of the crop (the first convolution, which reads the input-pose heatmaps, and the
#: first two inverted residuals). Quantized, each of them alone changed the shipped model's
#: outputs more than any later block; float, they halve the error for a fifth of the speed.
#: ResNet's stem convolution (which reads the heatmaps) likewise, by analogy: unmeasured.
FLOAT_SCOPES = ("/net/backbone/backbone.0/", "/net/backbone/backbone.1/",
                "/net/backbone/backbone.2/", "/net/conv1/")
_OPS = ("Conv", "Clip", "Relu", "Add", "Concat", "DepthToSpace", "MaxPool")
_TAPS = {0: [3, 1], 1: [2, 0]}  # kernel taps of output phase 0 / 1 (offsets -1, 0 / 0, +1)


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize.

    Attributes:
        method: calibration of the activation ranges: ``minmax``, ``entropy`` or
            ``percentile`` (onnxruntime's ``CalibrationMethod``).
        per_channel: one weight scale per output channel (else per tensor).
        scopes: node-name prefixes of the nodes to quantize.
        keep_float: node-name prefixes of nodes within ``scopes`` left float32.
    """

    method: str = "minmax"
    per_channel: bool = True
    scopes: tuple[str, ...] = NETWORK_SCOPES
    keep_float: tuple[str, ...] = FLOAT_SCOPES


@dataclass(frozen=True)
class CalibrationSet:
    """Uint8 RGB ``crops`` (N, H, W, 3) and their input ``poses`` (N, K, 3) in crop pixels."""

    crops: np.ndarray
    poses: np.ndarray
    spec: str
    source: str


def load_calibration(folder: str | Path = CALIBRATION_DIR) -> CalibrationSet:
    """Read a calibration set (``crops.jpg`` and ``calibration.json``; default: shipped)."""
    from PIL import Image

    folder = Path(folder)
    meta_path = folder / "calibration.json"
    meta = json.loads(meta_path.read_text())
    h, w = (int(v) for v in meta["input_size"])
    poses = np.asarray(meta["poses"], dtype=np.float32)
    with Image.open(folder / "crops.jpg") as im:
        strip = np.array(im.convert("RGB"))
    if strip.shape != (len(poses) * h, w, 3):
        raise ValueError(f"{folder / 'crops.jpg'}: {strip.shape[:2]} pixels, expected "
                         f"{len(poses)} crops of {h}x{w} ({meta_path}: input_size, poses)")
    return CalibrationSet(strip.reshape(len(poses), h, w, 3), poses, str(meta["spec"]),
                          str(meta.get("source", "")))


def calibration_batches(crops: np.ndarray, poses: np.ndarray, flip_index: np.ndarray | None,
                        batch_size: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Network inputs ``(images, input_pose)`` as refinement feeds them
    (:meth:`posefix.refiner.Refiner.prepare`): ImageNet-normalized crops (B, 3, H, W) and
    poses, each batch followed by its mirrored copies (flip test; ``flip_index`` None: no
    mirrored copies)."""
    out = []
    for s in range(0, len(crops), batch_size):
        x, p = network_inputs(crops[s:s + batch_size], poses[s:s + batch_size], flip_index)
        out.append((np.ascontiguousarray(x), np.ascontiguousarray(p)))
    return out


def shipped_calibration(export: str | Path, required: bool = False,
                        ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The shipped calibration set's batches for the model in ``export``, or None (with
    ``required`` a ``ValueError``) where its crop size or keypoint layout differs.

    Batches of 4 crops (8 with the mirrored copies): the calibrator holds every
    intermediate output of a batch, and the ranges (global minima and maxima) are the same
    for any batch size (for the shipped model 2.6 GB peak at 32, 0.56 GB at 4)."""
    from .onnx_runner import OnnxRefiner
    from .spec import load_spec

    runner = OnnxRefiner(export, threads=1)
    meta = json.loads((CALIBRATION_DIR / "calibration.json").read_text())
    want = (tuple(int(v) for v in meta["input_size"]), str(meta["spec"]), len(meta["poses"][0]))
    have = (tuple(runner.input_size), runner.spec.name if runner.spec else None,
            runner.num_keypoints)
    if want != have:  # decided from the metadata: no crops decoded for a model they miss
        if required:
            raise ValueError(f"int8: the shipped calibration set is for {want[0][0]}x{want[0][1]}"
                             f" {want[1]} crops, the model takes {have[0][0]}x{have[0][1]} "
                             f"{have[1]}; quantize with posefix.quantize.quantize_onnx and "
                             "batches of its own (or use --backend onnxruntime)")
        return None
    cal = load_calibration()
    return calibration_batches(cal.crops, cal.poses, load_spec(cal.spec).flip_index,
                               batch_size=4)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _splittable(node: Any) -> bool:
    a = _attrs(node)
    return (list(a.get("strides", [])) == [2, 2] and list(a.get("pads", [])) == [1, 1, 1, 1]
            and list(a.get("kernel_shape", [4, 4])) == [4, 4] and a.get("group", 1) == 1
            and list(a.get("dilations", [1, 1])) == [1, 1] and "output_shape" not in a
            and not any(a.get("output_padding", [])) and a.get("auto_pad", b"NOTSET")
            in (b"NOTSET", "NOTSET"))


def _fold_batch_norm(node: Any, weights: dict[str, np.ndarray], w: np.ndarray,
                     b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w`` (Cin, Cout, kh, kw) and ``b`` with the batch norm ``node`` folded in."""
    gamma, beta, mean, var = (weights[t].astype(np.float64) for t in node.input[1:5])
    scale = gamma / np.sqrt(var + float(_attrs(node).get("epsilon", 1e-5)))
    return w * scale[None, :, None, None], (b - mean) * scale + beta


def split_input_convolution(model: Any, image_input: str = "images") -> int:
    """Rewrite, in place, each ``Conv`` that reads ``Concat(image_input, x)`` (the image and
    the input-pose heatmaps) as ``Conv(image_input) + Conv(x)``: the same function, but each
    half gets its own activation range when quantized (the heatmaps' [0, 1] no longer share
    the normalized image's), and the concatenation is no longer copied. Returns how many."""
    from onnx import helper, numpy_helper

    g = model.graph
    weights = {i.name: i for i in g.initializer}
    channels = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in g.input}
    concats = {n.output[0]: n for n in g.node if n.op_type == "Concat" and len(n.input) == 2
               and n.input[0] == image_input and _attrs(n).get("axis") == 1}
    nodes, count = [], 0
    for n in g.node:
        cat = concats.get(n.input[0]) if n.op_type == "Conv" else None
        if cat is None or n.input[1] not in weights or not channels.get(image_input):
            nodes.append(n)
            continue
        c = channels[image_input]
        w = numpy_helper.to_array(weights[n.input[1]])
        attrs = _attrs(n)
        parts = [(f"{n.name}/image", image_input, w[:, :c], n.input[2:]),
                 (f"{n.name}/pose", cat.input[1], w[:, c:], [])]
        for name, x, part, bias in parts:
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(part), f"{name}/W"))
            nodes.append(helper.make_node("Conv", [x, f"{name}/W", *bias], [f"{name}/out"],
                                          name=name, **attrs))
        nodes.append(helper.make_node("Add", [f"{n.name}/image/out", f"{n.name}/pose/out"],
                                      list(n.output), name=f"{n.name}/sum"))
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    _drop_unused(model)
    return count


def split_deconvolutions(model: Any) -> int:
    """Rewrite, in place, each stride-2 4x4 padding-1 ``ConvTranspose`` of ``model`` (and a
    ``BatchNormalization`` that alone reads it) as four 2x2 ``Conv`` (one per output phase),
    ``Concat`` and ``DepthToSpace``. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    g = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:  # the exporter shares equal tensors through Identity nodes
        if n.op_type == "Identity" and n.input[0] in weights:
            weights[n.output[0]] = weights[n.input[0]]
    readers: dict[str, list[Any]] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    nodes, folded, count = [], set(), 0
    for n in g.node:
        if n.name in folded:
            continue
        if n.op_type != "ConvTranspose" or n.input[1] not in weights or not _splittable(n):
            nodes.append(n)
            continue
        w = weights[n.input[1]].astype(np.float64)  # (Cin, Cout, 4, 4)
        bias = n.input[2] if len(n.input) > 2 else ""
        b = weights[bias].astype(np.float64) if bias else np.zeros(w.shape[1])
        out, nxt = n.output[0], readers.get(n.output[0], [])
        if (len(nxt) == 1 and nxt[0].op_type == "BatchNormalization"
                and all(t in weights for t in nxt[0].input[1:5])):
            w, b = _fold_batch_norm(nxt[0], weights, w, b)
            folded.add(nxt[0].name)
            out = nxt[0].output[0]
        phases = []
        for a in (0, 1):
            for c in (0, 1):
                name = f"{n.name}/phase{a}{c}"
                k = w[:, :, _TAPS[a]][:, :, :, _TAPS[c]].transpose(1, 0, 2, 3)
                g.initializer.extend([numpy_helper.from_array(k.astype(np.float32), f"{name}/W"),
                                      numpy_helper.from_array(b.astype(np.float32), f"{name}/B")])
                nodes.append(helper.make_node("Conv", [n.input[0], f"{name}/W", f"{name}/B"],
                                              [f"{name}/out"], name=name, kernel_shape=[2, 2],
                                              pads=[1 - a, 1 - c, a, c]))
                phases.append(f"{name}/out")
        nodes.append(helper.make_node("Concat", phases, [f"{n.name}/phases"],
                                      name=f"{n.name}/phases", axis=1))
        nodes.append(helper.make_node("DepthToSpace", [f"{n.name}/phases"], [out],
                                      name=f"{n.name}/interleave", blocksize=2, mode="DCR"))
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    _drop_unused(model)
    return count


def _materialize_identities(model: Any) -> None:
    """Replace each ``Identity`` of an initializer (the exporter shares equal tensors, e.g.
    zero biases, that way) by a copy of it, so that every weight and bias is an initializer
    the quantizer can read."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    outputs = {o.name for o in g.output}
    nodes = []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            copy = g.initializer.add()
            copy.CopyFrom(inits[n.input[0]])
            copy.name = n.output[0]
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)


def _drop_unused(model: Any) -> None:
    """Remove the nodes and initializers that nothing reads (left by the rewrites, and the
    bounds of the ``Clip`` nodes the quantizer removes: onnxruntime would warn about each)."""
    g = model.graph
    while True:
        used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
        nodes = [n for n in g.node if any(o in used for o in n.output)]
        if len(nodes) == len(g.node):
            break
        del g.node[:]
        g.node.extend(nodes)
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


class _Reader:
    """onnxruntime's calibration reader over ``(images, input_pose)`` batches."""

    def __init__(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] = iter(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        self.count += 1
        return {"images": np.ascontiguousarray(batch[0], np.float32),
                "input_pose": np.ascontiguousarray(batch[1], np.float32)}


class _QuietAdvice(logging.Filter):
    """Drops onnxruntime's root-logger advice to pre-process (the export is clean)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


def _network_nodes(model: Any, options: QuantizeOptions) -> list[str]:
    return [n.name for n in model.graph.node
            if n.op_type in _OPS and n.name.startswith(tuple(options.scopes))
            and not n.name.startswith(tuple(options.keep_float))]


def quantize_onnx(src: str | Path, dst: str | Path,
                  calibration: Iterable[tuple[np.ndarray, np.ndarray]],
                  options: QuantizeOptions | None = None) -> Path:
    """Write an int8 copy of the exported refiner ``src`` to ``dst`` (atomically).

    Args:
        src: a float32 export (:func:`posefix.export.export_onnx`).
        dst: the quantized file; same inputs, outputs and ``posefix.*`` metadata, plus
            ``posefix.quantization`` saying how it was made.
        calibration: ``(images, input_pose)`` batches as the network receives them
            (:func:`calibration_batches`), read once.
        options: :class:`QuantizeOptions` (default: MinMax, per-channel weights).

    Returns:
        ``dst``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    opts = options or QuantizeOptions()
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if opts.method not in methods:
        raise ValueError(f"method must be one of {', '.join(methods)}, got {opts.method!r}")
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    names = [i.name for i in model.graph.input]
    if names[:2] != ["images", "input_pose"]:
        raise ValueError(f"{src}: inputs {names}, expected ['images', 'input_pose'] "
                         "(not a posefix export)")
    _materialize_identities(model)
    deconvs = split_deconvolutions(model)
    inputs = split_input_convolution(model)
    nodes = _network_nodes(model, opts)
    if not any(n.op_type == "Conv" and n.name in set(nodes) for n in model.graph.node):
        raise ValueError(f"{src}: no Conv node under {', '.join(opts.scopes)} to quantize")
    reader = _Reader(calibration)
    advice = _QuietAdvice()
    with tempfile.TemporaryDirectory(prefix="posefix-quantize-") as tmp_s:
        tmp = Path(tmp_s)
        onnx.save(model, str(tmp / "float.onnx"))
        logging.getLogger().addFilter(advice)
        try:
            quantize_static(
                str(tmp / "float.onnx"), str(tmp / "int8.onnx"), reader,
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(_OPS),
                nodes_to_quantize=nodes, per_channel=opts.per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[opts.method])
        except (StopIteration, IndexError, ValueError) as e:
            if reader.count == 0:
                raise ValueError("calibration: no batches to calibrate with") from e
            raise
        finally:
            logging.getLogger().removeFilter(advice)
        quantized = onnx.load(str(tmp / "int8.onnx"))
    if reader.count == 0:
        raise ValueError("calibration: no batches to calibrate with")
    _drop_unused(quantized)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["posefix.quantization"] = json.dumps({
        "type": "int8 static QDQ", "weights": "int8 per channel" if opts.per_channel
        else "int8 per tensor", "activations": "uint8", "calibration": opts.method,
        "batches": reader.count, "nodes": len(nodes), "deconvolutions_split": deconvs,
        "input_convolutions_split": inputs})
    del quantized.metadata_props[:]
    for key, value in meta.items():
        prop = quantized.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(quantized)
    return atomic_write(dst, lambda f: f.write(quantized.SerializeToString()), binary=True)
