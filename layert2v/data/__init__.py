"""Data: the procedural layered world (streamed or written to disk), the on-disk dataset format, and fitting
clips to a training shape. The VidLayer reader is layert2v.data.vidlayer (not imported here, so that
``python -m layert2v.data.vidlayer DIR`` runs it cleanly)."""

from .folder import FolderDataset, write_folder
from .resample import ClipShape
from .source import ClipSource
from .world import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    WorldDataset,
    generate_clip,
    generate_clip_with_spec,
    heldout_prompts,
    parse_prompt,
    write_dataset,
)

__all__ = ["BACKGROUNDS", "COLOURS", "MOTIONS", "SHAPES", "ClipShape", "ClipSource", "FolderDataset", "WorldDataset",
           "generate_clip", "generate_clip_with_spec", "heldout_prompts", "parse_prompt", "write_dataset",
           "write_folder"]
