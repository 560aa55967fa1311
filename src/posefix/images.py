"""Reading images for refinement and drawing: any format Pillow reads, as 8-bit RGB, in
the frame the annotations use.

**Images** are read with Pillow and converted to 8-bit RGB (grayscale, palette, CMYK,
16-bit and alpha images included). **EXIF orientation** (``exif="auto"``, the default):
the image is used in the frame whose size matches the ``width`` and ``height`` that the
image list gives for it -- COCO's sizes and annotations are those of the stored pixels
(annotated in 2014 browsers that ignored EXIF; the reference reads with
``cv2.IMREAD_IGNORE_ORIENTATION``), while tools that honour EXIF write the rotated size.
Where the sizes cannot tell (no size given, a square image, or an orientation that does not
swap the sides) the EXIF orientation is applied, as image viewers and ``cv2.imread`` do.
``exif="apply"`` or ``"ignore"`` forces one frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, malformed
from .io import ImageInfo
from .jsonfiles import atomic_write, read_json

__all__ = ["load_image", "load_image_list", "save_png"]

_EXIF_ORIENTATION = 0x0112


def load_image(path: str | Path, exif: str = "auto",
               expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, in the frame its annotations use.

    Args:
        path: image file (any format Pillow reads: JPEG, PNG, ...).
        exif: ``"auto"``, ``"apply"`` or ``"ignore"`` the EXIF orientation tag (see the
            module documentation for ``"auto"``).
        expected_size: ``(width, height)`` from the image list, which ``"auto"`` uses to
            pick the frame; None or non-positive values: unknown.

    Raises:
        InputError: the file is missing or is not a readable image (the message names it).
    """
    if exif not in ("auto", "apply", "ignore"):
        raise ValueError(f"exif must be 'auto', 'apply' or 'ignore', got {exif!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            oriented = _orient(im, exif, expected_size)
            return _to_rgb(oriented)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a PNG file, atomically with the user's umask
    (:func:`posefix.jsonfiles.atomic_write`)."""
    return atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"),
                        binary=True)


def _orient(im: Image.Image, exif: str, expected_size: tuple[int, int] | None) -> Image.Image:
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    if exif == "ignore" or orientation not in range(2, 9):
        return im
    if exif == "auto" and expected_size is not None and min(expected_size) > 0:
        raw = tuple(im.size)
        turned = raw[::-1] if orientation in (5, 6, 7, 8) else raw
        want = tuple(int(v) for v in expected_size)
        if raw == want and turned != want:
            return im
    return ImageOps.exif_transpose(im)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=-1))
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA") else im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def load_image_list(path: str | Path) -> dict[int, ImageInfo]:
    """Image id -> :class:`ImageInfo` from a COCO annotation or image-info JSON (``images``)."""
    path = Path(path)
    data = read_json(path)
    with malformed(path):
        return _image_list(data, path)


def _image_list(data: object, path: Path) -> dict[int, ImageInfo]:
    """:func:`load_image_list` of the parsed file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(path, "an image list must be a JSON object with a list 'images'",
                         field_name="images")
    out: dict[int, ImageInfo] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            raise InputError(path, "must be an object", i, "images")
        for key in ("id", "file_name"):
            if key not in im:
                raise InputError(path, "missing", i, f"images.{key}")
        try:
            info = ImageInfo(int(im["id"]), str(im["file_name"]), int(im.get("width") or 0),
                             int(im.get("height") or 0))
        except (TypeError, ValueError, OverflowError):
            raise InputError(path, "id, width and height must be integers", i, "images") from None
        out[info.id] = info
    return out
