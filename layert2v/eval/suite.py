"""Evaluate one layered video on every metric, and pool per-video results into benchmark scores.

The VBench columns follow the papers: FG = each foreground layer, premultiplied by its alpha (i.e.
composited on black, as the papers' figures show it) and scored as its own clip with its own prompt;
BG = the generated background; BL = the generated full video (not the recomposition, which the layer
metrics judge separately).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..video import LayeredVideo
from . import layers, matting, trajectory, vbench
from .backbones import Backbones

COLUMNS = ("FG", "BG", "BL")


def clips(video: LayeredVideo) -> dict[str, list[tuple[np.ndarray, str | None]]]:
    """Per column, the clips to score and their prompts (None when the video carries none)."""
    prompts = video.prompts or {}
    fg_prompts = list(prompts.get("foregrounds") or [])
    return {
        "FG": [
            (video.premultiplied(k), fg_prompts[k - 1] if k - 1 < len(fg_prompts) else None)
            for k in range(1, video.num_foregrounds + 1)
        ],
        "BG": [(video.background, prompts.get("background"))],
        "BL": [(video.full, prompts.get("full"))],
    }


def _score_clip(dim: str, frames: np.ndarray, prompt: str | None, fps: float, nets: Backbones) -> Any:
    if dim == "temporal_flickering":
        return vbench.temporal_flickering(frames)
    if dim == "frame_difference":
        return vbench.frame_difference(frames)
    if dim == "subject_consistency":
        total, count = vbench.consistency(frames, nets.dino)
        return total / count
    if dim == "background_consistency":
        total, count = vbench.consistency(frames, nets.clip)
        return total / count
    if dim == "motion_smoothness":
        return vbench.motion_smoothness(frames, nets.interpolator)
    if dim == "aesthetic_quality":
        return vbench.aesthetic_quality(frames, nets.aesthetic)
    if dim == "dynamic_degree":
        return vbench.dynamic_degree(frames, fps, nets.flow)
    if dim == "text_alignment":
        return None if not prompt else vbench.text_alignment(frames, prompt, nets.video_text)
    raise KeyError(dim)


def vbench_scores(video: LayeredVideo, nets: Backbones) -> dict[str, dict[str, list]]:
    """{dimension: {column: [per-clip score]}} for every dimension whose backbone is loaded."""
    per_column = clips(video)
    out: dict[str, dict[str, list]] = {}
    for dim in vbench.DIMENSIONS:
        if dim in nets.skipped:
            continue
        out[dim] = {
            col: [_score_clip(dim, frames, prompt, video.fps, nets) for frames, prompt in per_column[col]]
            for col in COLUMNS
        }
    return out


def evaluate_video(
    video: LayeredVideo,
    nets: Backbones,
    gt: LayeredVideo | None = None,
    requested: dict[int, list] | None = None,
    detected: dict[int, list] | None = None,
) -> dict[str, Any]:
    """Every metric for one video. `requested`/`detected` are parsed trajectory documents (foreground -> boxes)."""
    result: dict[str, Any] = {
        "num_frames": video.num_frames,
        "size": list(video.size),
        "fps": video.fps,
        "num_foregrounds": video.num_foregrounds,
        "vbench": vbench_scores(video, nets),
        "layers": {
            "recomposite_psnr": layers.recomposite_psnr(video),
            "fg_leakage": layers.fg_leakage(video),
            "alpha_binariness": layers.alpha_binariness(video),
            "alpha_stability": layers.alpha_stability(video),
            "alpha_stability_curve": layers.alpha_stability_curve(video).tolist(),
        },
    }
    if gt is not None:
        result["gt_layers"] = layers.gt_layer_metrics(video, gt)
        result["matting"] = {
            f"foreground_{k}": matting.matting_metrics(video.alphas[k - 1], gt.alphas[k - 1])
            for k in range(1, video.num_foregrounds + 1)
        }
    if requested is not None:
        predicted = detected if detected is not None else trajectory.alpha_tracks(video.alphas)
        result["trajectory"] = {
            "source": "detections" if detected is not None else "alpha",
            "objects": [
                vars(trajectory.score_object(predicted.get(k, [None] * video.num_frames), boxes, k))
                for k, boxes in sorted(requested.items())
            ],
        }
    return result


# ------------------------------------------------------------------------------------------ pooling
def _mean(values: list) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def pool_vbench(per_video: list[dict[str, Any]], skipped: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Benchmark score per dimension and column, as VBench pools them.

    Consistency dimensions weight clips by their number of frame pairs (VBench divides the sum of all
    per-frame terms by their count); Dynamic Degree is the share of dynamic clips; the rest average clips.
    """
    out: dict[str, dict[str, Any]] = {}
    for dim in vbench.DIMENSIONS:
        if dim in skipped:
            out[dim] = {"skipped": skipped[dim]}
            continue
        out[dim] = {}
        for col in COLUMNS:
            scores, weights = [], []
            for video in per_video:
                for score in video["vbench"][dim][col]:
                    if score is not None:
                        scores.append(float(score))
                        weights.append(video["num_frames"] - 1)
            if not scores:
                out[dim][col] = None
            elif dim in ("subject_consistency", "background_consistency"):
                out[dim][col] = float(np.dot(scores, weights) / np.sum(weights))
            else:
                out[dim][col] = float(np.mean(scores))
        if dim == "text_alignment" and all(out[dim][c] is None for c in COLUMNS):
            out[dim] = {"skipped": "no prompts saved with the videos"}
    return out


def pool(per_video: list[dict[str, Any]], skipped: dict[str, str]) -> dict[str, Any]:
    """All benchmark-level numbers, each with the count it rests on; absent sections say why."""
    summary: dict[str, Any] = {"vbench": pool_vbench(per_video, skipped)}
    layer_keys = ("recomposite_psnr", "fg_leakage", "alpha_binariness", "alpha_stability")
    summary["layers"] = {key: _mean([v["layers"][key] for v in per_video]) for key in layer_keys}

    with_gt = [v for v in per_video if "gt_layers" in v]
    if with_gt:
        def gt_mean(prefix: str) -> float | None:
            return _mean([val for v in with_gt for key, val in v["gt_layers"].items() if key.startswith(prefix)])

        summary["gt_layers"] = {
            "psnr": {"FG": gt_mean("psnr_foreground_"), "BG": gt_mean("psnr_background"), "BL": gt_mean("psnr_full"),
                     "alpha": gt_mean("psnr_alpha_")},
            "recomposite_psnr": gt_mean("psnr_recomposite"),
            "iou_alpha": gt_mean("iou_alpha_"),
            "videos": len(with_gt),
        }
        mattes = [m for v in with_gt for m in v["matting"].values()]
        summary["matting"] = {key: _mean([m[key] for m in mattes]) for key in ("sad", "mse", "grad", "conn", "dtssd")}
        summary["matting"]["mattes"] = len(mattes)
    else:
        summary["gt_layers"] = summary["matting"] = {"skipped": "no --gt directory given"}

    objects = [trajectory.ObjectScore(**o) for v in per_video if "trajectory" in v for o in v["trajectory"]["objects"]]
    if objects:
        summary["trajectory"] = trajectory.summarise(objects)
        summary["trajectory"]["videos"] = sum("trajectory" in v for v in per_video)
    else:
        summary["trajectory"] = {"skipped": "no trajectory.json in the video directories and no --trajectories file"}
    return summary
