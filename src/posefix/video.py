"""Videos: frames streamed with OpenCV, refined a window of frames at a time, and videos
written atomically.

A frame's index (0, 1, ...) is its image id. Each frame is refined on its own, exactly as an
image is (:func:`posefix.pipeline.run_pipeline`): there is no temporal model, nothing passes
between frames. Frames are read in order and only a window of them is held at once.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import InputError
from .io import Detections, ImageInfo
from .jsonfiles import new_file_mode
from .options import RefineOptions
from .pipeline import RefineCounts, run_pipeline

__all__ = ["VideoInfo", "check_video_path", "frame_list", "read_frames", "refine_video",
           "video_info", "write_video"]

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says of a video (``frames`` may be an estimate)."""

    frames: int
    fps: float
    width: int
    height: int


def _open(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "video does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(path, "OpenCV cannot open this video")
    return cap


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and frame size of a video."""
    cap = _open(path)
    try:
        return VideoInfo(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS)),
                         int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def frame_list(path: str | Path) -> dict[int, ImageInfo]:
    """An image list of a video's frames: id = frame index, named by its index."""
    info = video_info(path)
    return {i: ImageInfo(i, str(i), info.width, info.height) for i in range(info.frames)}


def read_frames(path: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, (H, W, 3) uint8 RGB frame) in order."""
    cap = _open(path)
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield index, np.ascontiguousarray(frame[..., ::-1])
            index += 1
    finally:
        cap.release()


def _add_counts(total: RefineCounts, part: RefineCounts) -> None:
    for f in fields(RefineCounts):
        if f.name not in ("detections_in", "images", "detections_out"):
            setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))


def refine_video(detections: Detections, video: str | Path, refiner: Any,
                 options: RefineOptions, window: int = 16,
                 ) -> tuple[Detections, RefineCounts]:
    """Refine per-frame detections (image id = frame index) on a video's frames.

    Frames are streamed; the detections of ``window`` frames at a time go through the
    pipeline together (sharing network batches). The output is grouped by frame, in frame
    order, less the poses OKS-NMS suppressed. Detections of frames past the video's end are
    an error, or kept unrefined and counted with ``options.skip_missing``.
    """
    progress = options.progress
    options = dataclasses.replace(options, workers=0, progress=False)  # frames are in memory
    counts = RefineCounts(detections_in=len(detections))
    frames_with = set(np.unique(detections.image_ids).tolist())
    counts.images = len(frames_with)
    parts: list[Detections] = []
    held: dict[int, np.ndarray] = {}
    by_frame = np.argsort(detections.image_ids, kind="stable")
    sorted_ids = detections.image_ids[by_frame]

    def flush() -> None:
        # every frame with detections between the first and last held one is held: the
        # window's rows are one slice of the rows sorted by frame
        lo = np.searchsorted(sorted_ids, min(held), side="left")
        hi = np.searchsorted(sorted_ids, max(held), side="right")
        rows = by_frame[lo:hi]
        writer = run_pipeline(detections.select(rows), held.__getitem__, refiner, options,
                              inplace=True)  # the selection is the window's own copy
        parts.append(writer.result())
        _add_counts(counts, writer.counts)
        held.clear()

    last = -1
    for index, frame in _progress(read_frames(video), progress):
        last = index
        if index in frames_with:
            held[index] = frame
            if len(held) == window:
                flush()
    if held:
        flush()
    beyond = detections.image_ids > last
    if beyond.any():
        if not options.skip_missing:
            raise InputError(video, f"{int(beyond.sum())} detection(s) of frames past the "
                             f"video's last frame {last}, e.g. frame "
                             f"{int(detections.image_ids[beyond].min())}")
        counts.skipped_missing_image += int(beyond.sum())
        parts.append(detections.select(beyond))
    out = Detections.concatenate(parts, detections.keypoints.shape[1])
    counts.detections_out = len(out)
    return out, counts


def _progress(frames: Iterator[tuple[int, np.ndarray]], show: bool,
              ) -> Iterable[tuple[int, np.ndarray]]:
    if not show:
        return frames
    from tqdm import tqdm

    return tqdm(frames, unit="frame", desc="refine", leave=False)


def check_video_path(path: str | Path) -> str:
    """The FourCC code a video file of this name is written with, or an
    :class:`InputError`: a type OpenCV is not asked to write here."""
    fourcc = _FOURCC.get(Path(path).suffix.lower())
    if fourcc is None:
        raise InputError(path, f"unknown video type; use one of {', '.join(_FOURCC)}")
    return fourcc


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                draw: Callable[[np.ndarray], np.ndarray] | None = None) -> Path:
    """Write RGB frames (all of one size) as a video, atomically (mp4v for .mp4/.mov,
    MJPG for .avi/.mkv); ``draw`` maps each frame first."""
    path = Path(path)
    fourcc = check_video_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, new_file_mode())  # mkstemp's file is private (0600); OpenCV reopens it
    writer = None
    try:
        for frame in frames:
            frame = draw(frame) if draw is not None else frame
            if writer is None:
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps or 25.0,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise InputError(path, f"OpenCV cannot write {fourcc} video here")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        if writer is None:
            raise InputError(path, "no frames to write")
        writer.release()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        Path(tmp).unlink(missing_ok=True)
    return path
