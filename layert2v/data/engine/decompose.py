"""One video file through the engine's stages into one layered directory: ``layert2v decompose VIDEO --method
engine`` (docs/EDITING.md). The clip keeps its own size and frame count (or the config's ``size`` / ``frames`` /
``fps``), and any length goes through in bounded memory, in two passes over the file:

1. ``SAMPLE`` frames spread evenly over the clip are decoded. A captioner other than ``sidecar`` captions them
   when no prompts were given. The segmenter and remover that model the clip as a whole get them first
   (``prepare``: the weight-free backends' static-camera clean plate), and the sampled masks are checked: a clip the
   backends cannot handle (the camera moves, no object is found, an object fills the frame) is refused here with
   its reason, before anything is written.
2. The clip is decoded again, ``WINDOW`` frames at a time. Each window goes through segmentation, matting and
   removal (:class:`~layert2v.data.engine.build.Engine`'s stages, as ``data build`` runs them on a whole clip),
   is written to the output directory (:class:`~layert2v.io.layered_dir.LayeredWriter`) and scored
   (:class:`~layert2v.data.engine.quality.Scores`, the weight-free checks of ``data build``).

A window only ever holds WINDOW frames of each layer, so memory depends on the frame size, not the clip's length.
Scores that miss the config's quality bar do not stop the result: they are written into the manifest
(``engine.failures``) and returned, for the caller to say. The judge stage (key-frame scoring that trims a
training sample) is not run.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...formats import VIDEO_MANIFEST
from ...io.codec import iter_frames
from ...io.layered_dir import LayeredWriter
from ...output_dirs import check_output_directory
from ...video import LayeredVideo
from ..fit import frame_window, probe, resize_frames
from . import quality
from .build import Engine, validate
from .clip import Reject
from .config import EngineConfig
from .stages import backend_class

SAMPLE = 24  # frames spread over the clip that the static-camera backends see as a whole (pass 1)
WINDOW = 16  # frames per window of pass 2
NO_CAPTIONS = "no captions"
STAGES_RUN = ("segmentation", "matting", "removal")


@dataclass
class Decomposition:
    """What :func:`decompose_video` wrote and measured."""

    path: Path
    frames: int
    size: tuple[int, int]  # (width, height)
    fps: float
    num_foregrounds: int
    prompts: dict[str, Any]
    captions: str  # "given", the captioner backend's name, or "no captions"
    backends: dict[str, dict[str, Any]]  # stage -> {"backend": name, every constructor setting}
    scores: dict[str, Any]
    failures: list[str] = field(default_factory=list)  # the quality bar's complaints (the result is still written)
    seconds: float = 0.0


def backend_settings(config: EngineConfig, stage: str) -> dict[str, Any]:
    """``{"backend": name, **settings}``: the stage's options over its class's defaults, as the manifest records."""
    name, options = config.backend(stage), config.options(stage)
    params = inspect.signature(backend_class(stage, name).__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.name != "self" and p.default is not inspect.Parameter.empty
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return {"backend": name, **defaults, **options}


def _rate(fps: float) -> float | int:
    return int(fps) if float(fps).is_integer() else round(fps, 3)


def _resized(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (frames.shape[2], frames.shape[1]) == size:
        return frames
    return np.clip(resize_frames(frames, size[1], size[0], crop=False), 0.0, 1.0)


def decompose_video(video: str | Path, out: str | Path, config: EngineConfig, *,
                    prompts: dict[str, Any] | None = None, object_names: list[str] | None = None,
                    metadata: dict[str, Any] | None = None, overwrite: bool = False, progress: bool = True,
                    on_frames: Callable[[int, int], None] | None = None) -> Decomposition:
    """Decompose the video file ``video`` with the engine's backends into the layered directory ``out``.

    ``object_names`` are the foregrounds to find (their number is the number of layers, one when empty; a
    text-prompted segmenter reads them). ``prompts`` (``full``, ``background``, ``foregrounds``; any of them) go to
    the manifest as given; without them a configured captioner writes them, or the manifest says "no captions".
    ``metadata`` joins the manifest (its keys win). ``on_frames(done, total)`` follows pass 2. Bad input, and a clip
    the backends cannot handle, raise a one-line ValueError before anything is written.
    """
    start = time.perf_counter()
    video = Path(video)
    names = [n for n in (object_names or []) if n.strip()]
    validate(config)  # every backend name and option, before the file is read
    out = check_output_directory(out, overwrite, marker=VIDEO_MANIFEST)
    total, source_fps, _, _ = probe(video)  # not a video: one line
    try:
        indices = frame_window(total, source_fps, config.frames, config.fps, exact_rate=True)
    except ValueError as e:
        raise ValueError(f"{video.name} {e}; pass fewer --frames") from None
    if len(indices) < config.quality.min_frames:
        raise ValueError(f"{video.name} has {len(indices)} frame(s); decompose takes a video of at least "
                         f"{config.quality.min_frames}")
    fps = _rate(config.fps or source_fps)
    sample_at = sorted({indices[i] for i in np.linspace(0, len(indices) - 1, min(SAMPLE, len(indices))).round()
                        .astype(int)})
    sample = next(_decoded(video, sample_at, len(sample_at)))
    source_size = (sample.shape[2], sample.shape[1])
    size = tuple(config.size) if config.size else source_size
    if size[0] % 2 or size[1] % 2:
        even = f"{size[0] // 2 * 2}x{size[1] // 2 * 2}"
        raise ValueError(f"{video.name} is {size[0]}x{size[1]}; the layer files need an even width and height: pass "
                         f"--size {even}")
    sample = _resized(sample, size)

    engine = Engine(config, out)
    with refusals(video):
        prompts, captions, names = _captions(engine, sample, prompts, names)
        engine.load_all(STAGES_RUN)
        _prepare(engine, sample, names)
    del sample
    k = max(1, len(names))
    used = (("captions",) if captions not in ("given", NO_CAPTIONS) else ()) + STAGES_RUN
    backends = {stage: backend_settings(config, stage) for stage in used}
    caption = str(prompts.get("background") or "")
    scores = quality.Scores()
    bar = tqdm(total=len(indices), unit="frame", desc="decompose (engine)", disable=not progress)
    done = 0
    try:
        with LayeredWriter(out, k, len(indices), size, fps, overwrite) as writer, refusals(video):
            for chunk in _decoded(video, indices, WINDOW):
                chunk = _resized(chunk, size)
                masks = engine.segment(chunk, names)
                alphas, foregrounds = engine.matte(chunk, masks)
                part = LayeredVideo(full=chunk, background=engine.remove(chunk, masks, caption),
                                    foregrounds=foregrounds, alphas=alphas, fps=fps)
                writer.add(part)
                scores.add(part)
                bar.update(len(chunk))
                done += len(chunk)
                if on_frames is not None:
                    on_frames(done, len(indices))
            measured = scores.scores()
            if (holes := engine.plate_holes()) is not None:
                measured["plate_holes"] = holes
            failures = quality.weight_free_failures(measured, config.quality)
            seconds = time.perf_counter() - start
            record = {"backends": backends, "window": WINDOW, "sample_frames": len(sample_at), "scores": measured,
                      "failures": failures,
                      "judge": "not run (decompose keeps every frame; the weight-free checks ran)"}
            manifest = {"method": "engine", "engine": record, "captions": captions,
                        "given": {"full": {"from": str(video.absolute()), "layer": "full"}},
                        "input": {"source": video.name, "source_size": list(source_size), "source_frames": total,
                                  "source_fps": source_fps, "frame_indices": indices, "size": list(size),
                                  "frames": len(indices), "resized": size != source_size},
                        "timings": {"total_s": round(seconds, 3)}, **(metadata or {})}
            writer.finish(prompts, None, manifest)
    finally:
        bar.close()
    return Decomposition(out, len(indices), size, fps, k, prompts, captions, backends, measured, failures, seconds)


@contextlib.contextmanager
def refusals(video: Path) -> Iterator[None]:
    """A backend's :class:`Reject` (a clip it cannot handle) as a one-line ValueError naming the file."""
    try:
        yield
    except Reject as r:
        raise ValueError(f"{video.name}: {r.reason}") from None


