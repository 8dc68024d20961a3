"""A clip on its way through the engine: where it came from, its frames, and what each stage has added.

Inputs are the video files under INPUT (any container ffmpeg reads), each with optional sidecars next to it:
``<name>.json`` holding ``{"full", "background", "foregrounds": [...]}`` captions, and/or ``<name>.txt`` holding
the foreground object's name (one per line for several), the text prompt of a text-prompted segmenter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...formats import VIDEO_SUFFIXES, read_json_object
from ..fit import probe

CAPTION_KEYS = ("full", "background", "foregrounds")


class Reject(Exception):
    """A clip that cannot become a sample: the reason goes to rejects.jsonl, the run goes on."""

    def __init__(self, reason: str, scores: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.scores = scores or {}


@dataclass
class Clip:
    id: str  # the sample's directory name in the dataset
    source: str  # the input path relative to INPUT
    path: str  # absolute path of the input video
    object_names: list[str] = field(default_factory=list)  # from <name>.txt: the segmenter's text prompts
    prompts: dict[str, Any] | None = None  # from <name>.json, or the captioner
    frames: np.ndarray | None = None  # (T, H, W, 3) float32 in [0, 1]
    fps: float = 0.0
    source_frames: list[int] = field(default_factory=list)  # indices into the input's decoded frames
    masks: list[np.ndarray] = field(default_factory=list)  # per foreground, (T, H, W) bool
    alphas: list[np.ndarray] = field(default_factory=list)  # per foreground, (T, H, W) float32
    foregrounds: list[np.ndarray] = field(default_factory=list)  # per foreground, straight (T, H, W, 3)
    background: np.ndarray | None = None  # (T, H, W, 3)
    scores: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    rejected: str | None = None  # the reason, once a stage has rejected the clip
    record: dict[str, Any] | None = None  # the metadata line, once the sample is written

    def reject(self, reason: str, scores: dict[str, Any] | None = None) -> None:
        self.rejected = reason
        self.scores.update(scores or {})
        self.frames = self.background = None  # rejected clips travel light
        self.masks, self.alphas, self.foregrounds = [], [], []


def sample_id(source: str) -> str:
    """A stable directory name for an input path: readable stem plus a hash of the full relative path."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(source).with_suffix("")))[-48:].strip("_") or "clip"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def find_videos(root: str | Path) -> list[Path]:
    """Video files under `root` (recursively, sorted); raises when there are none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"INPUT {root} is not a directory; pass a directory of videos")
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not videos:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {root}")
    return videos


def read_sidecars(video: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The captions from ``<name>.json`` (None when absent) and object names from ``<name>.txt``.

    Raises :class:`Reject` for a sidecar that is not valid, naming what is wrong.
    """
    prompts = None
    meta = video.with_suffix(".json")
    if meta.is_file():
        try:
            data = read_json_object(meta, f"it must hold an object with keys {list(CAPTION_KEYS)}")
        except ValueError as e:
            raise Reject(f"sidecar {str(e).replace(str(meta), meta.name)}") from None
        missing = [k for k in CAPTION_KEYS if k not in data]
        if missing:
            raise Reject(f"sidecar {meta.name} lacks key(s) {missing}; it needs {list(CAPTION_KEYS)}")
        fgs = data["foregrounds"]
        if isinstance(fgs, str):
            fgs = [fgs]
        texts = [data["full"], data["background"], *fgs] if isinstance(fgs, list) else []
        if not fgs or not all(isinstance(t, str) and t.strip() for t in texts):
            raise Reject(f"sidecar {meta.name}: full, background and each foreground must be non-empty strings")
        prompts = {"full": data["full"], "background": data["background"], "foregrounds": list(fgs)}
    names = []
    txt = video.with_suffix(".txt")
    if txt.is_file():
        names = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise Reject(f"sidecar {txt.name} is empty; write the foreground object's name in it")
    return prompts, names


def discover(root: str | Path) -> list[Clip | tuple[Clip, Reject]]:
    """One Clip per input video; a clip whose sidecar or location is bad comes paired with its Reject."""
    root = Path(root).expanduser()
    real_root = root.resolve()
    out: list[Clip | tuple[Clip, Reject]] = []
    for video in find_videos(root):
        source = video.relative_to(root).as_posix()
        clip = Clip(id=sample_id(source), source=source, path=str(video.absolute()))
        if not video.resolve().is_relative_to(real_root):
            out.append((clip, Reject(f"{source} links outside INPUT; copy the file in instead")))
            continue
        try:
            clip.prompts, clip.object_names = read_sidecars(video)
        except Reject as r:
            out.append((clip, r))
            continue
        out.append(clip)
    return out


def probe_fps(path: str | Path) -> float:
    """The video's frame rate (:func:`layert2v.data.fit.probe`); a Reject when it is not a readable video."""
    try:
        return probe(path)[1]
    except (ValueError, OSError) as e:
        raise Reject(str(e)) from None
