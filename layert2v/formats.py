"""The file names and format tags of everything layert2v writes, defined once."""

VIDEO_FORMAT = "layert2v-layered-video"  # manifest.json "format" of a saved LayeredVideo
VIDEO_VERSION = 1
VIDEO_MANIFEST = "manifest.json"

PIPELINE_FORMAT = "layert2v-pipeline"  # layert2v.json "format" of a saved pipeline
PIPELINE_FILE = "layert2v.json"

LAYER_WEIGHTS_FORMAT = "layert2v-layer-weights"  # safetensors metadata of a LayerT2V layer-weights file

REPORT_FILE = "report.json"  # what marks an eval report directory
CHECKPOINT_PROGRESS = "progress.json"  # what marks a training checkpoint directory
