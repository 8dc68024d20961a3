"""Write an evaluation report: report.json (everything), report.md (the tables) and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .suite import COLUMNS
from .trajectory import HIT_RATE
from .vbench import DIMENSIONS

FORMAT = "layert2v-eval-report"


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, NaN/inf -> None, so report.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_plain(report), indent=2, allow_nan=False) + "\n")


# -------------------------------------------------------------------------------------------- markdown
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(report: dict[str, Any]) -> str:
    """The report's tables: VBench (dimensions x FG/BG/BL, then one Table-1-shaped row), layers, GT, trajectories."""
    summary = report["summary"]
    vb = summary["vbench"]
    lines = [f"# Layered-video evaluation: {len(report['videos'])} video(s)", ""]
    lines += [f"Videos: {', '.join(report['videos'])}", ""]

    lines += ["## VBench dimensions", "",
              "FG = each foreground premultiplied by its alpha (on black), BG = background, BL = full video. "
              "Higher is better except Frame Difference, which is 0 for a still video and is listed beside "
              "Temporal Flickering because a still video flickers perfectly.", ""]
    rows, notes = [], []
    for dim, title in DIMENSIONS.items():
        cell = vb[dim]
        if "skipped" in cell:
            rows.append([title, "skipped", "skipped", "skipped"])
            notes.append(f"- {title}: skipped — {cell['skipped']}")
        else:
            rows.append([title] + [_fmt(cell[c]) for c in COLUMNS])
    lines += _table(["Dimension", "FG", "BG", "BL"], rows) + [""] + notes + [""]

    table1 = ["aesthetic_quality", "motion_smoothness", "temporal_flickering", "subject_consistency", "text_alignment"]
    header = ["Run"] + [f"{DIMENSIONS[d].split(' (')[0]} {c}" for d in table1 for c in COLUMNS]
    row = [report.get("name", "this run")] + [
        "skipped" if "skipped" in vb[d] else _fmt(vb[d][c]) for d in table1 for c in COLUMNS
    ]
    lines += ["Shaped like LayerT2V Table 1 (one row per run, to paste next to the paper's):", ""]
    lines += _table(header, [row]) + [""]

    lay = summary["layers"]
    lines += ["## Layer metrics (no ground truth)", ""]
    lines += _table(["Metric", "Value"], [
        ["Recomposite PSNR (dB) ↑", _fmt(lay["recomposite_psnr"], 2)],
        ["FG colour leakage into BG ↓", _fmt(lay["fg_leakage"])],
        ["Alpha binariness ↑", _fmt(lay["alpha_binariness"])],
        ["Alpha temporal change ↓", _fmt(lay["alpha_stability"], 5)],
    ]) + [""]

    gt = summary["gt_layers"]
    lines += ["## Against ground truth", ""]
    if "skipped" in gt:
        lines += [f"Skipped — {gt['skipped']}.", ""]
    else:
        psnr = gt["psnr"]
        lines += _table(["", "FG", "BG", "BL", "Alpha"], [
            ["PSNR (dB) ↑"] + [_fmt(psnr[c], 2) for c in ("FG", "BG", "BL", "alpha")],
        ]) + ["", f"Alpha IoU (> 0.5) ↑: {_fmt(gt['iou_alpha'])} over {gt['videos']} video(s)", "",
              f"Recomposite PSNR against the ground truth's full video (for a decomposition: its input) ↑: "
              f"{_fmt(gt['recomposite_psnr'], 2)} dB", ""]
        m = summary["matting"]
        lines += _table(["SAD (/1000) ↓", "MSE (×1e3) ↓", "Grad (/1000) ↓", "Conn (/1000) ↓", "dtSSD (×1e2) ↓"], [
            [_fmt(m["sad"]), _fmt(m["mse"]), _fmt(m["grad"]), _fmt(m["conn"]), _fmt(m["dtssd"])],
        ]) + ["", f"Matting errors averaged over {m['mattes']} matte(s).", ""]

    tr = summary["trajectory"]
    lines += ["## Trajectories", ""]
    if "skipped" in tr:
        lines += [f"Skipped — {tr['skipped']}.", ""]
    else:
        lines += _table(["mIoU ↑", "hit-rate@0.5 ↑", "Objects", "Requested frames"], [
            [_fmt(tr["miou"]), _fmt(tr[HIT_RATE]), str(tr["objects"]), str(tr["frames"])],
        ]) + [""]

    lines += ["## Per video", ""]
    rows = []
    for v in report["per_video"]:
        flick = v["vbench"]["temporal_flickering"]
        diff = v["vbench"]["frame_difference"]
        rows.append([v["name"], str(v["num_frames"]), _fmt(float(np.mean(flick["FG"]))), _fmt(flick["BG"][0]),
                     _fmt(flick["BL"][0]), _fmt(diff["BL"][0], 2), _fmt(v["layers"]["recomposite_psnr"], 2),
                     _fmt(v["layers"]["alpha_binariness"])])
    lines += _table(["Video", "Frames", "Flicker FG", "Flicker BG", "Flicker BL", "Frame diff BL", "Recomp. PSNR",
                     "Alpha binariness"], rows) + [""]
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    elif report.get("plots_skipped"):
        lines += [f"Plots skipped — {report['plots_skipped']}.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- plots
def plots(report: dict[str, Any], directory: Path) -> list[str]:
    """scores.png (per-video distribution of a few scores) and alpha_stability.png (per-frame matte change)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    videos = report["per_video"]
    panels = {
        "Temporal Flickering (BL)": [v["vbench"]["temporal_flickering"]["BL"][0] for v in videos],
        "Frame Difference (BL, 0-255)": [v["vbench"]["frame_difference"]["BL"][0] for v in videos],
        "Recomposite PSNR (dB)": [v["layers"]["recomposite_psnr"] for v in videos],
        "Alpha binariness": [v["layers"]["alpha_binariness"] for v in videos],
    }
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (title, values) in zip(axes, panels.items()):
        ax.boxplot(values, widths=0.5, showfliers=False)
        ax.scatter(1 + rng.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
    fig.suptitle(f"Per-video scores ({len(videos)} videos)", fontsize=10)
    fig.tight_layout()
    fig.savefig(directory / "scores.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for v in videos[:20]:
        curve = v["layers"]["alpha_stability_curve"]
        ax.plot(range(2, len(curve) + 2), curve, lw=1, label=v["name"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame t")
    ax.set_ylabel("mean |a_t - a_(t-1)|")
    ax.set_title("Alpha temporal change per frame" + (" (first 20 videos)" if len(videos) > 20 else ""), fontsize=10)
    if len(videos) <= 10:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(directory / "alpha_stability.png", dpi=120)
    plt.close(fig)
    return ["scores.png", "alpha_stability.png"]
