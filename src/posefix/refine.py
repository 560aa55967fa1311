"""Refining any estimator's poses with a trained PoseFix network (paper sections 3 and 6).

The stages (crops, batches, network, back in the image, OKS-NMS and rescoring) are
:mod:`posefix.pipeline`'s; the network is a :class:`posefix.refiner.Refiner`. Here:
:func:`refine_detections` and :func:`refine` (detections and images in, refined detections
out, in the input's order grouped by image, less the poses OKS-NMS suppressed). The verb
``posefix refine`` (files in, a results file and a summary out) is
:func:`posefix.commands.refine.refine_files`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .crops import ImageSource
from .io import Detections
from .pipeline import DEFAULT_SCORE, RefineCounts, RefineOptions, run_pipeline
from .refiner import as_refiner
from .spec import KeypointSpec

__all__ = ["refine", "refine_detections"]


# --------------------------------------------------------------------------- the pipeline
def refine_detections(
    detections: Detections,
    images: ImageSource,
    model: Any,
    spec: KeypointSpec | str | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    padding: float | None = None,
    box: str = "pose",
    flip: bool = True,
    score: str = DEFAULT_SCORE,
    nms: float = 0.9,
    batch_size: int = 32,
    workers: int = 2,
    device: str | torch.device = "auto",
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    exif: str = "auto",
    skip_missing: bool = False,
    progress: bool = False,
) -> tuple[Detections, RefineCounts]:
    """Refine detections; also return what was refined, kept, skipped and suppressed.

    See :func:`refine` for the arguments. The output keeps the input's order (grouped by
    image in order of first appearance), less the poses that OKS-NMS suppressed.
    """
    options = RefineOptions(box=box, score=score, nms=nms, batch_size=batch_size,
                            workers=workers, exif=exif, skip_missing=skip_missing,
                            progress=progress)
    refiner = as_refiner(model, spec, input_size, device, flip)
    writer, order = run_pipeline(detections, images, refiner, options, padding, image_sizes)
    counts = writer.counts
    result = writer.result(order)
    counts.detections_out = len(result)
    return result, counts


def refine(
    detections: Detections,
    images: ImageSource,
    model: Any,
    spec: KeypointSpec | str | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    padding: float | None = None,
    box: str = "pose",
    flip: bool = True,
    score: str = DEFAULT_SCORE,
    nms: float = 0.9,
    batch_size: int = 32,
    workers: int = 2,
    device: str | torch.device = "auto",
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    exif: str = "auto",
    skip_missing: bool = False,
    progress: bool = False,
) -> Detections:
    """Refine any estimator's detections with a PoseFix network.

    Args:
        detections: input poses (one row per person), in the model's keypoint layout.
        images: image id -> image file, or a loader ``image_id -> (H, W, 3) uint8 RGB``.
        model: a :class:`Refiner` (``Refiner.from_checkpoint()``, ``Refiner.from_onnx(...)``:
            it carries its spec, crop size, padding, device and flip test), a loaded
            checkpoint (:func:`posefix.checkpoint.load_checkpoint`), an
            :class:`posefix.export.OnnxRefiner`, or a bare network (``PoseFixNet``), an object
            with ``predict(images, input_pose)`` or such a callable (:func:`as_refiner`).
        spec: keypoint layout (default: the refiner's or checkpoint's).
        input_size: crop (height, width), for a bare network without ``input_size``.
        padding: box padding (default: the refiner's, i.e. the checkpoint's
            ``data.bbox_padding``, else 1.25).
        box: crop from the input pose (``"pose"``, the reference) or the ``bbox``.
        flip: flip test (for what is not already a :class:`Refiner`).
        score: ``"input"`` keeps the input person score; ``"heatmap"`` multiplies it by
            the mean keypoint confidence of the refined pose; ``"quality"`` (needs an error
            head) by the mean probability that the input keypoints are right; ``"auto"``
            (default): ``quality`` where the network has an error head, else ``input``.
        nms: OKS-NMS threshold per image; ``<= 0`` disables it.
        batch_size: crops per forward pass (doubled by the flip test).
        workers: image loading and cropping processes (0: in this process).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ... (for what is
            not already a :class:`Refiner`).
        image_sizes: image id -> (width, height) from the image list, for EXIF ``"auto"``.
        exif: ``"auto"``, ``"apply"`` or ``"ignore"`` the EXIF orientation.
        skip_missing: keep the detections of missing or unreadable images unchanged (and
            count them) instead of raising :class:`InputError`.
        progress: show a progress bar.

    Returns:
        The refined detections (unrefinable ones unchanged), less OKS-NMS suppressions.
    """
    out, _ = refine_detections(
        detections, images, model, spec, input_size=input_size, padding=padding, box=box,
        flip=flip, score=score, nms=nms, batch_size=batch_size, workers=workers, device=device,
        image_sizes=image_sizes, exif=exif, skip_missing=skip_missing, progress=progress)
    return out
