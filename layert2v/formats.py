"""The file names and format tags of everything layert2v writes or reads, defined once; which kind of model
directory a path is; and how their JSON files are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VIDEO_FORMAT = "layert2v-layered-video"  # manifest.json "format" of a saved LayeredVideo
VIDEO_VERSION = 1
VIDEO_MANIFEST = "manifest.json"

PIPELINE_FORMAT = "layert2v-pipeline"  # layert2v.json "format" of a saved pipeline
PIPELINE_FILE = "layert2v.json"
MODEL_INDEX = "model_index.json"  # what marks a diffusers pipeline directory, e.g. a Wan2.1-T2V download

LAYER_WEIGHTS_FORMAT = "layert2v-layer-weights"  # safetensors metadata of a LayerT2V layer-weights file

# suffixes of the video files layert2v reads (--keep, the data engine's footage): any container FFmpeg decodes
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif")

REPORT_FILE = "report.json"  # what marks an eval report directory
CHECKPOINT_PROGRESS = "progress.json"  # what marks a training checkpoint directory

PIPELINE, WAN = "pipeline", "wan"  # the kinds of model directory


def model_kind(directory: str | Path) -> str | None:
    """:data:`PIPELINE` for a directory saved by layert2v (it has layert2v.json), :data:`WAN` for a Wan2.1-T2V
    diffusers directory (model_index.json, no layert2v.json), None for anything else."""
    directory = Path(directory)
    if (directory / PIPELINE_FILE).is_file():
        return PIPELINE
    if (directory / MODEL_INDEX).is_file():
        return WAN
    return None


def read_json_object(path: str | Path, fix: str = "") -> dict[str, Any]:
    """The JSON object stored in ``path``; a one-line ValueError naming the file (and ``fix``, what to do about it)
    when it is not valid JSON or holds something other than an object."""
    then = f"; {fix}" if fix else ""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}){then}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object{then}")
    return data


def directory_kind(path: str | Path) -> str | None:
    """What a directory holds, from the file that marks it: "layered video" (manifest.json), :data:`PIPELINE` or
    :data:`WAN` (a model directory, as :func:`model_kind` tells), "checkpoint" (a training checkpoint,
    or a stage output directory holding one), "stage output" (component folders without a pipeline file); None for
    anything else."""
    path = Path(path)
    if (path / VIDEO_MANIFEST).is_file():
        return "layered video"
    kind = model_kind(path)
    if kind is not None:
        return kind
    if (path / "checkpoint" / CHECKPOINT_PROGRESS).is_file() or (path / CHECKPOINT_PROGRESS).is_file():
        return "checkpoint"
    if any((path / part / "config.json").is_file() for part in ("vae", "alpha_path", "transformer")):
        return "stage output"
    return None
