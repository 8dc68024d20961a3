"""The VidLayer data engine: raw videos in, a layered training set (layert2v.data.folder format) out.

Five stages, each one small interface (:mod:`.stages`) with a real-model backend (:mod:`.models`,
:mod:`.judge`) and a weight-free one; :func:`.build.build` runs them in this process or on Ray Data.
See docs/DATA_ENGINE.md.
"""

from .build import Summary, build
from .clip import Clip, Reject
from .config import EngineConfig, load_config, parse_config
from .stages import Captioner, Judge, Matter, Remover, Segmenter

__all__ = ["Captioner", "Clip", "EngineConfig", "Judge", "Matter", "Reject", "Remover", "Segmenter", "Summary",
           "build", "load_config", "parse_config"]
