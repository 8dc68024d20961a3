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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .formats import VIDEO_SUFFIXES
from .layout import ALPHA, BACKGROUND, FOREGROUND, FULL, LayerLayout, Segment
from .prompts import full_prompt
from .video import LayeredVideo

if TYPE_CHECKING:
    from .pipeline import LayerT2VPipeline
    from .preflight import ModelCheck
    from .trajectory import Trajectories


# ------------------------------------------------------------------------------------------------ video in
def is_video_file(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in VIDEO_SUFFIXES


# ------------------------------------------------------------------------------------------------- layers
def keepable(name: str, num_foregrounds: int) -> Segment:
    """The segment a ``--keep NAME`` names: full, background or foreground_k of this many foregrounds (an alpha comes
    with its foreground); a one-line ValueError naming the choices for anything else."""
    names = LayerLayout(num_foregrounds).rgb_names  # full, background, foreground_1..K: what can be kept
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


ENGINE, MODEL = "engine", "model"  # the two ways to decompose a video file
METHODS = (ENGINE, MODEL)


def decompose_method(method: str | None, model: str | Path | None) -> tuple[str, str]:
    """(method, why) of a decomposition: ``method`` when given; else ``engine`` (the data engine's segmentation,
    matting and clean plate, :mod:`layert2v.data.engine.decompose`) for the built-in model (``model`` None or its
    directory), which knows only its procedural world, and ``model`` (the generative decomposition,
    :func:`decompose`) for any other, trained, model."""
    from .preflight import BUILTIN_MODEL

    if method is not None:
        if method not in METHODS:
            raise ValueError(f"unknown decompose method {method!r}; choose {ENGINE} or {MODEL}")
        return method, "asked for"
    if model is None or Path(model).resolve() == BUILTIN_MODEL.resolve():
        return ENGINE, ("the default with the built-in model: it knows only its procedural world and has not learnt "
                        "decomposition, see its model card")
    return MODEL, "the default with a trained model: its own generative decomposition"


def decompose(pipe: LayerT2VPipeline, video: str | Path, background_prompt: str, foreground_prompts: list[str],
              prompt: str | None = None, **call_kwargs: Any) -> LayeredVideo:
    """Layers of a video file (:meth:`LayerT2VPipeline.decompose` of its fitted frames).

    The file is fitted by :func:`layert2v.data.fit.fit_video` to ``num_frames`` / ``height`` / ``width``
    (default: the model's, fewer frames for a shorter clip) at the model's frame rate; the mapping is recorded in
    ``metadata["input"]``. ``call_kwargs`` go to the pipeline (seed, steps, guidance, trajectories ...).
    """
    from .data.fit import fit_video, frames_the_model_takes, probe

    cfg = pipe.config
    num_frames = call_kwargs.pop("num_frames", None)
    if num_frames is None:  # the model's default, or the longest a shorter clip gives
        num_frames = frames_the_model_takes(probe(video)[0], pipe.video_multiples[0], cfg.num_frames)
    height = call_kwargs.pop("height", None) or cfg.height
    width = call_kwargs.pop("width", None) or cfg.width
    fitted = fit_video(video, num_frames, height, width, pipe.video_multiples, fps=cfg.fps)
    out = pipe.decompose(fitted.frames, background_prompt, foreground_prompts, prompt=prompt, **call_kwargs)
    out.metadata["given"] = {FULL: {"from": str(Path(video).absolute()), "layer": FULL}}
    out.metadata["input"] = fitted.mapping
    return out


def regeneration_plan(source_foregrounds: int, layer: str, trajectories: Trajectories | None = None,
                      trajectory_file: str = "the trajectory file") -> tuple[int, list[str]]:
    """(k, layers kept) for regenerating ``layer`` of a video with this many foregrounds: the background and every
    other foreground (with its alpha). Refuses anything but an existing foreground_k, and ``trajectories`` that
    steer a kept foreground, in one line."""
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
    others = [f for f in trajectories.foregrounds if f != segment.index] if trajectories is not None else []
    if others:
        raise ValueError(f"{trajectory_file} steers foreground(s) {others}, which are kept; give boxes only for "
                         f"foreground {segment.index}, the layer regenerated")
    return segment.index, [BACKGROUND, *(n for n in names if n != layer)]


def regenerate(pipe: LayerT2VPipeline, source: LayeredVideo, layer: str, prompt: str, *,
               trajectories: Trajectories | str | Path | None = None, seed: int = 0,
               full_prompt_text: str | None = None, **call_kwargs: Any) -> LayeredVideo:
    """Make foreground ``layer`` of ``source`` again from ``prompt``, keeping the background and every other
    foreground with its alpha bit-identical; the layer's alpha and the full video are made again too.

    Frames, size and the other prompts are ``source``'s; the full prompt is built from the layer prompts
    (:func:`layert2v.prompts.full_prompt`) unless ``full_prompt_text`` is given. ``trajectories`` may steer only
    ``layer``.
    ``call_kwargs`` go to the pipeline (steps, guidance, scheduler ...).
    """
    from .trajectory import Trajectories

    if trajectories is not None and not isinstance(trajectories, Trajectories):
        trajectories = Trajectories.load(trajectories)
    k, keep = regeneration_plan(source.num_foregrounds, layer, trajectories)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"the new prompt for {layer} is empty; describe the layer to make")
    for key, have in (("num_frames", source.num_frames), ("height", source.size[1]), ("width", source.size[0])):
        if call_kwargs.get(key, have) != have:
            raise ValueError(f"{key}={call_kwargs[key]} differs from the source video's {have}; a regenerated layer "
                             "has the frames and size of the layers kept")
        call_kwargs[key] = have
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


