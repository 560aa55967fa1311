"""The network behind refinement: a :class:`Refiner` runs any predictor (a ``PoseFixNet``,
an ONNX runtime session, a callable) on crop batches with the flip test. It is built once,
carrying the keypoint spec, crop size and box padding that go with the network:
:meth:`Refiner.from_checkpoint` (the shipped model by default, on the backend ``posefix
refine`` runs by default: the int8 ONNX export on a capable CPU, else the float32 one,
PyTorch on CUDA; :attr:`Refiner.backend` says which), :meth:`Refiner.from_onnx` (an ONNX
file), :func:`load_refiner` (the CLI's choice of either) or :func:`as_refiner` (a bare
network or callable, given its spec and crop size).

**Predict** (paper section 6). The network draws the input pose as Gaussian heatmaps and
predicts every keypoint in crop pixels with a confidence. With the flip test (on by default)
the crop and the input pose are mirrored (left/right swapped with ``spec.flip_index``),
predicted again, un-mirrored and averaged with the first prediction, as the reference does.
Crops are normalized and flipped in numpy (:func:`posefix.crops.network_inputs`); a
PyTorch predictor gets them as tensors on its device. Torch-free at import: a refiner of
an ONNX file (the default on a CPU) runs without torch.

**In memory.** :meth:`Refiner.refine_image` and :meth:`Refiner.refine_images` refine poses
on images already held (RGB or BGR), through :func:`posefix.pipeline.run_pipeline`: the same
crops, batches, flip test, rescoring and OKS-NMS as ``posefix refine``, so the same numbers.
Their :class:`RefinedPoses` draw themselves (:meth:`RefinedPoses.plot`, with
:mod:`posefix.visualize`), give COCO results (:meth:`RefinedPoses.to_coco`,
:meth:`RefinedPoses.save`, with :mod:`posefix.io`'s writer) and one person at a time
(:class:`RefinedPerson`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import (
    BACKENDS,
    cached_int8,
    cached_onnx,
    choose_backend,
    default_threads,
    int8_without_saturation,
)
from .builtin import default_checkpoint_path
from .config import ConfigError, GateOverride
from .crops import network_inputs
from .decoding import Decoding
from .errors import InputError
from .io import Detections
from .onnx_runner import ERROR_OUTPUT, OnnxRefiner
from .options import RefineOptions
from .pipeline import run_pipeline
from .refined import RefinedPerson, RefinedPoses, checked_image
from .spec import KeypointSpec, load_spec

if TYPE_CHECKING:
    import torch

    from .checkpoint import LoadedCheckpoint

__all__ = ["BACKENDS", "Predictor", "RefinedPerson", "RefinedPoses", "Refiner", "as_refiner",
           "check_refiner_options", "load_refiner", "resolve_device"]

#: The networks :func:`load_refiner` runs.

#: Box padding where neither the checkpoint nor the ONNX file gives one (the reference's).
DEFAULT_PADDING = 1.25

#: ``(images (B, 3, H, W), input_pose (B, K, 3)) -> (coords, confidence[, error])``:
#: tensors for a PyTorch network, numpy arrays for an ``arrays`` predictor (ONNX Runtime).
Predictor = Callable[..., tuple[Any, ...]]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Refiner:
    """A predictor with its crop size, spec, device and :class:`~posefix.decoding.Decoding`:
    crops in, keypoints out.

    Args:
        predict: ``(images (B, 3, H, W) normalized float, input_pose (B, K, 3)) ->
            (coords (B, K, 2) crop pixels, confidence (B, K))``, e.g. ``PoseFixNet.predict``
            or an :class:`posefix.export.OnnxRefiner`; it may add a third output, the
            probability (B, K) that each input keypoint is a gross error
            (``PoseFixNet.predict_with_error``), which :meth:`refine_batch` returns too.
        input_size: (height, width) of the crops.
        spec: keypoint layout (its ``flip_index`` un-mirrors the flipped prediction).
        device: where ``predict`` runs (ignored for ONNX Runtime: the CPU).
        decoding: what is done with the predictions: the error gate, steps and hold (per
            pass, :meth:`Decoding.place`), the flip test, rescoring and OKS-NMS (default
            ``Decoding()``: every keypoint refined, flip test on). Kept as :attr:`decoding`.
        padding: the box padding the network was trained with (crops are cut with it).
        description: what runs, for summaries (e.g. ``torch demo_model.pt``).
        backend: what runs, as ``posefix refine --backend`` names it: ``torch`` (the
            default: ``predict`` takes and returns tensors on ``device``), ``onnxruntime`` or
            ``onnxruntime-int8`` (numpy arrays in and out, an :class:`OnnxRefiner`: no torch
            is imported). Kept as :attr:`backend`; :attr:`arrays` says which of the two.
        error_head: whether ``predict`` gives error probabilities (None: unknown); a gate
            needs them.
        decodes_itself: ``predict`` applies its own gate (an ONNX file of the earlier
            format ``posefix-onnx/1``): :meth:`Decoding.place` is not applied, and
            :meth:`with_decoding` cannot change the gate, steps or hold.
    """

    def __init__(self, predict: Predictor, input_size: tuple[int, int], spec: KeypointSpec,
                 device: str | torch.device = "cpu", decoding: Decoding | None = None,
                 padding: float = DEFAULT_PADDING, description: str = "", *,
                 backend: str = "torch",
                 error_head: bool | None = None, decodes_itself: bool = False) -> None:
        decoding = Decoding() if decoding is None else decoding
        if not isinstance(decoding, Decoding):
            raise TypeError(f"decoding must be a posefix.decoding.Decoding, got "
                            f"{type(decoding).__name__} (the flip test is Decoding(flip=...))")
        self.predict = predict
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.spec = spec
        if backend not in BACKENDS[1:]:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS[1:])}, got {backend!r}")
        self.backend = backend
        self.arrays = backend != "torch"
        self.device: Any = "cpu" if self.arrays else resolve_device(device)
        self.padding = float(padding)
        self.description = description or getattr(predict, "__qualname__", "a predictor")
        self.error_head = error_head
        self.decodes_itself = bool(decodes_itself)
        self.decoding = decoding
        _check_decoding(self, decoding)
        self._flip_index = np.asarray(spec.flip_index, dtype=np.int64)

    @property
    def flip(self) -> bool:
        """The flip test (:attr:`decoding`'s)."""
        return self.decoding.flip

    @property
    def error_gate(self) -> float | None:
        """The error gate (:attr:`decoding`'s)."""
        return self.decoding.gate

    def with_decoding(self, decoding: Decoding) -> Refiner:
        """This refiner, the same network, decoding with ``decoding`` (e.g.
        ``refiner.with_decoding(dataclasses.replace(refiner.decoding, gate=0.5))``): no
        export or reload, the network is shared."""
        out = copy.copy(self)
        _check_decoding(out, decoding)
        out.decoding = decoding
        return out

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, *, backend: str = "auto",
                        device: str | torch.device = "auto", flip: bool = True,
                        error_gate: float | GateOverride | None = None,
                        threads: int | None = None) -> Refiner:
        """The network of a checkpoint (None: the shipped demo model) with its spec, crop
        size and box padding, run as ``posefix refine --backend`` runs it: the same input
        gives the same keypoints.

        ``backend`` ``"auto"`` (the default, as the CLI's) runs the checkpoint's ONNX export
        on a CPU (:func:`posefix.backends.choose_backend`), as its int8 copy where the CPU
        multiplies int8 exactly and the shipped calibration set fits the model, else in
        float32; PyTorch on a CUDA device. ``"torch"`` (PyTorch float32, the exact path),
        ``"onnxruntime"`` (the float32 export) and ``"onnxruntime-int8"`` ask for one;
        :attr:`backend` says which runs. ``device`` is where PyTorch runs (ONNX Runtime runs
        on the CPU); ``error_gate`` replaces the checkpoint's ``model.error_gate`` (0 refines
        every keypoint); ``threads``: ONNX Runtime's (:meth:`from_onnx`)."""
        chosen = choose_backend(backend, device)
        _refuse_onnx_on_cuda(chosen, device)
        if chosen != "torch":
            int8 = True if chosen == "onnxruntime-int8" else (None if backend == "auto"
                                                              else False)
            return cls.from_onnx(checkpoint=path, flip=flip, error_gate=error_gate,
                                 threads=threads, int8=int8)
        from .checkpoint import load_checkpoint

        ckpt = load_checkpoint(Path(path) if path is not None else default_checkpoint_path())
        return _with_gate(cls.from_loaded(ckpt, device=device, flip=flip), error_gate)

    @classmethod
    def from_loaded(cls, ckpt: LoadedCheckpoint, *, device: str | torch.device = "auto",
                    flip: bool = True, spec: KeypointSpec | None = None) -> Refiner:
        """A checkpoint already read by :func:`posefix.checkpoint.load_checkpoint`
        (``spec`` replaces its spec, e.g. to rename keypoints)."""
        dev = resolve_device(device)
        net = ckpt.model.to(dev).eval()
        return cls(_torch_predictor(net), tuple(ckpt.config.model.input_size), spec or ckpt.spec,
                   dev, ckpt.decoding.changed(flip=flip), float(ckpt.config.data.bbox_padding),
                   f"torch {ckpt.path}", error_head=net.error_head is not None)

    @classmethod
    def from_onnx(cls, path: str | Path | None = None, *, checkpoint: str | Path | None = None,
                  flip: bool = True, error_gate: float | GateOverride | None = None,
                  threads: int | None = None, int8: bool | None = False) -> Refiner:
        """An exported network run by ONNX Runtime on the CPU, without torch (``threads``:
        :func:`posefix.backends.default_threads` unless given).

        ``path`` None exports ``checkpoint`` (None: the shipped model) first, once: the
        export is kept in the user's cache (:func:`posefix.backends.cached_onnx`; only the
        export imports torch) and carries the checkpoint's spec, box padding and decoding. ``int8`` True runs its int8 copy
        (:func:`posefix.backends.cached_int8`), None runs that copy where the shipped
        calibration set fits the model and the CPU multiplies int8 without saturation
        (:func:`posefix.backends.int8_without_saturation`), else the float32 export. For a
        given ``path``, spec and padding come from ``checkpoint`` where given, else from the
        file's metadata; the decoding from the file's metadata, with ``error_gate``
        (a file of the earlier format ``posefix-onnx/1`` has its gate in the graph and
        refuses another).
        """
        threads = threads if threads is not None else default_threads()
        spec, padding = None, None
        if path is None:  # exported once per checkpoint and gate, then from the cache
            source = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
            export = cached_onnx(source)
            wanted = int8 or (int8 is None and int8_without_saturation())
            quantized = cached_int8(export, required=bool(int8)) if wanted else None
            runner = OnnxRefiner(quantized or export, threads=threads)
            description = f"onnxruntime{' int8' if quantized else ''}, the export of {source}"
            backend = "onnxruntime-int8" if quantized else "onnxruntime"
        else:
            if int8:
                raise InputError(path, "an ONNX file runs as it is; quantize it with "
                                 "posefix.quantize.quantize_onnx (or leave out int8)")
            if checkpoint is not None:
                from .checkpoint import load_checkpoint

                ckpt = load_checkpoint(Path(checkpoint))
                spec, padding = ckpt.spec, float(ckpt.config.data.bbox_padding)
            runner = OnnxRefiner(path, threads=threads)
            description, backend = f"onnxruntime {path}", "onnxruntime"
        refiner = _onnx_refiner(cls, runner, spec, padding, flip, description,
                                "--checkpoint too", backend)
        if error_gate is not None and refiner.decodes_itself:
            raise InputError(runner.path, "the error gate and blend of this export "
                             "(posefix-onnx/1) are part of its graph; export it again")
        return _with_gate(refiner, error_gate)

    def prepare(self, crops: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network inputs: normalized crops (B or 2B, 3, H, W) float32 and poses (B or 2B,
        K, 3) float32, from uint8 RGB crops (B, H, W, 3) and crop-pixel poses.

        With the flip test the mirrored copies follow the originals in the same batch
        (:func:`posefix.crops.network_inputs`).
        """
        return network_inputs(crops, poses, self._flip_index if self.flip else None)

    def combine(self, coords: np.ndarray, conf: np.ndarray, n: int,
                error: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Average the mirrored half of a prepared batch's predictions back in (in float32)
        and return float64 ``coords, conf, error``."""
        out = [None if a is None else np.asarray(a, dtype=np.float32)
               for a in (coords, conf, error)]
        if self.flip:
            index = self._flip_index
            fc = out[0][n:][:, index]
            fc[..., 0] = self.input_size[1] - 1 - fc[..., 0]
            out[0] = (out[0][:n] + fc) / 2
            for i in (1, 2):
                if out[i] is not None:
                    out[i] = (out[i][:n] + out[i][n:][:, index]) / 2
        return tuple(None if a is None else a.astype(np.float64) for a in out)

    def refine_image(self, image: np.ndarray, keypoints: np.ndarray,
                     scores: np.ndarray | None = None, *, color: str = "rgb",
                     boxes: np.ndarray | None = None, **options: Any) -> RefinedPoses:
        """Refine the poses of one image held in memory.

        Args:
            image: (H, W, 3) uint8, RGB (the default) or, with ``color="bgr"``, BGR as
                OpenCV reads it.
            keypoints: (N, K, 2) ``x, y`` or (N, K, 3) ``x, y, score`` in image pixels, in
                this refiner's keypoint layout (``self.spec``); all-zero keypoints are absent.
            scores: (N,) person scores (default 1).
            color: ``"rgb"`` or ``"bgr"``.
            boxes: (N, 4) ``x, y, w, h`` detection boxes, for ``box="bbox"``.
            options: :class:`posefix.options.RefineOptions` fields (``box``, ``score``,
                ``nms``, ``batch_size``; ``score`` and ``nms`` default to :attr:`decoding`'s);
                images in memory need no loader workers.
        """
        return self.refine_images([image], [keypoints],
                                  None if scores is None else [scores], color=color,
                                  boxes=None if boxes is None else [boxes], **options)[0]

    def refine_images(self, images: Sequence[np.ndarray], keypoints: Sequence[np.ndarray],
                      scores: Sequence[np.ndarray] | None = None, *, color: str = "rgb",
                      boxes: Sequence[np.ndarray] | None = None, **options: Any,
                      ) -> list[RefinedPoses]:
        """:meth:`refine_image` over many images (video frames): their crops share network
        batches. The pipeline is the file path's (:func:`posefix.pipeline.run_pipeline`):
        the same crops, batching, flip test, rescoring and OKS-NMS per image, so the same
        numbers as ``posefix refine`` on the same images and poses. Each image is refined
        on its own: nothing passes between frames."""
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
        if len(keypoints) != len(images):
            raise ValueError(f"{len(images)} images but {len(keypoints)} keypoint arrays")
        if not len(images):
            return []
        frames = [checked_image(im, i, color) for i, im in enumerate(images)]
        dets = _detections(keypoints, scores, boxes, self.spec.num_keypoints)
        check_refiner_options(self, flip=options.pop("flip", None),
                              device=options.pop("device", None))
        opts = RefineOptions(**{"workers": 0, **options})
        inputs = dets.keypoints.copy()  # the writer overwrites dets' with the refined poses
        writer = run_pipeline(dets, frames.__getitem__, self, opts, inplace=True)
        ends = np.cumsum([len(k) for k in keypoints])
        out = []
        for i, (s, e) in enumerate(zip(np.r_[0, ends[:-1]], ends, strict=True)):
            out.append(RefinedPoses(
                writer.keypoints[s:e], writer.scores[s:e],
                None if writer.error is None else writer.error[s:e],
                writer.keep[s:e], writer.refined[s:e], inputs[s:e], dets.boxes[s:e],
                self.spec, images[i], color))
        return out

    def refine_batch(self, crops: np.ndarray, poses: np.ndarray,
                     areas: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """:meth:`__call__` and the input-error probability (B, K), or None where the
        predictor gives none.
        ``areas`` (B,): each crop's area in the image, in image pixels (for the decoding's
        ``hold_above_shrink``; None: unknown)."""
        n = len(crops)
        x, p = self.prepare(crops, poses)
        shrink = None
        if areas is not None:
            shrink = np.sqrt(np.asarray(areas, dtype=np.float64)
                             / (self.input_size[0] * self.input_size[1]))
            shrink = np.concatenate([shrink, shrink]) if self.flip else shrink
        out = self.predict(x, p) if self.arrays else _run_torch(self.predict, x, p,
                                                                 self.device)
        error = out[2] if len(out) > 2 else None
        coords = out[0]
        if not self.decodes_itself:
            coords = self.decoding.place(coords, out[1], error, p, shrink)
        return self.combine(coords, out[1], n, error)

    def __call__(self, crops: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Refine a batch: uint8 RGB crops (B, H, W, 3), input poses (B, K, 3) in crop pixels
        ``x, y, valid`` -> (coords (B, K, 2) in crop pixels, confidence (B, K))."""
        return self.refine_batch(crops, poses)[:2]

    def __repr__(self) -> str:
        h, w = self.input_size
        return (f"Refiner({self.backend} on {self.device}, {self.spec.name}, {h}x{w} crops, "
                f"flip test {'on' if self.flip else 'off'})")




def _detections(keypoints: Sequence[np.ndarray], scores: Sequence[np.ndarray] | None,
                boxes: Sequence[np.ndarray] | None, num_keypoints: int) -> Detections:
    """Per-image pose arrays as :class:`Detections` whose image id is the image's index."""
    parts = []
    for i, kp in enumerate(keypoints):
        kp = np.asarray(kp, dtype=np.float64)
        if kp.ndim == 2 and kp.size == 0:
            kp = kp.reshape(0, num_keypoints, 3)
        if kp.ndim != 3 or kp.shape[1] != num_keypoints or kp.shape[2] not in (2, 3):
            raise ValueError(f"image {i}: keypoints must be (N, {num_keypoints}, 2 or 3) in "
                             f"the refiner's layout, got {kp.shape}")
        if kp.shape[2] == 2:
            kp = np.concatenate([kp, np.ones((*kp.shape[:2], 1))], axis=-1)
        n = len(kp)
        score = np.ones(n) if scores is None else np.asarray(scores[i], dtype=np.float64)
        box = np.full((n, 4), np.nan) if boxes is None else np.asarray(boxes[i], np.float64)
        if score.shape != (n,) or box.shape != (n, 4):
            raise ValueError(f"image {i}: {n} persons need scores (N,) and boxes (N, 4), got "
                             f"{score.shape} and {box.shape}")
        parts.append(Detections(np.full(n, i, dtype=np.int64), kp, score, box,
                                np.ones(n, dtype=np.int64)))
    return Detections.concatenate(parts, num_keypoints)


def _torch_predictor(net: torch.nn.Module) -> Predictor:
    """The predict method of a network: with its error probability, or its keypoints
    alone."""
    if getattr(net, "error_head", None) is not None:
        return net.predict_with_error  # type: ignore[return-value]
    return getattr(net, "predict", net)


def _run_torch(predict: Predictor, x: np.ndarray, p: np.ndarray, device: Any,
               ) -> tuple[np.ndarray, ...]:
    """A PyTorch predictor on numpy inputs, moved to its device; its outputs as numpy."""
    import torch

    with torch.inference_mode():
        out = predict(torch.from_numpy(x).to(device, non_blocking=True),
                      torch.from_numpy(p).to(device, non_blocking=True))
    return tuple(o.float().cpu().numpy() for o in out)


def _check_decoding(refiner: Refiner, decoding: Decoding) -> None:
    """A :class:`ConfigError` where ``decoding`` gates a network without an error head; an
    :class:`InputError` where it changes the gate, steps or hold of a predictor that
    applies its own (:attr:`Refiner.decodes_itself`)."""
    if decoding.gate is not None and refiner.error_head is False:
        raise ConfigError("error gate: this network has no error head (model.error_head: false)")
    if refiner.decodes_itself:  # compared with the decoding it was built with
        own = refiner.decoding
        policy = ("gate", "steps", "hold_below", "hold_above_shrink")
        if any(getattr(decoding, f) != getattr(own, f) for f in policy):
            raise InputError(Path(str(getattr(refiner.predict, "path", refiner.description))),
                             "the error gate and blend of this export (posefix-onnx/1) are "
                             "part of its graph; export it again")


def _with_gate(refiner: Refiner, error_gate: float | GateOverride | None) -> Refiner:
    """``refiner`` with ``error_gate``'s threshold and blend (None: as it is)."""
    override = GateOverride.of(error_gate)
    if override is None:
        return refiner
    return refiner.with_decoding(refiner.decoding.with_gate(override.threshold, override.blend))


def _refuse_onnx_on_cuda(backend: str, device: Any) -> None:
    """A ValueError where an ONNX Runtime ``backend`` is asked to run on a CUDA ``device``."""
    if backend.startswith("onnxruntime") and str(device).startswith("cuda"):
        raise ValueError(f"ONNX Runtime runs on the CPU here; device {device} needs backend "
                         "torch (--backend torch)")


def load_refiner(checkpoint: str | Path | None = None, backend: str = "auto",
                 onnx: str | Path | None = None, *, device: str | torch.device | None = "auto",
                 flip: bool | None = True,
                 error_gate: float | GateOverride | None = None) -> Refiner:
    """The refiner of ``posefix refine``: an ``onnx`` file as it is (:meth:`Refiner.from_onnx`;
    ``auto`` runs it as given), else :meth:`Refiner.from_checkpoint` with ``backend``
    (``auto``: :func:`posefix.backends.choose_backend`). ``flip`` and ``device`` None (the
    defaults of :class:`~posefix.options.RefineOptions`) mean on and ``auto``."""
    flip = True if flip is None else flip
    device = "auto" if device is None else device
    if onnx is None:
        return Refiner.from_checkpoint(checkpoint, backend=backend, device=device, flip=flip,
                                       error_gate=error_gate)
    chosen = "onnxruntime" if backend == "auto" else choose_backend(backend, device)
    _refuse_onnx_on_cuda(chosen, device)
    if chosen == "torch":
        return Refiner.from_checkpoint(checkpoint, backend="torch", device=device, flip=flip,
                                       error_gate=error_gate)
    return Refiner.from_onnx(onnx, checkpoint=checkpoint, flip=flip, error_gate=error_gate,
                             int8=chosen == "onnxruntime-int8")


def _onnx_refiner(cls: type[Refiner], runner: OnnxRefiner, spec: KeypointSpec | None,
                  padding: float | None, flip: bool, description: str, spec_hint: str,
                  backend: str = "onnxruntime") -> Refiner:
    """A ``cls`` (:class:`Refiner`) of an ONNX Runtime session: ``spec`` and ``padding``
    where given, else the file's (padding: else :data:`DEFAULT_PADDING`); an
    :class:`InputError` telling to pass ``spec_hint`` where neither names a spec."""
    spec = spec or runner.spec
    if spec is None:
        raise InputError(runner.path, f"the ONNX file names no keypoint spec; pass {spec_hint}")
    padding = padding if padding is not None else runner.bbox_padding
    own = runner.decoding is None  # posefix-onnx/1: the gate is in the graph
    decoding = Decoding(gate=runner.error_gate) if own else runner.decoding
    return cls(runner, runner.input_size, spec, "cpu", decoding.changed(flip=flip),
               DEFAULT_PADDING if padding is None else padding, description,
               backend=backend, error_head=ERROR_OUTPUT in runner.outputs, decodes_itself=own)


def check_refiner_options(refiner: Refiner, *, flip: bool | None = None,
                          device: str | torch.device | None = None) -> None:
    """A ``ValueError`` where ``flip`` or ``device`` (None: not given) is not the
    ``refiner``'s own: a :class:`Refiner` is built with its flip test and device
    (:func:`posefix.refine.refine` and :meth:`Refiner.refine_images` alike)."""
    if flip is not None and bool(flip) != refiner.flip:
        raise ValueError(f"flip={flip!r}: this Refiner was built with its own flip test "
                         f"(flip={refiner.flip}); build it with flip= (Refiner.from_checkpoint"
                         "(..., flip=)) instead")
    if device is not None and str(resolve_device(device)) != str(refiner.device):
        raise ValueError(f"device={str(device)!r}: this Refiner was built with its own device "
                         f"({refiner.device}); build it with device= (Refiner.from_checkpoint"
                         "(..., device=)) instead")


def as_refiner(model: Any, spec: KeypointSpec | str | None = None,
               input_size: tuple[int, int] | None = None, device: str | torch.device = "auto",
               flip: bool = True) -> Refiner:
    """A :class:`Refiner` as it is; a loaded checkpoint through
    :meth:`Refiner.from_loaded`; an :class:`posefix.export.OnnxRefiner` with its file's
    spec, crop size and padding; or a bare network (``torch.nn.Module``, e.g. a
    ``PoseFixNet``), an object with ``predict(images, input_pose)`` or a plain callable,
    wrapped with ``spec`` and ``input_size`` (else the network's own ``spec`` and
    ``input_size`` attributes), its ``decoding`` attribute where it has one (else
    ``Decoding()``: every keypoint refined) and the default box padding."""
    if isinstance(model, Refiner):
        return model
    if isinstance(model, OnnxRefiner):  # numpy in and out, on the CPU
        given = load_spec(spec) if spec is not None else None
        return _onnx_refiner(Refiner, model, given, None, flip, f"onnxruntime {model.path}",
                             "spec=")
    import torch

    from .checkpoint import LoadedCheckpoint

    if isinstance(model, LoadedCheckpoint):
        return Refiner.from_loaded(model, device=device, flip=flip,
                                   spec=load_spec(spec) if spec is not None else None)
    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is None:
        raise ValueError("refine: a keypoint spec is needed (pass spec= or a Refiner)")
    input_size = input_size or getattr(model, "input_size", None)
    if input_size is None:
        raise ValueError("refine: the crop size is unknown (pass input_size=(h, w))")
    dev = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model = model.to(dev).eval()
        predict = _torch_predictor(model)
    else:
        predict = getattr(model, "predict", model)
    if not callable(predict):
        raise TypeError(f"refine: cannot predict with a {type(model).__name__}")
    decoding = getattr(model, "decoding", None)
    decoding = (decoding if isinstance(decoding, Decoding) else Decoding()).changed(flip=flip)
    return Refiner(predict, tuple(input_size), load_spec(spec), dev, decoding,
                   description=type(model).__name__,
                   error_head=getattr(model, "error_head", None) is not None
                   if isinstance(model, torch.nn.Module) else None)
