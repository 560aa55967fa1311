"""Which network backend refines by default, and the ONNX export cache behind it.

``posefix refine`` (and ``refine_files``) without ``--backend`` runs ``auto``: on a CPU the
network through ONNX Runtime, as the int8 copy of the export (:func:`cached_int8`) where the
calibration set shipped with the package fits the model, else the float32 export; on a
CUDA device PyTorch. With the shipped model, one thread each, the default refinement ran at
3.5x the PyTorch float32 network alone, within 0.001 AP of float32 on every LSP test input
(benchmarks/RESULTS.md). ONNX Runtime gets :func:`default_threads` (``OMP_NUM_THREADS``
where set, as torch's count does). ``onnxruntime`` is the float32 export (the same
keypoints as PyTorch to 0.0002 px), ``torch`` the exact float32 path. On a CPU, with the
shipped model or another checkpoint's export cached, the default path never imports torch
(``auto`` looks for a CUDA driver before asking torch, and takes ONNX Runtime where torch
is not installed): 600 MiB less memory and seconds less start-up.

The ONNX file is exported once per checkpoint and error gate and kept in the user's cache
(``$POSEFIX_CACHE``, else ``$XDG_CACHE_HOME/posefix``, else ``~/.cache/posefix``), named by
the checkpoint file's SHA-256, the gate, the versions and the source files that shape the
export (:data:`EXPORT_SOURCES`: a change to them in a working copy exports again, not only a
new release), so that a user never runs ``posefix export`` by hand and a changed checkpoint
is exported again; its int8 copy sits beside it, named by the export, the calibration
files, ``quantize.py`` and ONNX Runtime's version.

The shipped model's exports (float32 and int8) are shipped with the package beside it
(:func:`shipped_onnx`; ``recipes/demo/ship_onnx.py`` makes them with
:func:`posefix.export.export_onnx` and :func:`posefix.quantize.quantize_onnx`): for the
checkpoint that is the shipped one (by its SHA-256, recorded beside them) with its own gate,
nothing is exported, so that the default refinement needs no PyTorch at all (a change of
the exporting code does not re-export them: ``tests/test_shipped_onnx.py`` fails until they
are made again). Only an export needs PyTorch (:func:`require_torch`: one line naming
``pip install 'posefix[torch]'``)."""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "SHIPPED_RECORD", "TORCH_INSTALL", "TorchMissingError", "cache_dir",
           "cached_int8", "cached_onnx", "choose_backend", "cuda_available", "default_threads",
           "int8_without_saturation", "require_torch", "shipped_onnx", "torch_available",
           "torch_missing", "write_shipped_record"]

#: The package's modules whose code is in the exported graph (or writes it): part of the
#: cache key, so that a stale export is never run after they change.
EXPORT_SOURCES = ("model.py", "backbones.py", "heatmaps.py", "export.py", "onnx_runner.py",
                  "decoding.py")

#: ``--backend`` values: ``auto`` picks one of the others (see :func:`choose_backend`).
BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")

#: What installs PyTorch for posefix (training, export, ``--backend torch``).
TORCH_INSTALL = "pip install 'posefix[torch]'"
#: The record of the shipped model's exports, beside them in ``posefix/assets``.
SHIPPED_RECORD = "demo_model.onnx.json"
_ASSETS = Path(__file__).resolve().parent / "assets"


