"""Layered editing: pull layers out of a video, keep some layers of a saved one and make the rest again.

Every workflow here is one call of the pipeline with ``conditions=``: the kept layers are given clean (LayerFlow's
variants) and come out of the call exactly as given. A video file is fitted to what the model takes by
:func:`layert2v.data.fit.fit_video`; this module picks the layers to keep from a :class:`~layert2v.video.LayeredVideo`
(:func:`given_layers`) and regenerates one foreground of a saved video (:func:`regenerate`). Saving keeps a kept
layer's files as they were (see :func:`layert2v.io.layered_dir.kept_files`), so it stays bit-identical on disk too.
See docs/EDITING.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .layout import ALPHA, BACKGROUND, FOREGROUND, FULL, LayerLayout, Segment
from .video import LayeredVideo

if TYPE_CHECKING:
    from .pipeline import LayerT2VPipeline
    from .trajectory import Trajectories

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")


# ------------------------------------------------------------------------------------------------ video in
def is_video_file(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in VIDEO_SUFFIXES


# ------------------------------------------------------------------------------------------------- layers
def keepable(name: str, num_foregrounds: int) -> Segment:
    """The segment a ``--keep NAME`` names: full, background or foreground_k of this many foregrounds (an alpha comes
    with its foreground); a one-line ValueError naming the choices for anything else."""
    names = [FULL, BACKGROUND, *(LayerLayout.foreground_name(k) for k in range(1, num_foregrounds + 1))]
    try:
        segment = Segment.from_name(name)
    except ValueError:
        raise ValueError(f"unknown layer {name!r}; keep one of {', '.join(names)}") from None
    if segment.kind == ALPHA:
        raise ValueError(f"keep {segment.partner} to keep {name}: a foreground and its alpha are kept together")
    if name not in names:
        raise ValueError(f"there is no {name} with {num_foregrounds} foreground(s); keep one of {', '.join(names)}")
    return segment


def parse_keep_name(text: str) -> str:
    """The LAYER of a ``--keep LAYER=SOURCE`` argument; a one-line ValueError when it has no such form."""
    name, sep, source = text.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise ValueError(f"--keep takes LAYER=SOURCE (e.g. background=out/earlier or background=clip.mp4), got "
                         f"{text!r}")
    return name.strip()


def given_layers(source: LayeredVideo, keep: Iterable[str]) -> dict[str, np.ndarray]:
    """The layers of ``source`` named in ``keep`` as ``conditions=`` for the pipeline (full, background,
    foreground_k; a foreground brings its alpha along)."""
    out: dict[str, np.ndarray] = {}
    for name in keep:
        segment = keepable(name, source.num_foregrounds)
        if segment.kind == FULL:
            out[FULL] = source.full
        elif segment.kind == BACKGROUND:
            out[BACKGROUND] = source.background
        else:
            out[name] = source.foregrounds[segment.index - 1]
            out[segment.partner] = source.alphas[segment.index - 1]
    return out


def carry_sources(video: LayeredVideo, source: LayeredVideo, names: Iterable[str]) -> None:
    """Let ``video`` save ``names`` by copying the files ``source`` read them from (when it was loaded from a saved
    directory): see :func:`layert2v.io.layered_dir.kept_files`, which copies only what is still bit-identical."""
    for name in names:
        if name in source.sources:
            video.sources[name] = source.sources[name]


def origin(source: LayeredVideo) -> str:
    """Where a layered video came from, for the manifest: its directory, or "in memory"."""
    directories = {str(s.directory) for s in source.sources.values()}
    return directories.pop() if len(directories) == 1 else "in memory"


def full_prompt(background_prompt: str, foreground_prompts: list[str]) -> str:
    """The full prompt built from the layer prompts, in the form the CLI splits: "fg_1, fg_2 and fg_3 over bg"."""
    from .data.captions import join_objects

    return f"{join_objects(list(foreground_prompts))} over {background_prompt}"


def regeneration_plan(source_foregrounds: int, layer: str) -> tuple[int, list[str]]:
    """(k, layers kept) for regenerating ``layer`` of a video with this many foregrounds: the background and every
    other foreground (with its alpha). Refuses anything but an existing foreground_k, in one line."""
    names = [LayerLayout.foreground_name(k) for k in range(1, source_foregrounds + 1)]
    try:
        segment = Segment.from_name(layer)
    except ValueError:
        segment = None
    if segment is not None and segment.kind == ALPHA and segment.partner in names:
        raise ValueError(f"regenerate {segment.partner}: its alpha {layer} is made again with it")
    if segment is None or segment.kind != FOREGROUND or layer not in names:
        raise ValueError(f"cannot regenerate {layer!r}: this video's foregrounds are {', '.join(names)}; "
                         "--regenerate one of them")
    return segment.index, [BACKGROUND, *(n for n in names if n != layer)]


def regenerate(pipe: LayerT2VPipeline, source: LayeredVideo, layer: str, prompt: str, *,
               trajectories: Trajectories | str | Path | None = None, seed: int = 0,
               full_prompt_text: str | None = None, **call_kwargs: Any) -> LayeredVideo:
    """Make foreground ``layer`` of ``source`` again from ``prompt``, keeping the background and every other
    foreground with its alpha bit-identical; the layer's alpha and the full video are made again too.

    Frames, size and the other prompts are ``source``'s; the full prompt is built from the layer prompts
    (:func:`full_prompt`) unless ``full_prompt_text`` is given. ``trajectories`` may steer only ``layer``.
    ``call_kwargs`` go to the pipeline (steps, guidance, scheduler ...).
    """
    from .trajectory import Trajectories

    k, keep = regeneration_plan(source.num_foregrounds, layer)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"the new prompt for {layer} is empty; describe the layer to make")
    for key, have in (("num_frames", source.num_frames), ("height", source.size[1]), ("width", source.size[0])):
        if call_kwargs.get(key, have) != have:
            raise ValueError(f"{key}={call_kwargs[key]} differs from the source video's {have}; a regenerated layer "
                             "has the frames and size of the layers kept")
        call_kwargs[key] = have
    if trajectories is not None:
        if not isinstance(trajectories, Trajectories):
            trajectories = Trajectories.load(trajectories)
        others = [f for f in trajectories.foregrounds if f != k]
        if others:
            raise ValueError(f"the trajectory file steers foreground(s) {others}, which are kept; give boxes only for "
                             f"foreground {k}, the layer regenerated")
    prompts = dict(source.prompts)
    background_prompt = prompts.get("background")
    foreground_prompts = list(prompts.get("foregrounds") or [])
    if not isinstance(background_prompt, str) or len(foreground_prompts) != source.num_foregrounds:
        raise ValueError("the source video lacks its layer prompts (manifest 'prompts'); it was not made by layert2v")
    foreground_prompts[k - 1] = prompt
    text = full_prompt_text or full_prompt(background_prompt, foreground_prompts)
    conditions = given_layers(source, keep)
    video = pipe(text, background_prompt, foreground_prompts, conditions=conditions, trajectories=trajectories,
                 seed=seed, **call_kwargs)
    video.fps = source.fps  # the kept layers' timing
    video.metadata["given"] = {name: {"from": origin(source), "layer": name} for name in sorted(conditions)}
    video.metadata["regenerated"] = layer
    carry_sources(video, source, conditions)
    return video