def _captions(engine: Engine, sample: np.ndarray, prompts: dict[str, Any] | None,
              names: list[str]) -> tuple[dict[str, Any], str, list[str]]:
    """(prompts, where they came from, object names): as given; else the captioner's (not ``sidecar``: a single
    file has no sidecar), whose foregrounds name the objects when none were given; else none."""
    if prompts:
        return prompts, "given", names
    if engine.config.backend("captions") == "sidecar":
        return {}, NO_CAPTIONS, names
    engine.load_all(["captions"])
    prompts = engine.backend("captions").caption(sample, names)
    return prompts, engine.config.backend("captions"), names or list(prompts.get("foregrounds") or [])


def _prepare(engine: Engine, sample: np.ndarray, names: list[str]) -> None:
    """Pass 1: the backends that model the clip as a whole see the sample; its masks must find an object that
    leaves background around it (the config's coverage bar), or the clip is refused."""
    q, k = engine.config.quality, max(1, len(names))
    segmenter, remover = engine.backend("segmentation"), engine.backend("removal")
    if callable(getattr(segmenter, "prepare", None)):
        segmenter.prepare(sample, names)
    masks = engine.segment(sample, names)
    for i, mask in enumerate(masks, start=1):
        share = float(mask.mean())
        which = f"foreground {i}" if k > 1 else "the object"
        if share > q.max_coverage:
            raise Reject(f"{which} fills the frame: it covers {share:.0%} of the sampled frames (more than "
                         f"max_coverage {q.max_coverage:g}), leaving too little background to see around it")
        if share < q.min_coverage:
            raise Reject(f"no object found: {which} covers {share:.2%} of the sampled frames (less than "
                         f"min_coverage {q.min_coverage:g})")
    if callable(getattr(remover, "prepare", None)):
        remover.prepare(sample, masks)


def _decoded(video: Path, indices: list[int], chunk: int) -> Iterator[np.ndarray]:
    """:func:`~layert2v.io.codec.iter_frames`, a damaged or truncated file as a one-line ValueError."""
    import av

    try:
        yield from iter_frames(video, indices, chunk)
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise ValueError(f"cannot decode {video.name} to the end ({reason}); the file is truncated or damaged: "
                         "re-export it") from None
