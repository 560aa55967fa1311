"""``posefix visualize``: ground truth and results files side by side, to PNG files or a
video.

:func:`visualize_files` writes one PNG per image: a labelled panel with the ground truth
(when given) followed by one panel per results file, in the order given;
:func:`visualize_video` writes the same side by side for every frame of a video, as a video.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..formats import image_list_from_keys, read_poses, sniff_format, to_detections
from ..images import load_image, save_png
from ..io import Detections, ImageInfo, load_ground_truth, load_results, resolve_image_path
from ..options import VisualizeOptions, with_overrides
from ..outputs import check_outputs, check_written, folder_inputs
from ..spec import KeypointSpec, load_spec
from ..visualize import render_panels

__all__ = ["visualize_files", "visualize_video"]


def _parse_results_arg(arg: str) -> tuple[str, Path]:
    """``LABEL=FILE`` or ``FILE`` (label: the file's stem)."""
    if "=" in arg:
        label, file = arg.split("=", 1)
        if label and not Path(arg).exists():
            return label, Path(file)
    return Path(arg).stem, Path(arg)


def _guess_image_file(root: Path, image_id: int) -> Path | None:
    for name in (f"{image_id:012d}", str(image_id)):
        for ext in (".jpg", ".jpeg", ".png"):
            p = root / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def visualize_files(
    images: str | Path, out: str | Path, options: VisualizeOptions | None = None,
    **overrides: Any,
) -> list[Path]:
    """Draw ground truth and results files side by side, one PNG per image.

    Args:
        images: image folder.
        out: output folder (created); each file is named after its image's path relative
            to the image folder, separators replaced by ``_`` (``000000040083.png``).
        options: what is drawn (:class:`posefix.options.VisualizeOptions`): ``gt``, COCO
            annotations, is drawn as the first panel and maps image ids to files; without
            it, image ``N`` is looked up as ``<images>/<N as 12 digits>.jpg`` (the COCO
            naming), then ``<images>/<N>.jpg`` (also ``.jpeg``, ``.png``). ``results``
            named by image (not id) need no ``gt``: the names are files in ``images``.
        overrides: ``options``' fields as keywords (``gt=..., results=[...]``), the older
            call form.

    Returns:
        The written PNG paths (each written atomically; ``out`` is checked before any work
        and each picture before it is written: never over an input).
    """
    o = with_overrides(VisualizeOptions, options, overrides)
    gt, spec = o.gt, o.spec
    root = Path(images)
    out_dir = Path(out)
    parsed = [_parse_results_arg(arg) for arg in o.results]
    inputs = {"images": root, "gt": gt,
              "results": [p for _, f in parsed for p in folder_inputs(f)]}
    check_outputs(folders={"--out": out_dir}, inputs=inputs)
    if not root.is_dir():
        raise InputError(root, "image folder does not exist")
    truth = load_ground_truth(gt, spec=spec, image_root=root) if gt is not None else None
    spec = truth.spec if truth is not None else load_spec(spec or "coco17")
    infos: dict[int, ImageInfo] = dict(truth.images) if truth is not None else {}
    panels: list[tuple[str, Detections]] = []
    for label, file in parsed:
        panels.append((label, _read_panel(file, spec, infos, root, o.format)))
    ids = sorted(set(infos) | {int(i) for _, d in panels for i in np.unique(d.image_ids)})
    if o.max_images is not None:
        ids = ids[: o.max_images]
    written: list[Path] = []  # the folder is made with the first picture (none: no folder)
    for image_id in ids:
        if image_id in infos:
            info = infos[image_id]
            path = resolve_image_path(root, info.file_name, source=gt)
            size = (info.width, info.height)
        else:
            found = _guess_image_file(root, image_id)
            if found is None:
                raise InputError(root, f"no image file for image_id {image_id} (looked for "
                                 f"{image_id:012d}.jpg and {image_id}.jpg); pass --gt")
            path, size = found.resolve(), None
        target = check_written(out_dir / f"{_picture_name(path, root)}.png",
                               {**inputs, "image": path})
        img = load_image(path, o.exif, size)
        sets = []
        if truth is not None:
            rows = truth.indices_of_image(image_id)
            sets.append(("ground truth", truth.keypoints[rows], None))
        for label, d in panels:
            rows = np.flatnonzero((d.image_ids == image_id) & (d.scores >= o.min_score))
            sets.append((label, d.keypoints[rows], d.scores[rows]))
        canvas = render_panels(img, sets, spec, max_side=o.max_side)
        written.append(save_png(target, canvas))
    return written


def _picture_name(path: Path, root: Path) -> str:
    return path.relative_to(root.resolve()).with_suffix("").as_posix().replace("/", "_")


def _read_panel(file: Path, spec: KeypointSpec, infos: dict[int, ImageInfo], root: Path,
                format: str | None) -> Detections:
    """One results file's detections with real image ids: COCO results as always; another
    format through :func:`posefix.formats.read_poses`, its image names looked up in
    ``infos`` (without ground truth: files in ``root``, added to ``infos``)."""
    fmt = format or sniff_format(file)
    if fmt == "coco" and not file.is_dir():
        return load_results(file, spec, image_ids=infos or None)
    poses = read_poses(file, spec, fmt, infos or None)
    if not infos:
        infos.update(image_list_from_keys(poses.keys, root, file))
    return to_detections(poses, infos, file)


def visualize_video(video: str | Path, out: str | Path,
                    options: VisualizeOptions | None = None, **overrides: Any) -> Path:
    """Draw per-frame results files side by side on every frame of a video, as a video.

    ``options.results`` are ``[LABEL=]FILE`` in any format of :mod:`posefix.formats`, keyed
    by frame index (as ``posefix refine --video`` writes them), at most
    ``options.max_images`` frames (:class:`posefix.options.VisualizeOptions`; its ``gt``
    and ``exif`` are for images, and a ``gt`` is an error here; ``overrides``: its fields
    as keywords). ``out`` is the video to write (``.mp4``, ``.avi``, ...), at the input's
    frame rate, atomically with the user's umask, never over an input (checked before any
    work). Returns ``out``.
    """
    from itertools import islice

    from ..video import check_video_path, frame_list, read_frames, video_info, write_video

    o = with_overrides(VisualizeOptions, options, overrides)
    if o.gt is not None:
        raise ValueError("visualize_video draws no ground truth: options.gt must be None")
    parsed = [_parse_results_arg(arg) for arg in o.results]
    check_outputs({"--out": out}, inputs={
        "video": video, "results": [p for _, f in parsed for p in folder_inputs(f)]})
    check_video_path(out)
    spec = load_spec(o.spec or "coco17")
    frames = frame_list(video)
    panels = []
    for label, file in parsed:
        poses = read_poses(file, spec, o.format, images=frames)
        panels.append((label, to_detections(poses, frames, file, frame_numbers=True)))

    def canvases() -> Iterator[np.ndarray]:
        for index, frame in islice(read_frames(video), o.max_images):
            sets = []
            for label, d in panels:
                rows = np.flatnonzero((d.image_ids == index) & (d.scores >= o.min_score))
                sets.append((label, d.keypoints[rows], d.scores[rows]))
            yield render_panels(frame, sets, spec, max_side=o.max_side)

    return write_video(out, canvases(), video_info(video).fps)
