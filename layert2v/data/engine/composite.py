"""`layert2v data composite`: LayerFlow's copy-paste synthesis. RGBA foreground clips pasted over background videos
with random placement, scale and straight-line motion give layered samples whose layers are exact by construction.

    layert2v data composite --fg RGBA_DIR --bg VIDEOS_DIR --out DATASET [--config engine.yaml]

Foregrounds: video files with alpha (ProRes 4444 ``.mov``, VP9 ``.webm``) or directories of RGBA ``.png`` frames
(sorted by name), each with a caption sidecar ``<name>.txt`` (or ``<name>.json`` ``{"foreground": "..."}``).
Backgrounds: any videos, with ``<name>.txt`` (or ``.json`` ``{"background": "..."}``). The full caption is
"<fg 1>, <fg 2> and <fg K> in front of <background>". Sample i uses background i (cycling) and K foregrounds drawn
at random; everything random comes from ``composite.seed`` and i, so a rerun writes the same samples and resumes
through the same done markers as ``data build``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...formats import VIDEO_SUFFIXES, read_json_object
from ...io.codec import read_video, read_video_rgba
from ...output_dirs import write_text_atomic
from ...video import LayeredVideo
from ..fit import fit_frames, resize_frames
from ..folder import make_record
from .build import Output, Summary, start_ray
from .clip import Reject, find_videos, probe_fps
from .config import EngineConfig


@dataclass(frozen=True)
class Source:
    path: str  # absolute
    rel: str  # relative to its root, for the record
    caption: str


def _caption(path: Path, key: str) -> str:
    txt, meta = path.with_suffix(".txt"), path.with_suffix(".json")
    if path.is_dir():
        txt, meta = path.parent / f"{path.name}.txt", path.parent / f"{path.name}.json"
    if txt.is_file() and txt.read_text(encoding="utf-8").strip():
        return txt.read_text(encoding="utf-8").strip()
    if meta.is_file():
        value = read_json_object(meta, f"write an object with a {key!r} caption").get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(f"{path} has no caption: write it into {txt.name} (or {meta.name} as {{{key!r}: ...}})")


def find_foregrounds(root: str | Path) -> list[Source]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"--fg {root} is not a directory of RGBA clips")
    items = sorted(p for p in root.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and any(p.glob("*.png")))))
    if not items:
        raise FileNotFoundError(f"no RGBA clips (.mov / .webm with alpha, or directories of .png) in {root}")
    return [Source(str(p.absolute()), p.name, _caption(p, "foreground")) for p in items]


def find_backgrounds(root: str | Path) -> list[Source]:
    root = Path(root).expanduser()
    return [Source(str(p.absolute()), p.relative_to(root).as_posix(), _caption(p, "background"))
            for p in find_videos(root)]


def read_rgba(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Straight RGB (T, H, W, 3) and alpha (T, H, W) from a video with alpha or a directory of RGBA PNGs."""
    path = Path(path)
    if path.is_dir():
        frames = [np.asarray(Image.open(p).convert("RGBA"), np.float32) / 255.0 for p in sorted(path.glob("*.png"))]
        if len({f.shape for f in frames}) != 1:
            raise Reject(f"the PNG frames in {path.name} differ in size")
        rgba = np.stack(frames)
        return rgba[..., :3], rgba[..., 3]
    try:
        return read_video_rgba(path)
    except ValueError as e:
        raise Reject(str(e)) from e


def plan(index: int, num_backgrounds: int, num_foregrounds: int, config: EngineConfig) -> dict[str, Any]:
    """Sample `index`'s choices, from (seed, index) alone."""
    c = config.composite
    rng = np.random.default_rng([c.seed, index])
    k = int(rng.integers(c.min_foregrounds, config.max_foregrounds + 1))
    return {"index": index, "background": index % num_backgrounds,
            "foregrounds": rng.choice(num_foregrounds, size=k, replace=k > num_foregrounds).tolist(),
            "scales": rng.uniform(*c.scale, size=k).tolist(), "starts": rng.uniform(0.0, 1.0, size=(k, 2)).tolist(),
            "velocities": rng.uniform(-c.max_speed, c.max_speed, size=(k, 2)).tolist()}


def paste(sprite: np.ndarray, alpha: np.ndarray, height: int, width: int, x: float, y: float,
          ) -> tuple[np.ndarray, np.ndarray]:
    """One frame's sprite placed with its top-left corner at (x, y) on an empty (height, width) canvas."""
    layer = np.zeros((height, width, 3), np.float32)
    matte = np.zeros((height, width), np.float32)
    h, w = alpha.shape
    x0, y0 = int(round(x)), int(round(y))
    top, left, bottom, right = max(0, y0), max(0, x0), min(height, y0 + h), min(width, x0 + w)
    if bottom > top and right > left:
        layer[top:bottom, left:right] = sprite[top - y0:bottom - y0, left - x0:right - x0]
        matte[top:bottom, left:right] = alpha[top - y0:bottom - y0, left - x0:right - x0]
    return layer, matte


def make_sample(choice: dict[str, Any], backgrounds: list[Source], foregrounds: list[Source],
                config: EngineConfig) -> tuple[LayeredVideo, dict[str, Any]]:
    bg_source = backgrounds[choice["background"]]
    fps = probe_fps(bg_source.path)
    try:
        background, indices, fps = fit_frames(read_video(bg_source.path), fps, config.size, config.frames, config.fps)
    except ValueError as e:  # no frames, or too few
        raise Reject(str(e)) from None
    t, height, width, _ = background.shape
    if height % 2 or width % 2:
        raise Reject(f"background {bg_source.rel} is {width}x{height}; samples need even sides (pass --size)")
    layers, mattes, captions, used = [], [], [], []
    for j, fg_index in enumerate(choice["foregrounds"]):
        source = foregrounds[fg_index]
        rgb, alpha = read_rgba(source.path)
        if len(alpha) < t:  # a short foreground loops
            reps = -(-t // len(alpha))
            rgb, alpha = np.concatenate([rgb] * reps)[:t], np.concatenate([alpha] * reps)[:t]
        rgb, alpha = rgb[:t], alpha[:t]
        sprite_h = max(2, round(choice["scales"][j] * height))
        sprite_w = max(2, round(sprite_h * alpha.shape[2] / alpha.shape[1]))
        rgb, alpha = (resize_frames(x, sprite_h, sprite_w, crop=False) for x in (rgb, alpha))  # aspect kept above
        (sx, sy), (vx, vy) = choice["starts"][j], choice["velocities"][j]
        x, y = sx * (width - sprite_w), sy * (height - sprite_h)  # starts wholly inside the frame
        pasted = [paste(rgb[i], alpha[i], height, width, x + vx * width * i / max(1, t - 1),
                        y + vy * height * i / max(1, t - 1)) for i in range(t)]
        layers.append(np.stack([p[0] for p in pasted]))
        mattes.append(np.stack([p[1] for p in pasted]))
        captions.append(source.caption)
        used.append(source.rel)
    fg_text = captions[0] if len(captions) == 1 else ", ".join(captions[:-1]) + " and " + captions[-1]
    prompts = {"full": f"{fg_text} in front of {bg_source.caption}", "background": bg_source.caption,
               "foregrounds": captions}
    video = LayeredVideo(full=background, background=background, foregrounds=layers, alphas=mattes,
                         fps=int(fps) if float(fps).is_integer() else round(fps, 3), prompts=prompts)
    video.full = video.composite()
    video.metadata = {"source": {"background": bg_source.rel, "foregrounds": used}, "source_frames": indices,
                      "composite": {k: choice[k] for k in ("scales", "starts", "velocities")}}
    return video, video.metadata


def sample_name(choice: dict[str, Any], config: EngineConfig) -> str:
    digest = hashlib.sha1(json.dumps([config.composite.seed, choice["index"]]).encode()).hexdigest()[:8]
    return f"composite-{choice['index']:06d}-{digest}"


def _one(choice: dict[str, Any], backgrounds: list[Source], foregrounds: list[Source], config: EngineConfig,
         out: str) -> dict[str, Any]:
    """Write one sample and its done marker; return the marker."""
    output, sid = Output(out), sample_name(choice, config)
    start = time.perf_counter()
    try:
        video, _ = make_sample(choice, backgrounds, foregrounds, config)
        video.save(Path(out) / sid, overwrite=True)
        record = {"accepted": make_record(video, sid, sid, fps=video.fps, **video.metadata)}
    except Reject as r:
        record = {"rejected": {"source": backgrounds[choice["background"]].rel, "id": sid, "reason": r.reason,
                               "scores": {}}}
    except Exception as e:  # one bad file never stops the others
        record = {"rejected": {"source": backgrounds[choice["background"]].rel, "id": sid,
                               "reason": f"{type(e).__name__}: {e}", "scores": {}}}
    record["seconds"] = time.perf_counter() - start
    output.mark(sid, record)
    return record


def _ray_batch(batch: dict[str, np.ndarray], backgrounds, foregrounds, config, out) -> dict[str, np.ndarray]:
    records = [_one(json.loads(str(c)), backgrounds, foregrounds, config, out) for c in batch["choice"]]
    return {"record": np.array([json.dumps(r) for r in records])}


def composite(fg_root: str | Path, bg_root: str | Path, out: str | Path, config: EngineConfig, *,
              executor: str = "ray", address: str | None = None, progress: bool = True) -> Summary:
    """Write ``composite.samples`` samples (default: one per background) into `out`; resumes like :func:`build`."""
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    foregrounds, backgrounds = find_foregrounds(fg_root), find_backgrounds(bg_root)
    if config.composite.min_foregrounds > config.max_foregrounds:
        raise ValueError(f"composite.min_foregrounds ({config.composite.min_foregrounds}) exceeds max_foregrounds "
                         f"({config.max_foregrounds})")
    output = Output(out)
    output.open([Path(fg_root), Path(bg_root)], config)
    n = config.composite.samples or len(backgrounds)
    choices = [plan(i, len(backgrounds), len(foregrounds), config) for i in range(n)]
    summary = Summary(backends={"composite": "copy-paste"})
    todo = [c for c in choices if output.done(sample_name(c, config)) is None]
    summary.skipped = n - len(todo)
    bar = tqdm(total=len(todo), unit="sample", disable=not progress, desc="data composite")
    if executor == "local" or not todo:
        results = (_one(c, backgrounds, foregrounds, config, str(output.root)) for c in todo)
    else:
        results = _ray_results(todo, backgrounds, foregrounds, config, str(output.root), address)
    for record in results:
        summary.processed += 1
        summary.stage_seconds["composite"] = summary.stage_seconds.get("composite", 0.0) + record["seconds"]
        bar.update()
    bar.close()
    summary.accepted, summary.rejected = output.finish([sample_name(c, config) for c in choices])
    write_text_atomic(output.root / ".engine" / "sources.json", json.dumps(
        {"foregrounds": [s.rel for s in foregrounds], "backgrounds": [s.rel for s in backgrounds]}) + "\n")
    return summary


def _ray_results(todo, backgrounds, foregrounds, config, out, address):
    import ray
    import ray.data

    started = start_ray(config, address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"choice": json.dumps(c)} for c in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(_ray_batch, batch_size=1, fn_kwargs={"backgrounds": backgrounds, "foregrounds": foregrounds,
                                                              "config": config, "out": out})
    try:
        for row in ds.iter_rows():
            yield json.loads(str(row["record"]))
    finally:
        if started:
            ray.shutdown()
