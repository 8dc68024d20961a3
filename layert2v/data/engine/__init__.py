"""The VidLayer data engine: raw videos in, a layered training set (layert2v.data.folder format) out.

Five stages, each one small interface (:mod:`.stages`) with a real-model backend (:mod:`.backends`,
:mod:`.judge`) and a weight-free one; :func:`.build.build` runs them in this process or on Ray Data.
See docs/DATA_ENGINE.md. Nothing is imported here, so the CLI's argument checks stay free of torch and Ray:
import from the modules (``from layert2v.data.engine.build import build``).
"""
