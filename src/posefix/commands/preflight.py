"""Checks of ``posefix refine``'s inputs that need neither torch nor the model.

Importing torch and loading a model takes seconds; a malformed results file, a missing
image folder or a ground truth with a repeated id is found here first, in well under a
second, with the same one-line errors (:class:`posefix.errors.InputError`) that naming the
file and field.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..formats import OUT_FORMATS, sniff_format
from ..images import load_image_list
from ..io import Detections, GroundTruth, ImageInfo, load_ground_truth, load_results
from ..options import RefineFileOptions, RefinePaths
from ..outputs import Inputs, check_outputs, folder_inputs, same_file

__all__ = ["CheckedInputs", "check_output", "check_refine_inputs", "check_refine_paths",
           "same_file"]


@dataclass(frozen=True)
class CheckedInputs:
    """What :func:`check_refine_inputs` checked and read of one run's :class:`RefinePaths`,
    for :func:`posefix.commands.refine.refine_paths` to use instead of checking and reading
    the same files again. Each field is whole or None; nothing is filled in later.

    Attributes:
        paths: the files these are of (:func:`~posefix.commands.refine.refine_paths` refuses
            a ``CheckedInputs`` of other paths).
        format: the results' format (``options.format``, else detected; None: unknown).
        truth: the ground truth, fully read in the layout its categories name (None: not
            given, or its categories name no layout: it is read once the model's is known).
        image_list: the image list (None: not given).
        results: every detection of COCO results, in the file's keypoint count (None: not
            COCO results in one file; the model's layout is checked once it is loaded).
    """

    paths: RefinePaths
    format: str | None
    truth: GroundTruth | None = None
    image_list: dict[int, ImageInfo] | None = None
    results: Detections | None = None


def check_output(out: Path, inputs: Inputs, out_format: str) -> None:
    """``--out`` can be written (:func:`posefix.outputs.check_outputs`: not one of the
    ``inputs``, not a folder, its folder writable), in a known output format."""
    if out_format not in OUT_FORMATS:
        raise ValueError(f"out_format must be one of {', '.join(OUT_FORMATS)}, got "
                         f"{out_format!r}")
    check_outputs({"--out": out}, inputs=inputs)


def check_refine_paths(paths: RefinePaths, options: RefineFileOptions | None = None
                       ) -> str | None:
    """The files of :func:`posefix.commands.refine.refine_paths` fit together; returns the
    results' format (``options.format``, else detected: :func:`posefix.formats.sniff_format`)."""
    o = options if options is not None else RefineFileOptions()
    p = paths
    check_output(p.out, {"results": folder_inputs(p.results), "gt": p.gt,
                         "image list": p.image_list, "checkpoint": p.checkpoint,
                         "onnx": o.onnx}, o.out_format)
    check_outputs(folders={"--report": p.report},
                  inputs={"results": folder_inputs(p.results), "gt": p.gt, "images": p.images})
    if p.report is not None and p.gt is None:
        raise InputError(p.report, "a report needs the ground truth: pass --gt")
    if o.split is not None and p.gt is None:
        raise InputError(p.results, f"split {o.split!r} selects images of the ground truth: "
                         "pass --gt")
    fmt = o.format or sniff_format(p.results)
    if p.image_list is None and p.gt is None and fmt in ("coco", None):
        raise InputError(p.results, "cannot map image ids to image files: pass --gt or "
                         "--image-list (a COCO JSON with 'images': id, file_name)")
    if not p.images.is_dir():
        raise InputError(p.images, "image folder does not exist")
    return fmt


def check_refine_inputs(paths: RefinePaths, options: RefineFileOptions | None = None
                        ) -> CheckedInputs:
    """:func:`check_refine_paths`, then read every input file but the model: the ground
    truth (its own layout), the image list and COCO results (any layout; the model's, and
    the other formats, are checked once it is loaded). Raises :class:`InputError`; returns
    what it read, for :func:`posefix.commands.refine.refine_paths`' ``checked``."""
    o = options if options is not None else RefineFileOptions()
    fmt = check_refine_paths(paths, o)
    for p, what in ((paths.checkpoint, "checkpoint"), (o.onnx, "ONNX model")):
        if p is not None and not Path(p).is_file():
            raise InputError(Path(p), f"{what} file does not exist")
        if p is not None and Path(p).stat().st_size == 0:
            raise InputError(Path(p), f"{what} file is empty")
    truth = image_list = results = None
    ids = None
    if paths.gt is not None:
        try:
            truth = load_ground_truth(paths.gt, split=o.split)
            ids = set(truth.images)
        except InputError as e:
            if e.field != "categories":  # no layout named: the model's is used
                raise
    if paths.image_list is not None:
        image_list = load_image_list(paths.image_list)
        ids = set(image_list)
    if fmt == "coco" and not paths.results.is_dir():
        with warnings.catch_warnings():  # refine's own check (keep_known) warns, once
            warnings.simplefilter("ignore")
            results = load_results(paths.results, None,
                                   image_ids=ids if o.strict else None, strict=o.strict)
    return CheckedInputs(paths, fmt, truth, image_list, results)
