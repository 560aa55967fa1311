"""posefix: model-agnostic human pose refinement (PoseFix, Moon et al., CVPR 2019)."""

from .spec import KeypointSpec, available_specs, load_spec

__version__ = "0.1.0"

__all__ = ["KeypointSpec", "__version__", "available_specs", "load_spec"]
