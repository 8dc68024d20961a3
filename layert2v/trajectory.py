"""Object trajectories (LayerT2V v1): where each foreground should be, frame by frame.

A foreground's trajectory is a box at a few *key frames*: ``(x0, y0, x1, y1)`` as fractions of the frame's width and
height (0 = left / top edge, 1 = right / bottom edge; x1, y1 exclusive), per frame index of the generated clip.
Between key frames every coordinate is interpolated **linearly** in the frame index; before the first key frame the
box stays at the first key frame's box, after the last at the last one's. Key-frame boxes must lie inside the frame
(every coordinate in [0, 1], ``x0 < x1``, ``y0 < y1``); interpolated boxes are clipped to [0, 1] against rounding.

:class:`Trajectories` holds the trajectories of several foregrounds and the settings of the guidance that steers
the model toward them (see :mod:`layert2v.models.guidance`); it reads and writes the JSON file documented in
docs/TRAJECTORIES.md. Masks come at pixel resolution and on any coarser grid (the VAE latent, the transformer's
tokens): each cell holds the fraction of its area the box covers, averaged over the frames the cell spans in time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .formats import read_json_object

FORMAT = "layert2v-trajectories"
VERSION = 1
DEFAULT_STRENGTH = 2.0  # logit bias added / subtracted by the guidance (see layert2v.models.guidance)
DEFAULT_STEPS = 10  # the first denoising steps that are guided

Box = tuple[float, float, float, float]


def _check_box(box: object, where: str) -> Box:
    """A validated normalised box, or a one-line ValueError saying what to fix."""
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise ValueError(f"{where}: expected a box [x0, y0, x1, y1] of four numbers, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"{where}: box {list(box)} holds a non-finite number; give fractions in [0, 1]")
    if min(x0, y0, x1, y1) < 0.0 or max(x0, y0, x1, y1) > 1.0:
        raise ValueError(f"{where}: box {list(box)} leaves the frame; coordinates are fractions of the width and "
                         "height in [0, 1] (divide pixels by the size; give only the visible part of the object)")
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"{where}: box {list(box)} needs x0 < x1 and y0 < y1 (left, top, right, bottom)")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Trajectory:
    """Foreground ``foreground``'s boxes at key frames: ``((frame, (x0, y0, x1, y1)), ...)``, frames increasing."""

    foreground: int
    keyframes: tuple[tuple[int, Box], ...]

    def __post_init__(self) -> None:
        who = f"foreground {self.foreground}"
        if not isinstance(self.foreground, int) or isinstance(self.foreground, bool) or self.foreground < 1:
            raise ValueError(f"a trajectory names foreground {self.foreground!r}; foregrounds are numbered 1, 2, ...")
        if isinstance(self.keyframes, Mapping):  # {frame: box} is accepted from Python
            object.__setattr__(self, "keyframes", tuple(sorted(self.keyframes.items())))
        if not self.keyframes:
            raise ValueError(f"{who}: the trajectory has no key frames; give at least one (frame, box)")
        checked, previous = [], -1
        for frame, box in self.keyframes:
            if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
                raise ValueError(f"{who}: key frame {frame!r} is not a frame index; use 0, 1, 2, ...")
            if frame <= previous:
                raise ValueError(f"{who}: key frame {frame} comes after frame {previous}; list key frames once each, "
                                 "in increasing order")
            checked.append((frame, _check_box(box, f"{who} frame {frame}")))
            previous = frame
        object.__setattr__(self, "keyframes", tuple(checked))

    @property
    def last_frame(self) -> int:
        return self.keyframes[-1][0]

    def check_frames(self, num_frames: int) -> None:
        if self.last_frame >= num_frames:
            raise ValueError(f"foreground {self.foreground}: key frame {self.last_frame} is past the clip's last frame "
                             f"{num_frames - 1}; use frames 0..{num_frames - 1} or generate more frames")

    def boxes(self, num_frames: int) -> np.ndarray:
        """(num_frames, 4) boxes: key frames linearly interpolated, held before the first and after the last."""
        self.check_frames(num_frames)
        frames = np.array([f for f, _ in self.keyframes], dtype=np.float64)
        keys = np.array([b for _, b in self.keyframes], dtype=np.float64)
        t = np.arange(num_frames, dtype=np.float64)
        out = np.stack([np.interp(t, frames, keys[:, c]) for c in range(4)], axis=1)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"foreground": self.foreground,
                "keyframes": [{"frame": f, "box": list(b)} for f, b in self.keyframes]}


