"""posefix: model-agnostic human pose refinement (PoseFix, Moon et al., CVPR 2019)."""

from typing import Any

from .spec import KeypointSpec, available_specs, load_spec

__version__ = "0.1.0"

__all__ = ["KeypointSpec", "RefinedPoses", "Refiner", "__version__", "available_specs", "load_spec"]


def __getattr__(name: str) -> Any:
    """``posefix.Refiner`` and ``posefix.RefinedPoses``, imported on first use (the refiner
    module loads OpenCV and ONNX Runtime; torch only for ``backend="torch"``)."""
    if name in ("Refiner", "RefinedPoses"):
        from . import refiner

        return getattr(refiner, name)
    raise AttributeError(f"module 'posefix' has no attribute {name!r}")
