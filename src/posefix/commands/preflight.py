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
from ..options import RefineFileOptions
from ..outputs import Inputs, check_outputs, folder_inputs, same_file

__all__ = ["CheckedInputs", "check_output", "check_refine_inputs", "check_refine_paths",
           "same_file"]


@dataclass
class CheckedInputs:
    """What :func:`check_refine_inputs` read, for
    :func:`posefix.commands.refine.refine_files` to use instead of reading the same files
    again.

    Attributes:
        truth: the ground truth in its own layout (None: not given, or its categories name
            no layout: it is read in the model's).
        image_list: the image list (None: not given).
        results: every detection of COCO results, in the file's keypoint count (None: not
            COCO results, or not read).
        format: the results' format, as :func:`check_refine_paths` returned it (the paths
            were checked: they need not be again).
    """

    truth: GroundTruth | None = None
    image_list: dict[int, ImageInfo] | None = None
    results: Detections | None = None
    format: str | None = None


def check_output(out: Path, inputs: Inputs, out_format: str) -> None:
    """``--out`` can be written (:func:`posefix.outputs.check_outputs`: not one of the
    ``inputs``, not a folder, its folder writable), in a known output format."""
    if out_format not in OUT_FORMATS:
        raise ValueError(f"out_format must be one of {', '.join(OUT_FORMATS)}, got "
                         f"{out_format!r}")
    check_outputs({"--out": out}, inputs=inputs)


def check_refine_paths(results: str | Path, out: str | Path, images: str | Path,
                       gt: str | Path | None = None, image_list: str | Path | None = None,
                       checkpoint: str | Path | None = None, report: str | Path | None = None,
                       options: RefineFileOptions | None = None) -> str | None:
    """The arguments of :func:`posefix.commands.refine.refine_files` fit together; returns the
    results' format (``options.format``, else detected: :func:`posefix.formats.sniff_format`)."""
    o = options if options is not None else RefineFileOptions()
    onnx, split = o.onnx, o.split
    results_p, out_p = Path(results), Path(out)
    check_output(out_p, {"results": folder_inputs(results), "gt": gt,
                         "image list": image_list, "checkpoint": checkpoint, "onnx": onnx},
                 o.out_format)
    check_outputs(folders={"--report": report},
                  inputs={"results": folder_inputs(results), "gt": gt, "images": images})
    if report is not None and gt is None:
        raise InputError(Path(report), "a report needs the ground truth: pass --gt")
    if split is not None and gt is None:
        raise InputError(results_p, f"split {split!r} selects images of the ground truth: "
                         "pass --gt")
    fmt = o.format or sniff_format(results_p)
    if image_list is None and gt is None and fmt in ("coco", None):
        raise InputError(results_p, "cannot map image ids to image files: pass --gt or "
                         "--image-list (a COCO JSON with 'images': id, file_name)")
    if not Path(images).is_dir():
        raise InputError(Path(images), "image folder does not exist")
    return fmt


def check_refine_inputs(results: str | Path, out: str | Path, images: str | Path,
                        gt: str | Path | None = None, image_list: str | Path | None = None,
                        checkpoint: str | Path | None = None, report: str | Path | None = None,
                        options: RefineFileOptions | None = None) -> CheckedInputs:
    """:func:`check_refine_paths`, then read every input file but the model: the ground
    truth (its own layout), the image list and COCO results (any layout; the model's, and
    the other formats, are checked once it is loaded). Raises :class:`InputError`; returns
    what it read, for :func:`posefix.commands.refine.refine_files`' ``checked``."""
    o = options if options is not None else RefineFileOptions()
    fmt = check_refine_paths(results, out, images, gt, image_list, checkpoint, report, o)
    for p, what in ((checkpoint, "checkpoint"), (o.onnx, "ONNX model")):
        if p is not None and not Path(p).is_file():
            raise InputError(Path(p), f"{what} file does not exist")
        if p is not None and Path(p).stat().st_size == 0:
            raise InputError(Path(p), f"{what} file is empty")
    checked = CheckedInputs(format=fmt)
    ids = None
    if gt is not None:
        try:
            checked.truth = load_ground_truth(gt, split=o.split)
            ids = set(checked.truth.images)
        except InputError as e:
            if e.field != "categories":  # no layout named: the model's is used
                raise
    if image_list is not None:
        checked.image_list = load_image_list(image_list)
        ids = set(checked.image_list)
    if fmt != "coco" or Path(results).is_dir():
        return checked
    with warnings.catch_warnings():  # refine's own check (keep_known) warns, once
        warnings.simplefilter("ignore")
        checked.results = load_results(results, None, image_ids=ids if o.strict else None,
                                       strict=o.strict)
    return checked
