"""The images of a dataset (:class:`ImageInfo`) and their paths: a ``file_name`` joined to its image root, refused where it escapes the
root; the root an annotation file's image names are relative to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

__all__ = ["ImageInfo", "guess_image_root", "resolve_image_path"]


@dataclass(frozen=True)
class ImageInfo:
    """One image of a dataset."""

    id: int
    file_name: str
    width: int
    height: int
    split: str | None = None  # the file's own ``images[].split`` (e.g. LSP's train/test)

def resolve_image_path(root: str | Path, file_name: str, source: str | Path | None = None,
                       must_exist: bool = True) -> Path:
    """Join an image file name to its root, refusing names that escape the root."""
    root = Path(root).resolve()
    candidate = (root / file_name).resolve()
    where = source if source is not None else root
    if Path(file_name).is_absolute() or not candidate.is_relative_to(root):
        raise InputError(where, f"image file name {file_name!r} escapes the image root {root}",
                         field_name="file_name")
    if must_exist and not candidate.is_file():
        raise InputError(where, f"image {candidate} does not exist", field_name="file_name")
    return candidate


def guess_image_root(path: Path, images: dict[int, ImageInfo]) -> Path:
    """The annotation file's folder, or its parent where the image names are relative to
    that (PoseTrack keeps ``annotations/`` beside ``images/``)."""
    first = next(iter(images.values()), None)
    if first is not None:
        for root in (path.parent, path.parent.parent):
            if (root / first.file_name).is_file():
                return root
    return path.parent
