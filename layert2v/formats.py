"""The file names and format tags of everything layert2v writes or reads, defined once; which kind of directory a
path is (and what its files record, for ``layert2v info``); and how their JSON files are read."""

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
LAYER_WEIGHTS_FILE = "layer_weights.safetensors"  # the layer-weights file a layered stage writes in output_dir/final

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


def directory_info(path: str | Path) -> dict[str, Any]:
    """What ``layert2v info`` prints: the directory's kind (:func:`directory_kind`) and what its files record (a
    video's manifest, a pipeline's file, a checkpoint's progress, the component configs' sizes); a one-line error
    for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    info: dict[str, Any] = {"path": str(path)}
    kind = directory_kind(path)
    if kind == "layered video":
        info["kind"] = "layered video"
        info.update(read_json_object(path / VIDEO_MANIFEST))
    elif kind == PIPELINE:
        info["kind"] = "layert2v pipeline"
        info.update(read_json_object(path / PIPELINE_FILE))
        info["transformer"] = _config_summary(path / "transformer" / "config.json")
        info["vae"] = _config_summary(path / "vae" / "config.json")
    elif kind == WAN:
        info["kind"] = "diffusers pipeline (Wan2.1 layout)"
        info["transformer"] = _config_summary(path / "transformer" / "config.json")
    elif kind == "checkpoint":
        ckpt = path / "checkpoint" if (path / "checkpoint").is_dir() else path
        progress = read_json_object(ckpt / CHECKPOINT_PROGRESS)
        info["kind"] = "training checkpoint"
        info.update({"stage": progress.get("stage"), "step": progress.get("step"),
                     "steps": (progress.get("config") or {}).get("train", {}).get("steps")})
    elif kind == "stage output":
        info["kind"] = "training stage output (no pipeline yet: use it as the next stage's init)"
        for part in ("transformer", "vae", "alpha_path"):
            if (path / part / "config.json").is_file():
                info[part] = _config_summary(path / part / "config.json")
    else:
        raise ValueError(f"{path} is not a layered video, a pipeline, a stage output or a training checkpoint")
    return info


def _config_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"missing": str(path)}
    cfg = read_json_object(path)
    keys = ("_class_name", "num_layers", "num_attention_heads", "attention_head_dim", "text_dim", "max_foregrounds",
            "layer_text_embedding", "z_dim", "base_dim", "rank")
    return {k: cfg[k] for k in keys if k in cfg}