class TorchMissingError(ModuleNotFoundError):
    """PyTorch is needed and not installed; the message is one line naming the install
    command (``posefix`` prints it and exits 2)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs PyTorch, which is not installed: {TORCH_INSTALL}",
                         name="torch")


def torch_missing(error: ModuleNotFoundError) -> str:
    """The one line for a missing torch (or torchvision): a :class:`TorchMissingError`'s
    own, else what to install."""
    if isinstance(error, TorchMissingError):
        return str(error)
    return f"needs {'PyTorch' if error.name == 'torch' else error.name}, which is not " \
           f"installed: {TORCH_INSTALL}"


def torch_available() -> bool:
    """Whether PyTorch can be imported (found, without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_torch(what: str) -> None:
    """Raise :class:`TorchMissingError` for ``what`` (e.g. ``"--backend torch"``) where
    PyTorch is not installed."""
    if not torch_available():
        raise TorchMissingError(what)


def choose_backend(backend: str, device: Any = "auto") -> str:
    """The backend that runs: ``auto`` is ``onnxruntime`` on the CPU where it is installed
    (int8 where the shipped calibration set fits the model: :func:`cached_int8`), else
    ``torch``; any other name as it is (checked). ``torch`` (asked for, or for a CUDA
    device) without PyTorch installed is a :class:`TorchMissingError`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        require_torch("the PyTorch backend (--backend torch)")
    if backend != "auto":
        return backend
    dev = str(device)
    if dev.startswith("cuda"):
        require_torch(f"--device {dev} (the PyTorch backend)")
        return "torch"
    if (dev == "auto" and cuda_available()) or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return "onnxruntime"


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, asked only where a CUDA driver with a device is
    present, so that a machine without one never imports torch for the answer (False
    where torch is not installed: ONNX Runtime on the CPU then)."""
    if not torch_available():
        return False
    name = {"win32": "nvcuda.dll", "darwin": ""}.get(sys.platform, "libcuda.so.1")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return False
    count = ctypes.c_int(0)
    if lib is None or lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    if count.value < 1:
        return False
    import torch

    return bool(torch.cuda.is_available())


def default_threads() -> int:
    """Threads for ONNX Runtime: ``OMP_NUM_THREADS`` where set, else the CPUs this process
    may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cache_dir() -> Path:
    """Where exports are kept: ``$POSEFIX_CACHE``, ``$XDG_CACHE_HOME/posefix`` or
    ``~/.cache/posefix``."""
    if os.environ.get("POSEFIX_CACHE"):
        return Path(os.environ["POSEFIX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "posefix"


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_hash(names: tuple[str, ...]) -> str:
    """SHA-256 of the package's source files ``names`` (empty where not installed as
    files, e.g. from a zip)."""
    h = hashlib.sha256()
    for name in names:
        try:
            h.update((Path(__file__).parent / name).read_bytes())
        except OSError:
            return ""
    return h.hexdigest()


def cached_onnx(checkpoint: str | Path, opset: int = 17) -> Path:
    """The ONNX export of ``checkpoint`` (its decoding as metadata; a refiner may decode it
    otherwise: :meth:`posefix.refiner.Refiner.with_decoding`), from the cache, exported
    there first if missing (atomically: concurrent runs are safe). Where the cache cannot
    be written, the export goes to a temporary folder instead."""
    from . import __version__

    checkpoint = Path(checkpoint)
    digest = _file_hash(checkpoint)
    shipped = _shipped(digest, opset)
    if shipped is not None:
        return shipped
    key = hashlib.sha256(f"{digest}|{opset}|{__version__}|{_version('torch')}|"
                         f"{_source_hash(EXPORT_SOURCES)}".encode()).hexdigest()[:24]
    path = cache_dir() / "onnx" / f"{checkpoint.stem}-{key}.onnx"
    if path.is_file():
        return path
    require_torch(f"exporting {checkpoint.name} to ONNX for the default backend")
    from .export import export_onnx  # torch, only to export

    return _write_or_temporary(path, lambda out: export_onnx(checkpoint, out, opset=opset))


def cached_int8(export: str | Path, required: bool = False) -> Path | None:
    """The int8 copy of a float32 export (:func:`posefix.quantize.quantize_onnx`, calibrated
    on the calibration set shipped with the package), from the cache next to it, made there
    first if missing. None where that set does not fit the model (another crop size or
    keypoint layout); with ``required`` that is a ``ValueError`` instead."""
    from .quantize import CALIBRATION_DIR

    export = Path(export)
    shipped = _shipped_int8(export)
    if shipped is not None:
        return shipped
    cal_hash = "|".join(_file_hash(f) for f in sorted(CALIBRATION_DIR.iterdir()))
    key = hashlib.sha256(f"{export.name}|{cal_hash}|{_source_hash(('quantize.py',))}|"
                         f"{_version('onnxruntime')}".encode()).hexdigest()
    path = export.with_name(f"{export.stem}-int8-{key[:16]}.onnx")
    if path.is_file():
        return path
    from .quantize import quantize_onnx, shipped_calibration

    batches = shipped_calibration(export, required)
    if batches is None:
        return None
    return _write_or_temporary(path, lambda out: quantize_onnx(export, out, batches))


def _version(package: str) -> str:
    """The installed version of ``package``, or ``none``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _record() -> dict[str, Any] | None:
    """The shipped exports' record (:data:`SHIPPED_RECORD`), None where not shipped."""
    try:
        return json.loads((_ASSETS / SHIPPED_RECORD).read_text())
    except FileNotFoundError:
        return None


