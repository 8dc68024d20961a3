"""Data: the procedural layered world (streamed or written to disk) and the on-disk dataset format."""

from .folder import FolderDataset, write_folder
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

__all__ = ["BACKGROUNDS", "COLOURS", "MOTIONS", "SHAPES", "FolderDataset", "WorldDataset", "generate_clip",
           "generate_clip_with_spec", "heldout_prompts", "parse_prompt", "write_dataset", "write_folder"]
