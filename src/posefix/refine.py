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

from .crops import ImageSource
from .io import Detections
from .options import RefineOptions
from .pipeline import RefineCounts, run_pipeline
from .refiner import Refiner, as_refiner, check_refiner_options
from .spec import KeypointSpec

__all__ = ["refine", "refine_detections"]


# --------------------------------------------------------------------------- the pipeline
def refine_detections(
    detections: Detections,
    images: ImageSource,
    model: Any,
    spec: KeypointSpec | str | None = None,
    options: RefineOptions | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    padding: float | None = None,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    inplace: bool = False,
) -> tuple[Detections, RefineCounts]:
    """Refine detections; also return what was refined, kept, skipped and suppressed.

    See :func:`refine` for the arguments; ``inplace`` lets the refined values overwrite
    ``detections``' arrays (for a caller that no longer needs them: one copy of the poses
    in memory, not two). The output keeps the input's order (grouped by image in order of
    first appearance), less the poses that OKS-NMS suppressed.
    """
    options = options if options is not None else RefineOptions()
    if isinstance(model, Refiner):
        check_refiner_options(model, flip=options.flip, device=options.device)
    refiner = as_refiner(model, spec, input_size,
                         "auto" if options.device is None else options.device,
                         True if options.flip is None else options.flip)
    writer = run_pipeline(detections, images, refiner, options, padding, image_sizes,
                          inplace=inplace)
    counts = writer.counts
    result = writer.result()
    counts.detections_out = len(result)
    return result, counts


def refine(
    detections: Detections,
    images: ImageSource,
    model: Any,
    spec: KeypointSpec | str | None = None,
    options: RefineOptions | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    padding: float | None = None,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
) -> Detections:
    """Refine any estimator's detections with a PoseFix network.

    Args:
        detections: input poses (one row per person), in the model's keypoint layout.
        images: image id -> image file, or a loader ``image_id -> (H, W, 3) uint8 RGB``.
        model: a :class:`~posefix.refiner.Refiner` (``Refiner.from_checkpoint()``,
            ``Refiner.from_onnx(...)``: it carries its spec, crop size, padding, device and
            flip test), a loaded checkpoint (:func:`posefix.checkpoint.load_checkpoint`), an
            :class:`posefix.export.OnnxRefiner`, or a bare network (``PoseFixNet``), an
            object with ``predict(images, input_pose)`` or such a callable
            (:func:`posefix.refiner.as_refiner`).
        spec: keypoint layout (default: the refiner's or checkpoint's).
        options: how to refine (:class:`posefix.options.RefineOptions`: box, flip test,
            score, OKS-NMS, batch size, workers, device, EXIF, skip missing images,
            progress; default: its defaults). ``flip`` and ``device`` apply to what is not
            already a :class:`~posefix.refiner.Refiner`; given with a Refiner, a value other
            than its own is a ``ValueError``, as for :meth:`Refiner.refine_images`.
        input_size: crop (height, width), for a bare network without ``input_size``.
        padding: box padding (default: the refiner's, i.e. the checkpoint's
            ``data.bbox_padding``, else 1.25).
        image_sizes: image id -> (width, height) from the image list, for EXIF ``"auto"``.

    Returns:
        The refined detections (unrefinable ones unchanged), less OKS-NMS suppressions.
    """
    out, _ = refine_detections(detections, images, model, spec, options,
                               input_size=input_size, padding=padding, image_sizes=image_sizes)
    return out