def shipped_onnx(checkpoint: str | Path, int8: bool = False) -> Path | None:
    """The export of ``checkpoint`` (int8: its int8 copy) shipped with the package, where
    ``checkpoint`` is the shipped model (the file whose SHA-256 the record beside the
    exports gives, wherever it is); else None."""
    path = _shipped(_file_hash(Path(checkpoint)), 17)
    return _shipped_int8(path) if int8 and path is not None else path


def _shipped(digest: str, opset: int) -> Path | None:
    """The shipped float32 export for a checkpoint of SHA-256 ``digest``, or None."""
    record = _record()
    if record is None or digest != record["checkpoint"]["sha256"] or opset != record["opset"]:
        return None
    path = _ASSETS / record["float32"]["file"]
    return path if path.is_file() else None


def _shipped_int8(export: Path) -> Path | None:
    """The shipped int8 copy where ``export`` is the shipped float32 export, or None."""
    record = _record()
    if record is None or export.resolve() != _ASSETS / record["float32"]["file"]:
        return None
    path = _ASSETS / record["int8"]["file"]
    return path if path.is_file() else None


def write_shipped_record(checkpoint: Path, float32: Path, int8: Path, opset: int = 17,
                         command: str = "") -> Path:
    """Record, beside the shipped exports ``float32`` and ``int8`` (in ``posefix/assets``),
    that they are ``checkpoint``'s, with the SHA-256 of each file and the versions that
    made them (``recipes/demo/ship_onnx.py``). Returns the record's path."""
    from . import __version__

    files = {"checkpoint": checkpoint, "float32": float32, "int8": int8}
    if len({p.resolve().parent for p in files.values()}) != 1:
        raise ValueError(f"the shipped exports go beside the checkpoint: {files}")
    record = {
        **{k: {"file": p.name, "sha256": _file_hash(p), "bytes": p.stat().st_size}
           for k, p in files.items()},
        "opset": int(opset),
        "made_with": {"posefix": __version__, **{k: _version(k) for k in (
            "torch", "onnx", "onnxruntime", "numpy", "pillow", "opencv-python-headless")}},
        "command": command,
    }
    path = float32.parent / SHIPPED_RECORD
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _write_or_temporary(path: Path, write: Callable[[Path], Path]) -> Path:
    """``write(path)`` into the cache; where the cache cannot be written (a read-only home),
    into a temporary folder, for this run only: removed when the process exits."""
    try:
        return write(path)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="posefix-onnx-"))
        atexit.register(shutil.rmtree, folder, True)
        return write(folder / path.name)


def int8_without_saturation() -> bool:
    """Whether this CPU runs ONNX Runtime's int8 (uint8 x int8) products exactly: x86 with
    VNNI (``avx512_vnni`` / ``avx_vnni``; where it was measured) or 64-bit ARM. Older x86
    CPUs multiply with ``vpmaddubsw``, whose 16-bit sums can saturate (ONNX Runtime's
    quantization documentation), so ``auto`` keeps them on the float32 export."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: unknown, so float32
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags
