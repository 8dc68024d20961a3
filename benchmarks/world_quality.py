"""World-quality benchmark: does a layered model put the right thing in the right layer, on held-out prompts?

For each held-out case of the procedural world (:func:`layert2v.data.world.heldout_prompts`) the model generates a
layered video from the case's prompts; attribute *readers* then read, from pixels alone, each foreground layer's
colour, shape and motion and the background layer's kind and colour, and score them against the case's ground
truth. Layer-quality metrics come alongside: recomposite PSNR (full video vs. the composite of its own layers),
object-in-background share (objects painted into the background layer), alpha hardness and alpha flicker. The
first two are not `layert2v eval`'s "FG colour leakage" and "alpha binariness" (docs/EVALUATION.md): they are
defined otherwise, so they carry other names.

The readers are validated on ground-truth clips (:func:`validate_readers`, and ``--ground-truth`` runs the whole
table on them), so a low score measures the model, not the reader.

    python benchmarks/world_quality.py --model runs/tiny --n 50 --seeds 2 --out results/world
    python benchmarks/world_quality.py --ground-truth --n 200
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from layert2v.data.world import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    ClipSpec,
    background_tones,
    coverage,
    heldout_prompts,
    render,
    sample_spec,
    shape_sdf,
)
from layert2v.video import LayeredVideo

_NAMES = list(COLOURS)
_RGB = np.array([COLOURS[c] for c in _NAMES], dtype=np.float32)


# ------------------------------------------------------------------------------------------- colour
def nearest_colour(rgb: np.ndarray) -> str:
    """The named colour nearest (Euclidean RGB) to an RGB triple."""
    return _NAMES[int(np.argmin(((_RGB - np.asarray(rgb, dtype=np.float32)) ** 2).sum(1)))]


def _object_weights(alpha: np.ndarray) -> np.ndarray:
    """Where to trust a straight foreground: its solid interior (alpha > 0.5), weighted by alpha."""
    return np.where(alpha > 0.5, alpha, 0.0)


def foreground_mean_rgb(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-weighted mean RGB of a straight foreground layer over its solid pixels."""
    w = _object_weights(alpha)
    if w.sum() < 1e-6:
        w = alpha + 1e-6
    return (foreground * w[..., None]).sum((0, 1, 2)) / w.sum()


def read_foreground_colour(foreground: np.ndarray, alpha: np.ndarray) -> str:
    """Named colour of a foreground layer: nearest to its alpha-weighted mean RGB."""
    return nearest_colour(foreground_mean_rgb(foreground, alpha))


def _segment_distance(pixels: np.ndarray, colour: str) -> np.ndarray:
    """Distance of each pixel (N, 3) to the segment between a background colour's two tones."""
    c, second = background_tones(colour)
    d = c - second
    t = np.clip(((pixels - second) @ d) / float(d @ d), 0.0, 1.0)
    return np.linalg.norm(pixels - (second + t[:, None] * d), axis=1)