@dataclass(frozen=True)
class Trajectories:
    """Trajectories of several foregrounds, plus the strength and step count of the guidance toward them."""

    trajectories: tuple[Trajectory, ...]
    strength: float = DEFAULT_STRENGTH
    steps: int = DEFAULT_STEPS

    def __post_init__(self) -> None:
        object.__setattr__(self, "trajectories", tuple(sorted(self.trajectories, key=lambda t: t.foreground)))
        if not self.trajectories:
            raise ValueError("no trajectories given; list at least one foreground with key frames")
        seen = [t.foreground for t in self.trajectories]
        twice = sorted({k for k in seen if seen.count(k) > 1})
        if twice:
            raise ValueError(f"foreground {twice[0]} has two trajectories; give each foreground one")
        if (not isinstance(self.strength, (int, float)) or isinstance(self.strength, bool)
                or not math.isfinite(self.strength) or self.strength < 0):
            raise ValueError(f"guidance strength must be a number >= 0, got {self.strength!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(f"guidance steps must be a whole number >= 0, got {self.steps!r}")

    @property
    def foregrounds(self) -> list[int]:
        return [t.foreground for t in self.trajectories]

    def check(self, num_frames: int | None, num_foregrounds: int) -> None:
        """Raise, naming the fix, when the trajectories do not fit a clip of ``num_frames`` (None: not known yet)
        with ``num_foregrounds`` foregrounds."""
        for t in self.trajectories:
            if t.foreground > num_foregrounds:
                raise ValueError(f"a trajectory names foreground {t.foreground} but there are {num_foregrounds} "
                                 f"foreground prompt(s); add a --fg or renumber the trajectory")
        for t in self.trajectories if num_frames is not None else ():
            t.check_frames(num_frames)

    def boxes(self, num_frames: int) -> dict[int, np.ndarray]:
        """{foreground: (num_frames, 4) normalised boxes}."""
        return {t.foreground: t.boxes(num_frames) for t in self.trajectories}

    def pixel_masks(self, num_frames: int, height: int, width: int) -> dict[int, np.ndarray]:
        """{foreground: (T, H, W) float32}, each pixel's covered fraction (1 inside, fractional on the edges)."""
        return {k: box_coverage(b, height, width) for k, b in self.boxes(num_frames).items()}

    def grid_masks(self, num_frames: int, height: int, width: int, temporal: int,
                   spatial: int) -> dict[int, np.ndarray]:
        """{foreground: (T', H / spatial, W / spatial) float32} on a grid ``temporal`` x ``spatial`` coarser than the
        pixels, with Wan's causal time axis (T' = (T - 1) / temporal + 1: the first latent frame is frame 0 alone).

        For the VAE latent pass ``preflight.compression(vae.config)``; for the transformer's tokens
        ``pipeline.video_multiples`` (the VAE's factors times the patch)."""
        return {k: grid_mask(b, height, width, temporal, spatial) for k, b in self.boxes(num_frames).items()}

    def requested_document(self, num_frames: int, height: int, width: int) -> dict[str, Any]:
        """The boxes in pixels per frame, as ``layert2v eval`` reads them (``trajectory.json``, docs/EVALUATION.md)."""
        scale = np.array([width, height, width, height], dtype=np.float64)
        return {"objects": [{"foreground": k, "boxes": [[round(float(v), 3) for v in box * scale] for box in b]}
                            for k, b in self.boxes(num_frames).items()]}

    # ------------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION,
                "guidance": {"strength": self.strength, "steps": self.steps},
                "foregrounds": [t.to_dict() for t in self.trajectories]}

    @classmethod
    def from_dict(cls, doc: object, source: str = "trajectories") -> Trajectories:
        """Parse the file format of docs/TRAJECTORIES.md; every error is one line starting with ``source``."""
        try:
            return cls._from_dict(doc)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def _from_dict(cls, doc: object) -> Trajectories:
        if isinstance(doc, dict) and "objects" in doc and "format" not in doc:
            raise ValueError("this is an evaluation document (pixel boxes per frame); generation takes key frames "
                             f'in a "{FORMAT}" file, see docs/TRAJECTORIES.md')
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f'expected a JSON object with "format": "{FORMAT}" (see docs/TRAJECTORIES.md)')
        if doc.get("version") != VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}; this layert2v reads version {VERSION}")
        _only_keys(doc, ("format", "version", "guidance", "foregrounds"), "the file")
        guidance = doc.get("guidance", {})
        if not isinstance(guidance, dict):
            raise ValueError(f'"guidance" must be an object like {{"strength": {DEFAULT_STRENGTH}, '
                             f'"steps": {DEFAULT_STEPS}}}, got {guidance!r}')
        _only_keys(guidance, ("strength", "steps"), '"guidance"')
        entries = doc.get("foregrounds")
        if not isinstance(entries, list) or not entries:
            raise ValueError('"foregrounds" must be a non-empty list of {"foreground": k, "keyframes": [...]}')
        trajectories = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "foreground" not in entry or "keyframes" not in entry:
                raise ValueError(f'foregrounds[{i}] must be an object with "foreground" and "keyframes"')
            _only_keys(entry, ("foreground", "keyframes"), f"foregrounds[{i}]")
            keys = entry["keyframes"]
            if not isinstance(keys, list):
                raise ValueError(f'foregrounds[{i}]: "keyframes" must be a list of {{"frame": t, "box": [...]}}')
            pairs = []
            for j, key in enumerate(keys):
                if not isinstance(key, dict) or set(key) != {"frame", "box"}:
                    raise ValueError(f'foregrounds[{i}].keyframes[{j}] must be {{"frame": t, "box": [x0, y0, x1, '
                                     f'y1]}}, got {key!r}')
                pairs.append((key["frame"], key["box"]))
            trajectories.append(Trajectory(entry["foreground"], tuple(pairs)))
        return cls(tuple(trajectories), strength=guidance.get("strength", DEFAULT_STRENGTH),
                   steps=guidance.get("steps", DEFAULT_STEPS))

    @classmethod
    def load(cls, path: str | Path) -> Trajectories:
        """Read a trajectory file; a missing or malformed file is a one-line error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file {path} does not exist; pass a JSON file as in "
                                    "docs/TRAJECTORIES.md")
        return cls.from_dict(read_json_object(path, "fix it (see docs/TRAJECTORIES.md)"), str(path))


def _only_keys(d: dict, allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------------- masks
def box_coverage(boxes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(T, 4) normalised boxes -> (T, rows, cols) float32: the fraction of each grid cell's area inside the box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def overlap(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:  # (T, n): covered share of each cell
        edges = np.arange(n + 1, dtype=np.float64) / n
        return np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]),
                       0.0, None) * n

    ys, xs = overlap(boxes[:, 1], boxes[:, 3], rows), overlap(boxes[:, 0], boxes[:, 2], cols)
    return (ys[:, :, None] * xs[:, None, :]).astype(np.float32)


def latent_frame_spans(num_frames: int, temporal: int) -> list[range]:
    """The pixel frames each latent frame stands for under Wan's causal VAE: frame 0 alone, then runs of
    ``temporal``. ``num_frames`` must be ``temporal * k + 1``."""
    if num_frames < 1 or (num_frames - 1) % temporal:
        raise ValueError(f"{num_frames} frames do not map onto latent frames of {temporal}; use {temporal}k+1 frames")
    return [range(0, 1)] + [range(1 + j * temporal, 1 + (j + 1) * temporal)
                            for j in range((num_frames - 1) // temporal)]


def grid_mask(boxes: np.ndarray, height: int, width: int, temporal: int, spatial: int) -> np.ndarray:
    """(T, 4) normalised boxes -> (T', H / spatial, W / spatial) float32 coverage, averaged over each latent
    frame's pixel frames (see :func:`latent_frame_spans`)."""
    if height % spatial or width % spatial:
        raise ValueError(f"size {width}x{height} is not a multiple of the grid factor {spatial}")
    per_frame = box_coverage(boxes, height // spatial, width // spatial)
    return np.stack([per_frame[list(span)].mean(0) for span in latent_frame_spans(len(per_frame), temporal)])


def box_from_alpha(alpha: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """Tight box in pixels, [x0, y0, x1, y1] with x1/y1 exclusive, around alpha > threshold in one (H, W) frame; None
    if nothing is covered."""
    ys, xs = np.nonzero(alpha > threshold)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def trajectory_files(video: Any) -> dict[str, bytes]:
    """What a saved layered video with ``metadata["trajectory"]`` holds besides its layers: ``trajectory.json``, the
    requested boxes per frame in pixels (``layert2v eval`` scores the video against it), and ``trajectory.png``,
    the boxes drawn over the full video. Raises before anything is written when the record does not fit the video."""
    import io

    traj = Trajectories.from_dict(video.metadata["trajectory"], "the video's trajectory record")
    (width, height), frames = video.size, video.num_frames
    traj.check(frames, video.num_foregrounds)
    png = io.BytesIO()
    draw_boxes_overlay(video.full, traj.boxes(frames), video.alphas).save(png, format="PNG")
    doc = json.dumps(traj.requested_document(frames, height, width), indent=1) + "\n"
    return {"trajectory.json": doc.encode(), "trajectory.png": png.getvalue()}


def draw_boxes_overlay(frames: np.ndarray, boxes: Mapping[int, np.ndarray], alphas: Sequence[np.ndarray],
                       rows: int = 4, scale: int = 4) -> Any:
    """A PIL image: a few evenly spaced frames of ``frames`` (T, H, W, 3) side by side, each foreground's requested
    box drawn solid and the box of its generated matte (alpha > 0.5) dashed, in the foreground's colour."""
    from PIL import Image, ImageDraw, ImageFont

    t, h, w, _ = frames.shape
    ids = np.unique(np.linspace(0, t - 1, min(rows, t)).round().astype(int))
    colours = [(255, 64, 64), (64, 160, 255), (255, 220, 0), (0, 230, 120), (255, 120, 255), (255, 160, 0)]
    gap, header, cw, ch = 4, 14, w * scale, h * scale
    sheet = Image.new("RGB", (len(ids) * (cw + gap) + gap, header + ch + gap), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, i in enumerate(ids):
        x, y = gap + c * (cw + gap), header
        img = Image.fromarray((np.clip(frames[i], 0, 1) * 255).round().astype(np.uint8))
        sheet.paste(img.resize((cw, ch), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 2, 1), f"t={i}", fill=(230, 230, 230), font=font)
        for k, b in boxes.items():
            colour = colours[(k - 1) % len(colours)]
            x0, y0, x1, y1 = b[i] * np.array([cw, ch, cw, ch])
            draw.rectangle((x + x0, y + y0, x + x1 - 1, y + y1 - 1), outline=colour, width=2)
            got = box_from_alpha(alphas[k - 1][i]) if k <= len(alphas) else None
            if got is not None:
                gx0, gy0, gx1, gy1 = (v * scale for v in got)
                _dashed_rectangle(draw, (x + gx0, y + gy0, x + gx1 - 1, y + gy1 - 1), colour)
    return sheet


def _dashed_rectangle(draw: Any, box: tuple[float, float, float, float], colour: tuple[int, int, int],
                      dash: int = 4) -> None:
    x0, y0, x1, y1 = box
    for s in np.arange(x0, x1, 2 * dash):
        e = min(s + dash, x1)
        draw.line((s, y0, e, y0), fill=colour)
        draw.line((s, y1, e, y1), fill=colour)
    for s in np.arange(y0, y1, 2 * dash):
        e = min(s + dash, y1)
        draw.line((x0, s, x0, e), fill=colour)
        draw.line((x1, s, x1, e), fill=colour)
