"""Fitting video to a shape: which source frames (the frame window), then the largest centred box of the target's
aspect ratio resized to the target size. One home for decompose and ``--keep background=VIDEO`` (:func:`fit_video`),
the training data path (:func:`fit_clip` with a :class:`ClipShape`), the data engine (:func:`fit_frames`) and the
UI's uploaded backgrounds.

Time (:func:`frame_window`). ``num_frames`` frames stepped by ``source_fps / fps`` source frames (``fps`` None: step
1, consecutive frames; the step never drops below 1, so frames are never invented by the step). Where the stepped
window does not fit in the clip, the step shrinks until the window spans the whole clip; a clip with fewer than
``num_frames`` frames holds its last frame to fill the window. The window starts at the first frame or, for
training, at a start drawn from ``numpy.random.default_rng((shape.seed, draw))``: the same ``(seed, draw)`` gives
the same frames in any process, so a resumed run reads exactly what the interrupted one would have. The data engine
records ``fps`` as the clip's rate, so it takes the rate exactly instead (``exact_rate``): the source frame nearest
each tick, repeating frames when ``fps`` is above the source's, and refusing a clip too short for ``num_frames``.

Space (:func:`resize_frames`). The largest centred box with the target aspect ratio is cut from the frame (the
engine's ``--size`` stretches the whole frame instead: ``crop=False``), then resized with an antialiased bilinear
(triangle) filter: "scale the short side, then centre-crop", up to rounding. The filter's weights are non-negative,
so resized values stay within the input's range (no ringing).

Layers (:func:`resize_layers`). Full and background resize as they are. A foreground is resized **premultiplied,
with its alpha, by the same filter** and then un-premultiplied: ``alpha' = R(alpha)``, ``fg' = R(fg * alpha) /
alpha'`` where ``alpha' > 0``, and 0 where ``alpha' = 0``. So the resized clip's premultiplied foreground (what the
RGB VAE encodes) is exactly ``R`` of the original premultiplied foreground, and colour from outside the matte never
bleeds into the edge. (Resizing straight colour and alpha separately would give ``R(fg) * R(alpha)`` at the edges,
which mixes in whatever the straight foreground holds where alpha is 0, e.g. the source background.)

torch and PyAV load when frames are resized or decoded, so argument checks that only probe stay fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..video import LayeredVideo


@dataclass(frozen=True)
class ClipShape:
    """The frame count, size and frame rate training clips are fitted to, and the seed of their frame windows."""

    frames: int
    height: int
    width: int
    fps: float | None = None  # sample at this rate; None: consecutive source frames
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ClipShape.{name} must be a positive integer, got {value!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"ClipShape.fps must be positive or None (consecutive frames), got {self.fps!r}")

    def window(self, num_source: int, source_fps: float, draw: int) -> list[int]:
        """The source frame numbers of window ``draw`` of a clip (:func:`frame_window` at this shape's frames, rate
        and seed)."""
        return frame_window(num_source, source_fps, self.frames, self.fps, draw=(self.seed, draw))


# ---------------------------------------------------------------------------------------------------- time
def frame_window(num_source: int, source_fps: float, num_frames: int | None, fps: float | None = None, *,
                 draw: tuple[int, int] | None = None, exact_rate: bool = False) -> list[int]:
    """The source frame numbers of a clip of ``num_frames`` frames at ``fps`` (see the module docstring): from the
    first frame, or from a start drawn by ``numpy.random.default_rng(draw)`` among those where the window fits.

    ``exact_rate``: the frame nearest each tick of ``fps`` (None: every frame), from the first; ``num_frames`` None
    takes every tick within the clip, and a clip with fewer ticks than ``num_frames`` is a ValueError.
    """
    if num_source < 1:
        raise ValueError("a clip with no frames cannot be sampled")
    if exact_rate:
        if fps:
            count = max(1, int(np.floor((num_source - 1) * fps / source_fps)) + 1)
            indices = [min(num_source - 1, round(i * source_fps / fps)) for i in range(count)]
        else:
            indices = list(range(num_source))
        if num_frames and len(indices) < num_frames:
            raise ValueError(f"has {len(indices)} frames at {fps or source_fps:g} fps, fewer than the {num_frames} "
                             "asked for")
        return indices[:num_frames] if num_frames else indices
    if num_frames is None or num_frames < 1:
        raise ValueError(f"a frame window needs num_frames >= 1, got {num_frames!r}")
    step = max(1.0, source_fps / fps) if fps and source_fps > 0 else 1.0
    if num_frames > 1 and (num_frames - 1) * step > num_source - 1:  # the window does not fit: spread it over the clip
        step = max(1.0, (num_source - 1) / (num_frames - 1))
    offsets = [math.floor(i * step + 1e-9) for i in range(num_frames)]
    start = 0
    if draw is not None:
        start = int(np.random.default_rng(draw).integers(0, max(0, num_source - 1 - offsets[-1]) + 1))
    return [min(start + o, num_source - 1) for o in offsets]


def frames_the_model_takes(available: int, temporal: int, most: int) -> int:
    """The longest clip of at most ``available`` and ``most`` frames with the model's frame rule (temporal * k + 1)."""
    n = min(available, most)
    return max(1, (n - 1) // temporal * temporal + 1)


# --------------------------------------------------------------------------------------------------- space
def crop_box(height: int, width: int, to_height: int, to_width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred box of a ``height`` x ``width`` frame with the aspect
    ratio of ``to_height`` x ``to_width``."""
    if height * to_width > width * to_height:  # the source is taller than the target: cut rows
        h, w = max(1, round(width * to_height / to_width)), width
    else:
        h, w = height, max(1, round(height * to_width / to_height))
    return (height - h) // 2, (width - w) // 2, h, w


def resize_frames(frames: np.ndarray, height: int, width: int, crop: bool = True) -> np.ndarray:
    """(T, H, W, C) or (T, H, W) float frames -> (T, height, width[, C]) float32: centre-cropped to the target's
    aspect ratio (``crop``; else the whole frame is stretched) and resized (see the module docstring)."""
    squeeze = frames.ndim == 3
    x = frames[..., None] if squeeze else frames
    top, left, h, w = crop_box(x.shape[1], x.shape[2], height, width) if crop else (0, 0, *x.shape[1:3])
    x = x[:, top:top + h, left:left + w]
    if (h, w) != (height, width):
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        x = t.permute(0, 2, 3, 1).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x[..., 0] if squeeze else x


def unpremultiply(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour from premultiplied colour (T, H, W, 3) and alpha (T, H, W); 0 where alpha is 0."""
    a = alpha[..., None]
    straight = np.divide(premultiplied, a, out=np.zeros_like(premultiplied), where=a > 0)
    return np.clip(straight, 0.0, 1.0)


# ---------------------------------------------------------------------------------------- layered clips
def resize_layers(video: LayeredVideo, height: int, width: int) -> LayeredVideo:
    """Every layer centre-cropped and resized to ``height`` x ``width``; foregrounds premultiplied (see the module
    docstring). A clip already at that size is returned unchanged."""
    if (video.full.shape[1], video.full.shape[2]) == (height, width):
        return video
    alphas = [np.clip(resize_frames(a, height, width), 0.0, 1.0) for a in video.alphas]
    foregrounds = [unpremultiply(resize_frames(video.premultiplied(k), height, width), a)
                   for k, a in enumerate(alphas, start=1)]
    return replace(video, full=resize_frames(video.full, height, width),
                   background=resize_frames(video.background, height, width), foregrounds=foregrounds,
                   alphas=alphas)


def take_frames(video: LayeredVideo, indices: list[int]) -> LayeredVideo:
    """The clip made of source frames ``indices`` (in that order, repeats allowed)."""
    if indices == list(range(video.num_frames)):
        return video
    return replace(video, full=video.full[indices], background=video.background[indices],
                   foregrounds=[f[indices] for f in video.foregrounds], alphas=[a[indices] for a in video.alphas])


def fit_clip(video: LayeredVideo, shape: ClipShape, draw: int) -> LayeredVideo:
    """``video`` fitted to ``shape``: window ``draw`` of its frames, centre-cropped and resized."""
    out = resize_layers(take_frames(video, shape.window(video.num_frames, video.fps, draw)), shape.height, shape.width)
    if shape.fps is None or shape.fps == out.fps:
        return out
    return replace(out, fps=int(shape.fps) if float(shape.fps).is_integer() else shape.fps)


def fit_frames(frames: np.ndarray, fps: float, size: tuple[int, int] | None, num_frames: int | None,
               target_fps: float | None) -> tuple[np.ndarray, list[int], float]:
    """The data engine's fitting: frames at exactly ``target_fps`` (``exact_rate``), the first ``num_frames`` of
    them, stretched to ``size`` (width, height): (frames, source indices, fps). A ValueError when too short."""
    indices = frame_window(len(frames), fps, num_frames, target_fps, exact_rate=True)
    frames = frames[indices]
    if size and (frames.shape[2], frames.shape[1]) != tuple(size):
        frames = resize_frames(frames, size[1], size[0], crop=False)
    return frames, indices, target_fps or fps


# ----------------------------------------------------------------------------------------------- video files
@dataclass
class FittedVideo:
    """A video fitted to the model: ``frames`` (T, H, W, 3) float32 in [0, 1], and how they map to the source
    (``mapping``, recorded in the output's manifest as ``input``)."""

    frames: np.ndarray
    mapping: dict[str, Any]


def probe(path: str | Path) -> tuple[int, float, int, int]:
    """(frame count, frame rate, width, height) of a video file, or a one-line ValueError when it cannot be read
    as a video."""
    import av

    from ..io.codec import video_info

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


def fit_video(path: str | Path, num_frames: int, height: int, width: int, multiples: tuple[int, int],
              fps: float | None = None) -> FittedVideo:
    """Decode a video file (any container and codec FFmpeg reads: mp4, mov, webm ...) of any size and length and fit
    it to what the model takes: ``num_frames`` frames (the source's first frames at ``fps``, see
    :func:`frame_window`; ``fps`` None takes consecutive frames), the largest centred box of the target's aspect
    ratio, resized to ``height`` x ``width``. ``multiples`` is the model's (temporal, spatial) rule
    (``pipe.video_multiples``); a shape it does not take is refused, and so is a clip with fewer frames than asked.
    """
    import av

    from ..io.codec import read_frames
    from ..preflight import check_video_shape

    check_video_shape(num_frames, height, width, *multiples)
    path = Path(path)
    total, source_fps, source_w, source_h = probe(path)
    if total < num_frames:
        most = frames_the_model_takes(total, multiples[0], total)
        raise ValueError(f"{path.name} has {total} frame(s), fewer than the {num_frames} asked for; pass --frames "
                         f"{most} (num_frames={most}) or a longer video")
    indices = frame_window(total, source_fps, num_frames, fps)
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
