"""The project's dataset format on disk, and :class:`FolderDataset`, the loader for real (non-procedural) data.

A dataset is a directory holding ``metadata.jsonl`` and one sub-directory per sample written by
:meth:`LayeredVideo.save <layert2v.video.LayeredVideo.save>`::

    dataset/
      metadata.jsonl      one JSON object per line, one line per sample
      000000/             manifest.json, full.mp4, background.mp4, foreground_1.mov, ... (see docs/OUTPUT.md)
      000001/
      ...

Each line has ``{"id", "path", "prompts", "num_foregrounds", "frames", "size"}``: ``path`` is the sample's
directory relative to the dataset directory, ``prompts`` is ``{"full", "background", "foregrounds": [...]}``,
``frames`` the frame count and ``size`` ``[width, height]``. Extra keys are allowed and kept (the world writes
``seed`` and ``attributes``). Any source of layered videos can be converted by producing this layout, e.g. with
:func:`write_folder`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..output_dirs import write_text_atomic
from ..video import LayeredVideo
from .fit import ClipShape
from .source import ClipSource

METADATA = "metadata.jsonl"
REQUIRED_KEYS = ("id", "path", "prompts", "num_foregrounds", "frames", "size")


def make_record(video: LayeredVideo, sample_id: str, path: str, **extra: Any) -> dict[str, Any]:
    """The metadata line for one sample."""
    return {"id": sample_id, "path": path, "prompts": video.prompts, "num_foregrounds": video.num_foregrounds,
            "frames": video.num_frames, "size": list(video.size), **extra}


def write_folder(
    directory: str | Path,
    videos: Iterable[LayeredVideo | tuple[LayeredVideo, dict[str, Any]]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write layered videos as a dataset: sample ``i`` goes to ``directory/{i:06d}``. Items may be
    ``(video, extra)`` pairs, whose ``extra`` keys are added to the sample's metadata line.

    ``metadata.jsonl`` is written last (via a temporary file and a rename), so a dataset with a metadata file is
    complete. Refuses to touch a directory that already has one unless ``overwrite``.
    """
    root = Path(directory).expanduser()
    meta = root / METADATA
    if meta.exists() and not overwrite:
        raise FileExistsError(f"{meta} exists; pass overwrite=True or choose another directory")
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i, item in enumerate(videos):
        video, extra = item if isinstance(item, tuple) else (item, {})
        sample_id = f"{i:06d}"
        video.save(root / sample_id, overwrite=overwrite)
        records.append(make_record(video, sample_id, sample_id, **extra))
    write_text_atomic(meta, "".join(json.dumps(r) + "\n" for r in records))
    return root


def read_metadata(directory: str | Path) -> list[dict[str, Any]]:
    """The records of a dataset directory, checked for the required keys."""
    meta = Path(directory).expanduser() / METADATA
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: not a layert2v dataset directory (see layert2v.data.folder)")
    records = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta}:{n} is not valid JSON: {e}") from e
        missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"{meta}:{n} lacks key(s) {missing}")
        records.append(record)
    return records


class FolderDataset(ClipSource):
    """A dataset directory (see the module docstring) as a map-style dataset of LayeredVideo objects, and as the
    trainer's clip function ``dataset(index, k)`` (see :class:`~layert2v.data.source.ClipSource`).

    Videos are decoded on access. Prompts come from the sample's manifest, or from its metadata line where the
    manifest has none. With ``shape``, each clip is fitted to it (frame window, resize and centre-crop: see
    :mod:`layert2v.data.fit`); without, clips come as stored. Use ``DataLoader(..., collate_fn=list)``:
    items are LayeredVideo objects, not tensors.
    """

    def __init__(self, directory: str | Path, shape: ClipShape | None = None):
        self.directory = Path(directory).expanduser()
        self.records = read_metadata(self.directory)
        self.shape = shape

    def __len__(self) -> int:
        return len(self.records)

    def num_foregrounds(self, index: int) -> int:
        """Sample ``index``'s foreground count, from the metadata (no decoding): for grouping batches by K."""
        return int(self.records[index]["num_foregrounds"])

    def load(self, index: int, draw: int) -> LayeredVideo:
        """Sample ``index``, fitted to the shape (frame window ``draw``) when there is one."""
        record = self.records[index]
        video = LayeredVideo.load(self.directory / record["path"])
        if not video.prompts:
            video.prompts = dict(record["prompts"])
        return self.fit(video, draw)
