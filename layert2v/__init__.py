"""layert2v: layered text-to-video generation (LayerT2V / LayerFlow on diffusers' Wan2.1)."""

from .layout import LayerLayout, Segment
from .preflight import BUILTIN_MODEL
from .video import LayeredVideo

__version__ = "0.1.0"

__all__ = ["BUILTIN_MODEL", "LayerLayout", "Segment", "LayeredVideo", "__version__"]
