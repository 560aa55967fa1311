"""How the verbs run: one frozen options object per verb (refine, evaluate, analyze,
synthesize, visualize), validated once, its defaults in one place (the library's functions,
the verbs and the command line's defaults and choices all read them here). Imports nothing
heavy: the command line builds its parser from it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .config import GateOverride
from .decoding import DEFAULT_SCORE, SCORES

__all__ = ["BOXES", "DEFAULT_SCORE", "EXIF", "SCORES", "AnalyzeOptions", "EvaluateOptions",
           "RefineFileOptions", "RefineOptions", "RefinePaths", "SynthesizeOptions", "VisualizeOptions",
           "with_overrides"]

_Options = TypeVar("_Options")

#: Where a crop comes from: the input pose's extent (the reference) or the detection's box.
BOXES = ("pose", "bbox")
#: EXIF orientation of image files: ``auto`` uses the frame whose size the image list gives.
EXIF = ("auto", "apply", "ignore")


@dataclass(frozen=True)
class RefineOptions:
    """How detections are refined, validated once (see :func:`posefix.refine.refine`).

    Attributes:
        box: crop from the input pose (``"pose"``, the reference) or the ``bbox``.
        flip: flip test (None: on; for a model that is not already a
            :class:`posefix.refiner.Refiner`: a Refiner is built with its own, and another
            value given here is a ``ValueError``).
        score: output person score, one of :data:`SCORES` (None: the refiner's
            :class:`~posefix.decoding.Decoding`'s, ``"auto"`` by default): ``"input"`` keeps
            the input person score; ``"heatmap"`` multiplies it by the mean keypoint
            confidence of the refined pose; ``"quality"`` (needs an error head) by the mean
            probability that the input keypoints are right; ``"auto"``: ``quality`` where
            the network has an error head, else ``input``.
        nms: OKS-NMS threshold per image; ``<= 0`` disables it (None: the decoding's, 0.9
            by default).
        batch_size: crops per forward pass (doubled by the flip test).
        workers: image loading and cropping threads (0: in the calling thread).
        device: ``"auto"`` (CUDA if available; also None), ``"cpu"``, ``"cuda:1"``, ... (as
            ``flip``: for a model that is not already a :class:`posefix.refiner.Refiner`).
        exif: ``"auto"``, ``"apply"`` or ``"ignore"`` the EXIF orientation of image files.
        skip_missing: keep the detections of missing or unreadable images unchanged (and
            count them) instead of raising :class:`posefix.errors.InputError`.
        progress: show a progress bar.
    """

    box: str = "pose"
    flip: bool | None = None
    score: str | None = None
    nms: float | None = None
    batch_size: int = 32
    workers: int = 2
    device: Any = None
    exif: str = "auto"
    skip_missing: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.box not in BOXES:
            raise ValueError(f"box must be 'pose' or 'bbox', got {self.box!r}")
        if self.score is not None and self.score not in SCORES:
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


@dataclass(frozen=True)
class RefinePaths:
    """The files of one ``posefix refine`` run, as :class:`~pathlib.Path` s (a ``str`` or
    ``os.PathLike`` is converted; anything else is a :class:`TypeError`), built once and
    handed to :func:`posefix.commands.preflight.check_refine_inputs` and
    :func:`posefix.commands.refine.refine_paths`.

    Attributes:
        results: the estimator's results (a file, or a folder of per-image files).
        out: the refined results to write.
        images: the image folder.
        gt: COCO keypoint annotations (the image list and the before/after report).
        image_list: image id -> file mapping (default: ``gt``).
        checkpoint: trained checkpoint (None: the shipped demo model).
        report: folder for the before/after report (needs ``gt``).
    """

    results: Path
    out: Path
    images: Path
    gt: Path | None = None
    image_list: Path | None = None
    checkpoint: Path | None = None
    report: Path | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"RefinePaths.{f.name} must be a path (str or Path), got "
                                f"{type(value).__name__}")
            object.__setattr__(self, f.name, Path(value))


def _default(cls: type, name: str) -> Any:
    """The default of ``cls``'s field ``name`` (for the command line's defaults)."""
    return {f.name: f.default for f in fields(cls)}[name]


def with_overrides(cls: type[_Options], options: _Options | None, overrides: dict[str, Any],
                   ) -> _Options:
    """``options`` (None: ``cls()``) with the fields named in ``overrides`` replaced,
    validated again: how a verb takes both an options object and the older keyword form
    (``evaluate_files(gt, results, strict=True)``). An unknown name is a TypeError."""
    base = cls() if options is None else options
    return replace(base, **overrides) if overrides else base  # type: ignore[type-var]


@dataclass(frozen=True)
class EvaluateOptions:
    """How ``posefix evaluate`` reads its inputs (see
    :func:`posefix.commands.evaluate.evaluate_files`).

    Attributes:
        spec: keypoint layout, a :class:`~posefix.spec.KeypointSpec`, a name or a file
            (None: the ground truth's).
        strict: detections of images not in the ground truth are an error (default:
            dropped, counted and warned about).
        split: only the ground truth's images whose ``split`` field has this value.
        format: the format of the results (:data:`posefix.formats.FORMATS`; None: detected).
    """

    spec: Any = None
    strict: bool = False
    split: str | None = None
    format: str | None = None

    default = classmethod(_default)


@dataclass(frozen=True)
class AnalyzeOptions(EvaluateOptions):
    """What ``posefix analyze`` reads (as :class:`EvaluateOptions`) and writes beyond its
    report (see :func:`posefix.commands.analyze.analyze_files`).

    Attributes:
        fit_profile_out: also fit an error profile to the results and write it here.
        report_dir: also write the figures, ``report.md`` and ``index.html`` here.
    """

    fit_profile_out: str | Path | None = None
    report_dir: str | Path | None = None


@dataclass(frozen=True)
class SynthesizeOptions:
    """How ``posefix synthesize`` makes input poses (see
    :func:`posefix.commands.synthesize.synthesize_file`).

    Attributes:
        spec: keypoint layout (None: the ground truth's).
        profile: error profile, an :class:`~posefix.profile.ErrorProfile`, a name or a file.
        seed: random seed, an integer >= 0 (same seed, same file).
        trainset_results: an estimator's results on the ground truth, for unlabelled
            keypoints.
        iou: box IoU from which another person counts as overlapping (for swaps).
    """

    spec: Any = None
    profile: Any = "default"
    seed: int = 0
    trainset_results: str | Path | None = None
    iou: float = 0.1

    default = classmethod(_default)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {self.iou}")


@dataclass(frozen=True)
class VisualizeOptions:
    """What ``posefix visualize`` draws (see :func:`posefix.commands.visualize.visualize_files`
    and :func:`~posefix.commands.visualize.visualize_video`).

    Attributes:
        gt: COCO annotations, drawn as the first panel and mapping image ids to files (not
            for a video).
        results: ``[LABEL=]FILE`` results files, one panel each, in any format of
            :mod:`posefix.formats`.
        spec: keypoint layout (None: from ``gt``, else ``coco17``).
        min_score: hide detections whose person score is below this.
        max_images: draw at most this many images (frames of a video); None: all.
        max_side: longer side of each panel in pixels (None: full size).
        exif: EXIF orientation handling of image files (:data:`EXIF`).
        format: the format of every results file (None: each detected).
    """

    gt: str | Path | None = None
    results: tuple[str, ...] = ()
    spec: Any = None
    min_score: float = 0.0
    max_images: int | None = None
    max_side: int | None = 640
    exif: str = "auto"
    format: str | None = None

    default = classmethod(_default)

    def __post_init__(self) -> None:
        if isinstance(self.results, str):
            raise ValueError("results must be a sequence of [LABEL=]FILE, not one string")
        object.__setattr__(self, "results", tuple(str(r) for r in self.results))
        if not math.isfinite(self.min_score):
            raise ValueError(f"min_score must be finite, got {self.min_score}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be at least 1 (or None), got {self.max_images}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"max_side must be at least 1 (or None), got {self.max_side}")
        if self.exif not in EXIF:
            raise ValueError(f"exif must be 'auto', 'apply' or 'ignore', got {self.exif!r}")
