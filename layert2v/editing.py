"""Layered editing: pull layers out of a video, keep some layers of a saved one and make the rest again.

Every workflow here is one call of the pipeline with ``conditions=``: the kept layers are given clean (LayerFlow's
variants) and come out of the call exactly as given. This module fits a video file to what the model takes
(:func:`read_video`), picks the layers to keep from a :class:`~layert2v.video.LayeredVideo`
(:func:`given_layers`) and regenerates one foreground of a saved video (:func:`regenerate`). Saving keeps a kept
layer's files as they were (see :func:`layert2v.video_io.kept_files`), so it stays bit-identical on disk too.
See docs/EDITING.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .layout import ALPHA, BACKGROUND, FOREGROUND, FULL, LayerLayout, Segment
from .prompts import full_prompt
from .video import LayeredVideo

if TYPE_CHECKING:
    from .pipeline import LayerT2VPipeline
    from .preflight import ModelCheck
    from .trajectory import Trajectories

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")


@dataclass
class FittedVideo:
    """A video fitted to the model: ``frames`` (T, H, W, 3) float32 in [0, 1], and how they map to the source
    (``mapping``, recorded in the output's manifest as ``input``)."""

    frames: np.ndarray
    mapping: dict[str, Any]


# ------------------------------------------------------------------------------------------------ video in
def probe(path: str | Path) -> tuple[int, float, int, int]:
    """(frame count, frame rate, width, height) of a video file, or a one-line ValueError when it cannot be read
    as a video."""
    import av

    from .video_io import video_info

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}; give the path of an mp4, mov or webm file")
    try:
        frames, fps, width, height = video_info(path)
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot decode {path.name} as a video ({_reason(e)}); give an mp4, mov or webm file that "
                         "a video player opens") from None
    if frames < 1 or width < 1 or height < 1:
        raise ValueError(f"{path.name} holds no video frames; give an mp4, mov or webm file with frames")
    return frames, fps, width, height


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:160]


