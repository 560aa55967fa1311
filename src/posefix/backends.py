"""Which network backend refines by default, and the ONNX export cache behind it.

``posefix refine`` (and ``refine_files``) without ``--backend`` runs ``auto``: on a CPU the
network through ONNX Runtime, as the int8 copy of the export (:func:`cached_int8`) where the
calibration set shipped with the package fits the model, else the float32 export; on a
CUDA device PyTorch. With the shipped model, one thread each, the default refinement ran at
3.5x the PyTorch float32 network alone, within 0.001 AP of float32 on every LSP test input
(benchmarks/RESULTS.md). ONNX Runtime gets :func:`default_threads` (``OMP_NUM_THREADS``
where set, as torch's count does). ``onnxruntime`` is the float32 export (the same
keypoints as PyTorch to 0.0002 px), ``torch`` the exact float32 path. On a CPU with the
export cached, the default path never imports torch (``auto`` looks for a CUDA driver
before asking torch): 600 MiB less memory and seconds less start-up.

The ONNX file is exported once per checkpoint and error gate and kept in the user's cache
(``$POSEFIX_CACHE``, else ``$XDG_CACHE_HOME/posefix``, else ``~/.cache/posefix``), named by
the checkpoint file's SHA-256, the gate, the versions and the source files that shape the
export (:data:`EXPORT_SOURCES`: a change to them in a working copy exports again, not only a
new release), so that a user never runs ``posefix export`` by hand and a changed checkpoint
is exported again; its int8 copy sits beside it, named by the export, the calibration
files, ``quantize.py`` and ONNX Runtime's version.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import GateOverride

__all__ = ["BACKENDS", "cache_dir", "cached_int8", "cached_onnx", "choose_backend",
           "cuda_available", "default_threads", "int8_without_saturation"]

#: The package's modules whose code is in the exported graph (or writes it): part of the
#: cache key, so that a stale export is never run after they change.
EXPORT_SOURCES = ("model.py", "backbones.py", "heatmaps.py", "export.py", "onnx_runner.py")

#: ``--backend`` values: ``auto`` picks one of the others (see :func:`choose_backend`).
BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")


def choose_backend(backend: str, device: Any = "auto") -> str:
    """The backend that runs: ``auto`` is ``onnxruntime`` on the CPU where it is installed
    (int8 where the shipped calibration set fits the model: :func:`cached_int8`), else
    ``torch``; any other name as it is (checked)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    dev = str(device)
    cuda = dev.startswith("cuda") or (dev == "auto" and cuda_available())
    if cuda or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return "onnxruntime"


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, asked only where a CUDA driver with a device is
    present, so that a machine without one never imports torch for the answer."""
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


def cached_onnx(checkpoint: str | Path, error_gate: float | GateOverride | None = None,
                opset: int = 17) -> Path:
    """The ONNX export of ``checkpoint`` with ``error_gate`` (None: the checkpoint's; a
    float: its threshold; see :class:`~posefix.config.GateOverride`), from
    the cache, exported there first if missing (atomically: concurrent runs are safe).
    Where the cache cannot be written, the export goes to a temporary folder instead."""
    from . import __version__

    checkpoint = Path(checkpoint)
    gate = "ckpt" if error_gate is None else repr(GateOverride.of(error_gate))
    key = hashlib.sha256(f"{_file_hash(checkpoint)}|{gate}|{opset}|{__version__}|"
                         f"{importlib.metadata.version('torch')}|"
                         f"{_source_hash(EXPORT_SOURCES)}".encode()).hexdigest()[:24]
    path = cache_dir() / "onnx" / f"{checkpoint.stem}-{key}.onnx"
    if path.is_file():
        return path
    from .export import export_onnx  # torch, only to export

    return _write_or_temporary(
        path, lambda out: export_onnx(checkpoint, out, opset=opset, error_gate=error_gate))


def cached_int8(export: str | Path, required: bool = False) -> Path | None:
    """The int8 copy of a float32 export (:func:`posefix.quantize.quantize_onnx`, calibrated
    on the calibration set shipped with the package), from the cache next to it, made there
    first if missing. None where that set does not fit the model (another crop size or
    keypoint layout); with ``required`` that is a ``ValueError`` instead."""
    from .quantize import CALIBRATION_DIR

    export = Path(export)
    cal_hash = "|".join(_file_hash(f) for f in sorted(CALIBRATION_DIR.iterdir()))
    key = hashlib.sha256(f"{export.name}|{cal_hash}|{_source_hash(('quantize.py',))}|"
                         f"{importlib.metadata.version('onnxruntime')}".encode()).hexdigest()
    path = export.with_name(f"{export.stem}-int8-{key[:16]}.onnx")
    if path.is_file():
        return path
    from .quantize import quantize_onnx, shipped_calibration

    batches = shipped_calibration(export, required)
    if batches is None:
        return None
    return _write_or_temporary(path, lambda out: quantize_onnx(export, out, batches))


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
