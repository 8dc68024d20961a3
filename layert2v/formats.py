"""The file names and format tags of everything layert2v writes, defined once."""

from pathlib import Path

VIDEO_FORMAT = "layert2v-layered-video"  # manifest.json "format" of a saved LayeredVideo
VIDEO_VERSION = 1
VIDEO_MANIFEST = "manifest.json"

PIPELINE_FORMAT = "layert2v-pipeline"  # layert2v.json "format" of a saved pipeline
PIPELINE_FILE = "layert2v.json"

LAYER_WEIGHTS_FORMAT = "layert2v-layer-weights"  # safetensors metadata of a LayerT2V layer-weights file

REPORT_FILE = "report.json"  # what marks an eval report directory
CHECKPOINT_PROGRESS = "progress.json"  # what marks a training checkpoint directory


def directory_kind(path: str | Path) -> str | None:
    """What a directory holds, from the file that marks it: "layered video" (manifest.json), "pipeline" (a saved
    layert2v pipeline), "wan" (a Wan2.1 diffusers directory: model_index.json), "checkpoint" (a training checkpoint,
    or a stage output directory holding one), "stage output" (component folders without a pipeline file); None for
    anything else."""
    path = Path(path)
    if (path / VIDEO_MANIFEST).is_file():
        return "layered video"
    if (path / PIPELINE_FILE).is_file():
        return "pipeline"
    if (path / "model_index.json").is_file():
        return "wan"
    if (path / "checkpoint" / CHECKPOINT_PROGRESS).is_file() or (path / CHECKPOINT_PROGRESS).is_file():
        return "checkpoint"
    if any((path / part / "config.json").is_file() for part in ("vae", "alpha_path", "transformer")):
        return "stage output"
    return None