def frames_the_model_takes(available: int, temporal: int, most: int) -> int:
    """The longest clip of at most ``available`` and ``most`` frames with the model's frame rule (temporal * k + 1)."""
    n = min(available, most)
    return max(1, (n - 1) // temporal * temporal + 1)


def frame_window(num_source: int, source_fps: float, num_frames: int, fps: float) -> list[int]:
    """Source frame numbers for ``num_frames`` frames at the model's ``fps``: from the first frame, stepped by
    ``source_fps / fps`` source frames (never below 1); where that runs past the end, the step shrinks so the window
    spans the whole clip."""
    step = max(1.0, source_fps / fps) if fps > 0 and source_fps > 0 else 1.0
    if num_frames > 1 and (num_frames - 1) * step > num_source - 1:
        step = max(1.0, (num_source - 1) / (num_frames - 1))
    return [min(num_source - 1, int(np.floor(i * step + 1e-9))) for i in range(num_frames)]


def read_video(path: str | Path, num_frames: int, height: int, width: int, multiples: tuple[int, int],
               fps: float | None = None) -> FittedVideo:
    """Decode a video file (any container and codec FFmpeg reads: mp4, mov, webm ...) of any size and length and fit
    it to what the model takes: ``num_frames`` frames (the source's first frames at ``fps``, see
    :func:`frame_window`; ``fps`` None takes consecutive frames), the largest centred box of the target's aspect
    ratio, resized to ``height`` x ``width``. ``multiples`` is the model's (temporal, spatial) rule
    (``pipe.video_multiples``); a shape it does not take is refused, and so is a clip with fewer frames than asked.
    """
    import av

    from .data.resample import crop_box, resize_frames
    from .preflight import check_video_shape
    from .video_io import read_frames

    check_video_shape(num_frames, height, width, *multiples)
    path = Path(path)
    total, source_fps, source_w, source_h = probe(path)
    if total < num_frames:
        most = frames_the_model_takes(total, multiples[0], total)
        raise ValueError(f"{path.name} has {total} frame(s), fewer than the {num_frames} asked for; pass --frames "
                         f"{most} (num_frames={most}) or a longer video")
    indices = frame_window(total, source_fps, num_frames, fps or source_fps)
    try:
        frames = read_frames(path, indices)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot decode {path.name} ({_reason(e)}); the file is damaged or not a video: give an "
                         "mp4, mov or webm file that a video player opens") from None
    except ValueError as e:  # fewer decodable frames than the container claims
        raise ValueError(f"cannot decode {path.name} to the end ({_reason(e)}); the file is truncated or damaged: "
                         "re-export it") from None
    top, left, crop_h, crop_w = crop_box(frames.shape[1], frames.shape[2], height, width)
    fitted = np.clip(resize_frames(frames, height, width), 0.0, 1.0).astype(np.float32)
    step = (indices[-1] - indices[0]) / (num_frames - 1) if num_frames > 1 else 1.0
    mapping = {
        "source": path.name, "source_size": [int(frames.shape[2]), int(frames.shape[1])],
        "source_frames": total, "source_fps": source_fps,
        "start_frame": indices[0], "end_frame": indices[-1], "frame_step": step, "frame_indices": indices,
        "crop_box": {"left": left, "top": top, "width": crop_w, "height": crop_h},
        "scale": height / crop_h, "size": [width, height], "frames": num_frames,
    }
    if [source_w, source_h] != mapping["source_size"]:  # a container size that differs from the decoded frames
        mapping["container_size"] = [source_w, source_h]
    return FittedVideo(fitted, mapping)


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
    directory): see :func:`layert2v.video_io.kept_files`, which copies only what is still bit-identical."""
    for name in names:
        if name in source.sources:
            video.sources[name] = source.sources[name]


def origin(source: LayeredVideo) -> str:
    """Where a layered video came from, for the manifest: its directory, or "in memory"."""
    directories = {str(s.directory) for s in source.sources.values()}
    return directories.pop() if len(directories) == 1 else "in memory"


def decompose(pipe: LayerT2VPipeline, video: str | Path, background_prompt: str, foreground_prompts: list[str],
              prompt: str | None = None, **call_kwargs: Any) -> LayeredVideo:
    """Layers of a video file (:meth:`LayerT2VPipeline.decompose` of its fitted frames).

    The file is fitted by :func:`read_video` to ``num_frames`` / ``height`` / ``width`` (default: the model's,
    fewer frames for a shorter clip) at the model's frame rate; the mapping is recorded in ``metadata["input"]``.
    ``call_kwargs`` go to the pipeline (seed, steps, guidance, trajectories ...).
    """
    cfg = pipe.config
    num_frames = call_kwargs.pop("num_frames", None)
    if num_frames is None:  # the model's default, or the longest a shorter clip gives
        num_frames = frames_the_model_takes(probe(video)[0], pipe.video_multiples[0], cfg.num_frames)
    height = call_kwargs.pop("height", None) or cfg.height
    width = call_kwargs.pop("width", None) or cfg.width
    fitted = read_video(video, num_frames, height, width, pipe.video_multiples, fps=cfg.fps)
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
    from .formats import VIDEO_MANIFEST
    from .video_io import load_layered_video, read_manifest

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
        video = load_layered_video(directory)
        taken = given_layers(video, layer_names)
        conditions.update(taken)
        given.update({n: {"from": str(directory), "layer": n} for n in taken})
        sources.append((video, list(taken)))
        rates.add(video.fps)
    if len(rates) > 1:
        raise ValueError(f"the kept directories have different frame rates {sorted(rates)}; keep layers of one rate")
    for name, source in parsed:
        if source.is_file():
            fitted = read_video(source, check.frames, height, width, check.multiples, fps=check.fps)
            conditions[name] = fitted.frames
            given[name] = {"from": str(source.absolute()), "layer": name, "input": fitted.mapping}
    return Kept(conditions, given, sources, rates.pop() if rates else None)