def read_background_colour(background: np.ndarray) -> str:
    """Named colour of a background layer: the colour whose two-tone segment its pixels lie closest to."""
    pixels = background.reshape(-1, 3)
    pixels = pixels[:: max(1, len(pixels) // 4096)]  # a spread-out sample is plenty
    return min(_NAMES, key=lambda c: float(_segment_distance(pixels, c).mean()))


# ---------------------------------------------------------------------------------------- background kind
def background_features(background: np.ndarray, colour: str) -> dict[str, float]:
    """Texture statistics of the tone map (0 = second tone, 1 = the colour), median-filtered against noise and
    averaged over three frames.

    mid: share of in-between tones (sharp textures have few); rows / cols: share of the tone variance explained by
    row means / column means (a sky gradient is all rows, vertical stripes all columns); crossings: sign changes
    of the row means down the frame (waves many, a horizon one); colour_share: share of pixels nearer the colour
    (polka dots are mostly colour, a checkerboard half); spread: standard deviation of the tone (~0: no texture).
    """
    c, second = background_tones(colour)
    d = c - second
    n = background.shape[0]
    feats = []
    for t in sorted({0, n // 2, n - 1}):
        tone = np.clip(((background[t] - second) @ d) / float(d @ d), 0.0, 1.0)
        tone = ndimage.median_filter(tone, size=3, mode="nearest")
        var = float(tone.var()) + 1e-6
        rows = tone.mean(1) - tone.mean()
        strong = rows[np.abs(rows) > 0.05 * np.abs(rows).max()]
        feats.append((float(((tone > 0.3) & (tone < 0.7)).mean()), float(rows.var()) / var,
                      float(tone.mean(0).var()) / var, float((np.diff(np.sign(strong)) != 0).sum()),
                      float((tone > 0.5).mean()), math.sqrt(var)))
    mid, rows_, cols, crossings, share, spread = np.mean(feats, axis=0)
    return {"mid": mid, "rows": rows_, "cols": cols, "crossings": crossings, "colour_share": share,
            "spread": spread}


def read_background_kind(background: np.ndarray, colour: str | None = None) -> str:
    """Background kind from texture statistics ("plain" when untextured); thresholds sit between the kinds'
    ranges on ground truth, which stay apart under noise and blur."""
    f = background_features(background, colour or read_background_colour(background))
    if f["spread"] < 0.04:
        return "plain"
    if f["cols"] > 0.8:
        return "stripes"
    if f["rows"] > 0.75:
        return "sky" if f["mid"] > 0.2 else "horizon"
    if f["cols"] < 0.06 and f["rows"] > 0.12 and f["crossings"] >= 5:
        return "waves"
    if f["mid"] < 0.3:
        return "dots" if f["colour_share"] > 0.62 else "checker"
    return "noise"


def read_background(background: np.ndarray) -> tuple[str, str]:
    """(kind, colour) of a background layer."""
    colour = read_background_colour(background)
    return read_background_kind(background, colour), colour


# ------------------------------------------------------------------------------------------------- shape
def main_object(alpha: np.ndarray) -> np.ndarray:
    """A frame's alpha restricted to a 2-pixel neighbourhood of its largest solid (> 0.5) blob: ignores specks
    and low-level noise elsewhere. All zero when nothing is solid."""
    labels, n = ndimage.label(alpha > 0.5)
    if n == 0:
        return np.zeros_like(alpha)
    sizes = ndimage.sum_labels(np.ones_like(alpha), labels, index=np.arange(1, n + 1))
    keep = ndimage.binary_dilation(labels == 1 + int(np.argmax(sizes)), iterations=2)
    return np.where(keep, alpha, 0.0)


def _moments(a: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    """Mass centre and standard deviations (x, y) of a coverage map."""
    m = float(a.sum())
    mx, my = float((a * xs).sum()) / m, float((a * ys).sum()) / m
    return mx, my, math.sqrt(float((a * (xs - mx) ** 2).sum()) / m), math.sqrt(float((a * (ys - my) ** 2).sum()) / m)


@cache
def _canonical_moments(shape: str) -> tuple[float, float, float, float]:
    """Moments of a shape's canonical coverage (radius 1), from a fine grid."""
    g = (np.arange(600) + 0.5) / 600 * 3.0 - 1.5
    u, v = np.meshgrid(g, g)
    return _moments(coverage(shape_sdf(shape, u, v) * 200.0), u, v)


def shape_scores(alpha: np.ndarray) -> dict[str, float] | None:
    """Soft IoU of one frame's matte with each shape's template, the template placed and scaled so that its
    mass centre and spread match the matte's (moments are sums, so noise and blur barely move them).
    None when the frame has too little solid area to judge."""
    a = main_object(alpha)
    if float((a > 0.5).sum()) < 12:
        return None
    ys_i, xs_i = np.nonzero(a)
    h, w = a.shape
    y0, y1 = max(0, ys_i.min() - 3), min(h, ys_i.max() + 4)
    x0, x1 = max(0, xs_i.min() - 3), min(w, xs_i.max() + 4)
    crop = a[y0:y1, x0:x1]
    xs, ys = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    mx, my, sdx, sdy = _moments(crop, xs, ys)
    scores = {}
    for shape in SHAPES:
        mu, mv, su, sv = _canonical_moments(shape)
        sx, sy = sdx / su, sdy / sv
        template = coverage(shape_sdf(shape, (xs - mx) / sx + mu, (ys - my) / sy + mv) * 0.5 * (sx + sy))
        scores[shape] = float(np.minimum(crop, template).sum() / max(np.maximum(crop, template).sum(), 1e-6))
    return scores


def read_shape(alpha: np.ndarray, max_frames: int = 8) -> str:
    """Shape of an alpha matte (T, H, W): template IoU on up to `max_frames` frames, votes weighted by area."""
    frames = np.unique(np.linspace(0, len(alpha) - 1, min(max_frames, len(alpha))).round().astype(int))
    total = dict.fromkeys(SHAPES, 0.0)
    for t in frames:
        scores = shape_scores(alpha[t])
        if scores is not None:
            area = float(alpha[t].sum())
            for shape, s in scores.items():
                total[shape] += area * s
    return max(total, key=total.get)


# ------------------------------------------------------------------------------------------------ motion
_SECTORS = ["right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right"]
assert set(_SECTORS) == set(DIRECTIONS)


def trajectory(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per visible frame: centroid (x / W, y / H) and area (pixels) of the main object; invisible frames dropped.
    Also returns the visible frames' indices."""
    t, h, w = alpha.shape
    alpha = np.stack([main_object(frame) for frame in alpha])
    area = alpha.sum((1, 2))
    visible = area > max(2.0, 0.1 * float(np.median(area)))
    a = alpha[visible]
    ar = area[visible]
    if len(ar) == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    cx = (a * (np.arange(w) + 0.5)[None, None, :]).sum((1, 2)) / ar / w
    cy = (a * (np.arange(h) + 0.5)[None, :, None]).sum((1, 2)) / ar / h
    return np.stack([cx, cy], 1), ar, np.nonzero(visible)[0]


def read_motion(alpha: np.ndarray) -> str:
    """Motion of an alpha matte (T, H, W) from its centroid path and area; "static" if nothing moves."""
    centre, area, _ = trajectory(alpha)
    if len(area) < 3:
        return "static"
    ends = max(1, len(area) // 6)
    growth = area[-ends:].mean() / max(area[:ends].mean(), 1e-6)
    if growth > 2.0:
        return "growing"
    if growth < 0.5:
        return "shrinking"
    d = centre[-1] - centre[0]
    dist = float(np.hypot(*d))
    path = float(np.hypot(*np.diff(centre, axis=0).T).sum())
    x_range, y_range = np.ptp(centre, axis=0)

    def direction() -> str:
        return _SECTORS[int(round(math.atan2(-d[1], d[0]) / (math.pi / 4))) % 8]

    if dist > 0.15 and path < 1.5 * dist:
        return direction()
    if y_range > 0.1 and x_range < 0.4 * y_range:
        return "bouncing"
    if min(x_range, y_range) > 0.1:
        return "circling"
    return direction() if dist > 0.05 else "static"


# ------------------------------------------------------------------------------------------ whole clips
def read_clip(video: LayeredVideo) -> dict[str, Any]:
    """Every attribute the readers can see: background kind/colour and per layer colour/shape/motion."""
    kind, colour = read_background(video.background)
    return {
        "background": {"kind": kind, "colour": colour},
        "objects": [{"colour": read_foreground_colour(fg, a), "shape": read_shape(a), "motion": read_motion(a)}
                    for fg, a in zip(video.foregrounds, video.alphas)],
    }


def recomposite_psnr(video: LayeredVideo, cap: float = 100.0) -> float:
    """PSNR (dB, capped) of the full video against the composite of its own layers: are the layers consistent?"""
    mse = float(np.mean((video.full - video.composite()) ** 2))
    return cap if mse <= 10 ** (-cap / 10) else 10 * math.log10(1.0 / mse)


def object_in_background(video: LayeredVideo, bg_colour: str | None = None) -> float:
    """Share of object pixels (alpha > 0.5) where the background layer looks more like the object than like a
    background: the object was painted into the background instead of (or as well as) its own layer."""
    bg_colour = bg_colour or read_background_colour(video.background)
    shares = []
    for fg, a in zip(video.foregrounds, video.alphas):
        mask = a > 0.5
        if not mask.any():
            continue
        under = video.background[mask]
        to_object = np.linalg.norm(under - foreground_mean_rgb(fg, a), axis=1)
        shares.append(float((to_object < _segment_distance(under, bg_colour)).mean()))
    return float(np.mean(shares)) if shares else 0.0


def alpha_hardness(video: LayeredVideo) -> float:
    """1 - mean 4a(1 - a): 1 for a perfectly binary matte; anti-aliased edges cost a little."""
    return float(1.0 - np.mean([np.mean(4 * a * (1 - a)) for a in video.alphas]))


def alpha_flicker(video: LayeredVideo) -> float:
    """Mean |second temporal difference| of each matte's area, relative to its mean area: smooth motion and
    steady growth give ~0, popping in and out gives a lot."""
    values = []
    for a in video.alphas:
        area = a.sum((1, 2)).astype(np.float64)
        if len(area) >= 3 and area.mean() > 0:
            values.append(float(np.abs(np.diff(area, 2)).mean() / area.mean()))
    return float(np.mean(values)) if values else 0.0


def score_clip(video: LayeredVideo, spec: ClipSpec) -> dict[str, Any]:
    """One clip's reads compared with its spec, plus the layer-quality metrics."""
    read = read_clip(video)
    pairs = list(zip(read["objects"], spec.objects))
    return {
        "seed": spec.seed,
        "prompt": spec.prompts.get("full", ""),
        "fg_colour": [r["colour"] == o.colour for r, o in pairs],
        "fg_shape": [r["shape"] == o.shape for r, o in pairs],
        "fg_motion": [r["motion"] == o.motion for r, o in pairs],
        "bg_kind": read["background"]["kind"] == spec.background.kind,
        "bg_colour": read["background"]["colour"] == spec.background.colour,
        "recomposite_psnr": recomposite_psnr(video),
        "object_in_background": object_in_background(video, read["background"]["colour"]),
        "alpha_hardness": alpha_hardness(video),
        "alpha_flicker": alpha_flicker(video),
        "read": read,
        "truth": {"background": {"kind": spec.background.kind, "colour": spec.background.colour},
                  "objects": [{"colour": o.colour, "shape": o.shape, "motion": o.motion} for o in spec.objects]},
    }


ACCURACIES = ("fg_colour", "fg_shape", "fg_motion", "bg_kind", "bg_colour")
METRICS = ("recomposite_psnr", "object_in_background", "alpha_hardness", "alpha_flicker")


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracies (per object for fg_*, per clip for bg_*) and mean metrics over scored clips."""
    out: dict[str, float] = {"clips": float(len(rows))}
    for key in ACCURACIES:
        hits = [h for r in rows for h in (r[key] if isinstance(r[key], list) else [r[key]])]
        out[key] = float(np.mean(hits)) if hits else float("nan")
    for key in METRICS:
        out[key] = float(np.mean([r[key] for r in rows])) if rows else float("nan")
    return out


def format_table(summary: dict[str, float], title: str = "") -> str:
    """One markdown table: metric | value."""
    better = {"recomposite_psnr": "dB, higher is better (capped at 100)", "object_in_background": "lower is better",
              "alpha_hardness": "1 = binary", "alpha_flicker": "lower is better"}
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value | note |", "|---|---|---|"]
    for key, value in summary.items():
        note = better.get(key, "accuracy" if key in ACCURACIES else "")
        text = f"{int(value)}" if key == "clips" else f"{value:.2f}" if key == "recomposite_psnr" else f"{value:.4f}"
        lines.append(f"| {key} | {text} | {note} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- reader validation
def validate_readers(n: int = 200, seed: int = 0, split: str = "train", **kwargs: Any) -> dict[str, float]:
    """Reader accuracy on `n` ground-truth clips (seeds seed .. seed + n - 1); prints and returns it.
    `kwargs` go to :func:`layert2v.data.world.sample_spec` (num_frames, height, width, num_foregrounds)."""
    rows = [score_clip(render(spec), spec) for spec in (sample_spec(seed + i, split=split, **kwargs)
                                                        for i in range(n))]
    acc = {k: v for k, v in summarise(rows).items() if k in ACCURACIES}
    print(f"reader accuracy on {n} ground-truth {split} clips: "
          + ", ".join(f"{k} {v:.1%}" for k, v in acc.items()))
    return acc


# ----------------------------------------------------------------------------------------------- running
def generate(pipe: Any, prompts: dict[str, Any], seed: int, *, num_frames: int = 17, height: int = 64,
             width: int = 64, guidance_scale: float | None = None) -> LayeredVideo:
    """The one call into the model: a layered video for a case's three-level prompts."""
    return pipe(prompt=prompts["full"], background_prompt=prompts["background"],
                foreground_prompts=list(prompts["foregrounds"]), num_frames=num_frames, height=height, width=width,
                guidance_scale=guidance_scale, seed=seed, progress=False)


def fitting_cases(cases: list[ClipSpec], encoder: Any) -> tuple[list[ClipSpec], list[int]]:
    """The cases whose every prompt fits the text encoder's window, and the seeds of those that do not."""
    def fits(spec: ClipSpec) -> bool:
        p = spec.prompts
        return all(encoder.num_tokens(t) <= encoder.max_length for t in [p["full"], p["background"],
                                                                         *p["foregrounds"]])

    return [c for c in cases if fits(c)], [c.seed for c in cases if not fits(c)]


def run(cases: list[ClipSpec], produce: Callable[[ClipSpec, int], LayeredVideo], seeds: int = 1
        ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Score `produce(case, seed)` for every case and generation seed 0 .. seeds - 1."""
    rows = []
    for spec in cases:
        for s in range(seeds):
            row = score_clip(produce(spec, s), spec)
            row["generation_seed"] = s
            rows.append(row)
    return summarise(rows), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a directory LayerT2VPipeline.from_pretrained can load")
    source.add_argument("--ground-truth", action="store_true", help="score the ground-truth clips (no model)")
    parser.add_argument("--n", type=int, default=50, help="held-out cases")
    parser.add_argument("--seeds", type=int, default=1, help="generation seeds per case (0 .. S-1)")
    parser.add_argument("--case-seed", type=int, default=0, help="first held-out case seed")
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"])
    parser.add_argument("--num-foregrounds", type=int, default=None, help="objects per case (default: 1 to 3)")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cuda if available)")
    parser.add_argument("--out", type=Path, default=None, help="directory for results.json and results.md")
    args = parser.parse_args(argv)

    shape = {"num_frames": args.frames, "height": args.height, "width": args.width,
             "num_foregrounds": args.num_foregrounds}
    if args.split == "heldout":
        cases = heldout_prompts(args.n, seed=args.case_seed, **shape)
    else:
        cases = [sample_spec(args.case_seed + i, **shape) for i in range(args.n)]

    start = time.perf_counter()
    if args.ground_truth:
        title = f"ground truth, {args.split} ({args.n} cases)"
        summary, rows = run(cases, lambda spec, s: render(spec), seeds=1)
    else:
        import torch

        from layert2v.pipeline import LayerT2VPipeline

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = LayerT2VPipeline.from_pretrained(args.model).to(device)
        guidance = pipe.config.guidance_scale if args.guidance is None else args.guidance
        cases, skipped = fitting_cases(cases, pipe.text_encoder)
        if skipped:  # the pipeline refuses prompts longer than its text window rather than cut them
            window = pipe.text_encoder.max_length
            print(f"skipped {len(skipped)} case(s) whose prompts exceed the text encoder's {window} tokens (case "
                  f"seeds {', '.join(map(str, skipped))})")
        title = (f"{args.model}, {args.split} ({len(cases)} of {args.n} cases x {args.seeds} seeds, guidance "
                 f"{guidance:g})")
        summary, rows = run(cases, lambda spec, s: generate(pipe, spec.prompts, s, num_frames=args.frames,
                                                            height=args.height, width=args.width,
                                                            guidance_scale=guidance), seeds=args.seeds)
    table = format_table(summary, title)
    print(table)
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"title": title, "summary": summary, "cases": rows},
                                                          indent=1))
        (args.out / "results.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