# ------------------------------------------------------------------------------------------------- --keep
@dataclass
class Kept:
    """The layers ``--keep`` gives: conditions for the pipeline, where each came from (the manifest's "given"), the
    layered directories read (so their files are copied on save) and their frame rate."""

    conditions: dict[str, np.ndarray]
    given: dict[str, dict[str, Any]]
    sources: list[tuple[LayeredVideo, list[str]]]  # read from layered directories, with the layers taken
    fps: float | None

    def record(self, video: LayeredVideo) -> None:
        """Mark ``video`` (the pipeline's output) with where its given layers came from, at their frame rate, and
        let it save them by copying their files."""
        video.metadata["given"] = self.given
        video.fps = self.fps or video.fps
        for source, names in self.sources:
            carry_sources(video, source, names)


def parse_keep(text: str) -> tuple[str, Path]:
    """(LAYER, SOURCE) of a ``--keep LAYER=SOURCE`` argument."""
    return parse_keep_name(text), Path(text.partition("=")[2].strip())


def check_keeps(keeps: list[str], num_foregrounds: int, check: ModelCheck,
                trajectories: tuple[str, Trajectories] | None = None) -> Kept | None:
    """Read every ``--keep`` before the model loads: names, sources, frame counts and sizes checked, in one line
    each; ``trajectories`` (file name, boxes) may not steer a kept foreground."""
    if not keeps:
        return None
    from .data.fit import fit_video
    from .formats import VIDEO_MANIFEST
    from .io.layered_dir import read_manifest

    if trajectories is not None:
        kept_fgs = {keepable(parse_keep_name(k), num_foregrounds).index for k in keeps}
        steered = sorted(kept_fgs & set(trajectories[1].foregrounds))
        if steered:
            raise ValueError(f"{trajectories[0]} steers foreground(s) {steered}, which --keep gives; give boxes only "
                             "for generated foregrounds")
    if check.frames is None or check.size is None:
        raise ValueError("--keep needs the clip's frames and size before the model loads; pass --frames and --size")
    width, height = check.size
    parsed = [parse_keep(k) for k in keeps]
    names = [keepable(name, num_foregrounds).name for name, _ in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--keep {twice[0]} is given twice; keep each layer once")
    if len(names) == len(LayerLayout(num_foregrounds).rgb_names):
        raise ValueError("--keep gives every layer; leave one out to generate it")
    directories: dict[Path, Any] = {}
    for name, source in parsed:
        if source.is_dir():
            manifest = read_manifest(source)  # not a layered directory: one line
            have_k, have_frames, have_size = manifest["num_foregrounds"], manifest["frames"], manifest["size"]
            if name not in [FULL, BACKGROUND] and Segment.from_name(name).index > have_k:
                raise ValueError(f"--keep {name}={source}: {source} has {have_k} foreground(s); keep one of "
                                 f"foreground_1..{have_k} or give a directory that has {name}")
            if (have_frames, tuple(have_size)) != (check.frames, (width, height)):
                raise ValueError(f"--keep {name}={source}: {source} holds {have_frames} frames of "
                                 f"{have_size[0]}x{have_size[1]}, this generation makes {check.frames} frames of "
                                 f"{width}x{height}; pass --frames {have_frames} --size {have_size[0]}x{have_size[1]}"
                                 " or keep a layer of this shape")
            directories.setdefault(source.resolve(), []).append(name)
        elif source.is_file():
            if name not in (FULL, BACKGROUND):
                raise ValueError(f"--keep {name}={source}: a foreground needs its alpha, so it comes from a layered "
                                 "directory (OUT of generate/decompose/edit); a video file can give background or full")
            if not is_video_file(source):
                raise ValueError(f"--keep {name}={source}: {source.name} is not a video file (mp4, mov, webm ...) "
                                 f"nor a layered directory (with {VIDEO_MANIFEST})")
        else:
            raise FileNotFoundError(f"--keep {name}={source}: no such directory or video file")
    conditions, given, sources, rates = {}, {}, [], set()
    for directory, layer_names in directories.items():
        video = LayeredVideo.load(directory)
        taken = given_layers(video, layer_names)
        conditions.update(taken)
        given.update({n: {"from": str(directory), "layer": n} for n in taken})
        sources.append((video, list(taken)))
        rates.add(video.fps)
    if len(rates) > 1:
        raise ValueError(f"the kept directories have different frame rates {sorted(rates)}; keep layers of one rate")
    for name, source in parsed:
        if source.is_file():
            fitted = fit_video(source, check.frames, height, width, check.multiples, fps=check.fps)
            conditions[name] = fitted.frames
            given[name] = {"from": str(source.absolute()), "layer": name, "input": fitted.mapping}
    return Kept(conditions, given, sources, rates.pop() if rates else None)
