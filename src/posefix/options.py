"""How poses are refined: one frozen options object, validated once, its defaults in one
place (the library's functions, the verbs and the command line's defaults and choices all
read them here). Imports nothing heavy: the command line builds its parser from it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config import GateOverride

__all__ = ["BOXES", "DEFAULT_SCORE", "EXIF", "SCORES", "RefineFileOptions", "RefineOptions"]

#: Output person scores (see :class:`RefineOptions`).
SCORES = ("auto", "input", "heatmap", "quality")
#: Output person score unless told otherwise: ``quality`` for a network with an error head
#: (the shipped demo model: it measured the higher AP on every input of the LSP test split,
#: recipes/demo/README.md), else the input's score (rescoring by heatmap confidence never won
#: on held-out images, ``python benchmarks/bench_refine.py --compare-scores CKPT``).
DEFAULT_SCORE = "auto"
#: Where a crop comes from: the input pose's extent (the reference) or the detection's box.
BOXES = ("pose", "bbox")
#: EXIF orientation of image files: ``auto`` uses the frame whose size the image list gives.
EXIF = ("auto", "apply", "ignore")


@dataclass(frozen=True)
class RefineOptions:
    """How detections are refined, validated once (see :func:`posefix.refine.refine`).

    Attributes:
        box: crop from the input pose (``"pose"``, the reference) or the ``bbox``.
        flip: flip test (for a model that is not already a :class:`posefix.refiner.Refiner`,
            which carries its own).
        score: output person score, one of :data:`SCORES`: ``"input"`` keeps the input
            person score; ``"heatmap"`` multiplies it by the mean keypoint confidence of the
            refined pose; ``"quality"`` (needs an error head) by the mean probability that
            the input keypoints are right; ``"auto"``: ``quality`` where the network has an
            error head, else ``input``.
        nms: OKS-NMS threshold per image; ``<= 0`` disables it.
        batch_size: crops per forward pass (doubled by the flip test).
        workers: image loading and cropping threads (0: in the calling thread).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ... (for a model
            that is not already a :class:`posefix.refiner.Refiner`).
        exif: ``"auto"``, ``"apply"`` or ``"ignore"`` the EXIF orientation of image files.
        skip_missing: keep the detections of missing or unreadable images unchanged (and
            count them) instead of raising :class:`posefix.errors.InputError`.
        progress: show a progress bar.
        fix: for a network with an error-kind head (``model.error_kinds``), how each input
            keypoint is fixed by its kind (:class:`posefix.fixes.FixOptions`, its gate by
            default the network's error gate; None: ``FixOptions()``), or a callable
            ``(inputs, refined, kinds, areas, spec) -> keypoints`` (one image's detections,
            image pixels). Ignored for other networks.
    """

    box: str = "pose"
    flip: bool = True
    score: str = DEFAULT_SCORE
    nms: float = 0.9
    batch_size: int = 32
    workers: int = 2
    device: Any = "auto"
    exif: str = "auto"
    skip_missing: bool = False
    progress: bool = False
    fix: Any = None  # posefix.fixes.FixOptions, a callable or None

    def __post_init__(self) -> None:
        if self.box not in BOXES:
            raise ValueError(f"box must be 'pose' or 'bbox', got {self.box!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.exif not in EXIF:
            raise ValueError(f"exif must be 'auto', 'apply' or 'ignore', got {self.exif!r}")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of the field ``name`` (for the command line's defaults)."""
        return {f.name: f.default for f in fields(cls)}[name]


@dataclass(frozen=True)
class RefineFileOptions:
    """What ``posefix refine`` does with files beyond :class:`RefineOptions`: the network it
    runs, how it reads the inputs and what it writes (see
    :func:`posefix.commands.refine.refine_files`).

    Attributes:
        refine: how the detections are refined.
        backend: ``"auto"`` (default: ONNX Runtime on a CPU, int8 where the shipped
            calibration set fits the model; PyTorch on CUDA; see :mod:`posefix.backends`),
            ``"torch"`` (the exact float32 path), ``"onnxruntime"`` (float32) or
            ``"onnxruntime-int8"`` (:data:`posefix.backends.BACKENDS`).
        onnx: the ONNX file for ``onnxruntime`` (default: the cached export of the
            checkpoint).
        error_gate: keep every input keypoint whose probability of being a gross error (the
            network's error head) is below this; 0 refines every keypoint (default: the
            checkpoint's ``model.error_gate``); a :class:`~posefix.config.GateOverride`
            also sets how far each kept keypoint steps towards the refined one.
        format: the format of the results (:data:`posefix.formats.FORMATS`; default:
            detected).
        strict: detections of images not in the image list are an error (default: skipped
            with a warning).
        split: with ground truth, only its images whose ``split`` field has this value.
        out_format: ``"coco"`` results, or ``"arrays"`` keyed as the input's images
            (:data:`posefix.formats.OUT_FORMATS`).
        progress: progress bar (None: when stderr is a terminal).
    """

    refine: RefineOptions = RefineOptions()
    backend: str = "auto"
    onnx: str | Path | None = None
    error_gate: float | GateOverride | None = None
    format: str | None = None
    strict: bool = False
    split: str | None = None
    out_format: str = "coco"
    progress: bool | None = None
