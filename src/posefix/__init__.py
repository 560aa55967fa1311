"""posefix: model-agnostic human pose refinement (PoseFix, Moon et al., CVPR 2019)."""

from typing import Any

from .spec import KeypointSpec, available_specs, load_spec

__version__ = "0.1.0"

__all__ = ["KeypointSpec", "Refiner", "__version__", "available_specs", "load_spec"]


def __getattr__(name: str) -> Any:
    """``posefix.Refiner``, imported on first use (it brings in torch)."""
    if name == "Refiner":
        from .refiner import Refiner

        return Refiner
    raise AttributeError(f"module 'posefix' has no attribute {name!r}")
