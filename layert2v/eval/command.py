"""`layert2v eval`: score saved layered videos and write a report directory.

    layert2v eval outputs/* [--gt DIR] [--weights DIR] [--trajectories FILE] --out REPORT_DIR

The CLI calls :func:`add_eval_arguments` on its sub-parser and :func:`run_eval` with the parsed args.
"""

from __future__ import annotations

import argparse
import datetime
import glob
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..formats import REPORT_FILE, VIDEO_FORMAT, VIDEO_MANIFEST, read_json_object
from ..output_dirs import atomic_directory, check_output_directory
from ..video import LayeredVideo
from . import layers, report, suite, trajectory
from .backbones import load_backbones

MIN_FRAMES = 3  # Motion Smoothness needs two even frames around an odd one


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="directories written by LayeredVideo.save, folders holding them, or quoted globs")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR",
                        help="report directory to write (report.json, report.md, *.png); an earlier report there "
                             "is replaced")
    parser.add_argument("--gt", metavar="DIR",
                        help="ground-truth layered videos saved the same way, matched by directory name (or by "
                             "order when no name matches): enables alpha IoU, matting, per-layer PSNR and the "
                             "recomposite PSNR against the ground truth's full video (a decomposition's input)")
    parser.add_argument("--weights", metavar="DIR",
                        help="local backbone weights for the model-based VBench dimensions (layout in "
                             "docs/EVALUATION.md); without it those dimensions are reported as skipped")
    parser.add_argument("--trajectories", metavar="FILE",
                        help='JSON {"<video dir name>": {"objects": [...]}} of requested box trajectories; '
                             "otherwise each video's own trajectory.json is used when present")


# ------------------------------------------------------------------------------------------ inputs
def is_saved_video(path: Path) -> bool:
    """A directory written by LayeredVideo.save: it has a manifest.json of our format."""
    manifest = path / VIDEO_MANIFEST
    if not manifest.is_file():
        return False
    try:
        return read_json_object(manifest).get("format") == VIDEO_FORMAT
    except (ValueError, OSError):
        return False


def _saved_children(path: Path) -> list[Path]:
    return [c for c in sorted(path.iterdir()) if c.is_dir() and is_saved_video(c)] if path.is_dir() else []


def resolve_videos(patterns: list[str]) -> list[Path]:
    """Expand PATH arguments: a saved video, a folder of saved videos, or a glob (non-videos it matches are ignored)."""
    found: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(pattern))]
            videos = [m for m in matches if is_saved_video(m)] + [c for m in matches for c in _saved_children(m)]
            if not videos:
                raise FileNotFoundError(f"no saved layered video matches {pattern!r}; check the pattern")
            found += videos
            continue
        path = Path(pattern)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass directories written by LayeredVideo.save")
        if is_saved_video(path):
            found.append(path)
        elif children := _saved_children(path):
            found += children
        else:
            raise ValueError(
                f"{path} is not a saved layered video (no manifest.json with format {VIDEO_FORMAT!r}) and holds "
                "none; pass directories written by LayeredVideo.save"
            )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    names: dict[str, Path] = {}
    for p in unique:
        if p.name in names:
            raise ValueError(f"two inputs are named {p.name!r} ({names[p.name]}, {p}); evaluate them in separate runs")
        names[p.name] = p
    return unique


def match_ground_truth(videos: list[Path], gt_dir: str | Path) -> dict[Path, Path]:
    """Pair each video with a ground truth: same directory name, else (if no name matches) the same order."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"--gt {gt_dir} is not a directory")
    candidates = [gt_dir.resolve()] if is_saved_video(gt_dir) else [c.resolve() for c in _saved_children(gt_dir)]
    if not candidates:
        raise ValueError(f"--gt {gt_dir} holds no saved layered videos; save ground truths with LayeredVideo.save")
    by_name = {c.name: c for c in candidates}
    if all(v.name in by_name for v in videos):
        return {v: by_name[v.name] for v in videos}
    if not any(v.name in by_name for v in videos) and len(candidates) == len(videos):
        return dict(zip(videos, candidates))
    missing = [v.name for v in videos if v.name not in by_name]
    raise ValueError(
        f"no ground truth named {missing[0]!r} in {gt_dir} ({len(missing)} unmatched): name ground-truth "
        f"directories like the videos, or give exactly {len(videos)} in the same order"
    )


def requested_trajectories(videos: list[Path], file: str | Path | None) -> dict[Path, Any]:
    """Raw trajectory documents per video: from --trajectories (by directory name), else DIR/trajectory.json."""
    mapping: dict[str, Any] = {}
    if file is not None:
        if not Path(file).is_file():
            raise FileNotFoundError(f"--trajectories {file} does not exist")
        mapping = trajectory.read_json(file)  # type: ignore[assignment]
        if not isinstance(mapping, dict):
            raise ValueError(f'--trajectories {file}: expected {{"<video dir name>": {{"objects": [...]}}}}')
        if not any(v.name in mapping for v in videos):
            raise ValueError(f"--trajectories {file} names none of the videos; key it by video directory name")
    docs = {}
    for v in videos:
        if v.name in mapping:
            docs[v] = mapping[v.name]
        elif (v / "trajectory.json").is_file():
            docs[v] = trajectory.read_json(v / "trajectory.json")
    return docs


def preflight(videos: list[Path], gt_paths: dict[Path, Path], traj_docs: dict[Path, Any]) -> None:
    """Catch mismatched ground truths and bad trajectory files from the manifests, before hours of decoding.

    Fields a manifest lacks are not checked here; the full check runs again on the decoded videos.
    """
    def shape(path: Path) -> tuple[Any, Any, Any]:
        manifest = read_json_object(path / VIDEO_MANIFEST)
        return manifest.get("frames"), manifest.get("size"), manifest.get("num_foregrounds")

    for video in videos:
        frames, size, k = shape(video)
        if video in gt_paths:
            gt_frames, gt_size, gt_k = shape(gt_paths[video])
            if (gt_frames, gt_size) != (frames, size):
                raise ValueError(f"ground truth for {video.name} has {gt_frames} frames of {gt_size} but the video "
                                 f"{frames} of {size}: resize/trim one of them so they match")
            if gt_k != k:
                raise ValueError(f"ground truth for {video.name} has {gt_k} foreground(s) but the video has {k}: "
                                 "give a ground truth with the same layer count")
        if video in traj_docs and isinstance(frames, int) and isinstance(k, int):
            trajectory.parse_trajectory(traj_docs[video], frames, k, f"trajectory for {video.name}")
            if (video / "detections.json").is_file():
                doc = trajectory.read_json(video / "detections.json")
                trajectory.parse_trajectory(doc, frames, k, str(video / "detections.json"))


def _load(path: Path, role: str) -> LayeredVideo:
    video = LayeredVideo.load(path)
    if video.num_frames < MIN_FRAMES:
        raise ValueError(f"{role} {path} has {video.num_frames} frame(s); evaluation needs at least {MIN_FRAMES}")
    return video


def _check_out(out: Path) -> None:
    """An earlier report is replaced (no --overwrite needed); any other non-empty directory is refused."""
    check_output_directory(out, overwrite=True, marker=REPORT_FILE)


def _write_atomically(out: Path, content: dict[str, Any]) -> None:
    """Build the report in a sibling temp directory, then swap it into place."""
    with atomic_directory(out, overwrite=True, marker=REPORT_FILE) as tmp:
        try:
            content["plots"] = report.plots(content, tmp)
        except ImportError:
            content["plots"] = []
            content["plots_skipped"] = "matplotlib is not installed"
        report.write_json(content, tmp / REPORT_FILE)
        (tmp / "report.md").write_text(report.markdown(content) + "\n")


# ------------------------------------------------------------------------------------------ the run
def run_eval(args: argparse.Namespace) -> int:
    """Evaluate every video, pool the scores and write the report directory. Returns the exit code."""
    videos = resolve_videos(list(args.paths))
    gt_paths = match_ground_truth(videos, args.gt) if getattr(args, "gt", None) else {}
    traj_docs = requested_trajectories(videos, getattr(args, "trajectories", None))
    preflight(videos, gt_paths, traj_docs)
    out = Path(args.out)
    _check_out(out)
    nets = load_backbones(getattr(args, "weights", None))

    per_video = []
    for path in tqdm(videos, desc="eval", unit="video"):
        video = _load(path, "video")
        gt = None
        if path in gt_paths:
            gt = _load(gt_paths[path], "ground truth")
            layers.check_matches(video, gt, path.name)
        requested = detected = None
        if path in traj_docs:
            shape = (video.num_frames, video.num_foregrounds)
            requested = trajectory.parse_trajectory(traj_docs[path], *shape, f"trajectory for {path.name}")
            if (path / "detections.json").is_file():
                doc = trajectory.read_json(path / "detections.json")
                detected = trajectory.parse_trajectory(doc, *shape, str(path / "detections.json"))
        result = suite.evaluate_video(video, nets, gt, requested, detected)
        per_video.append({"name": path.name, "path": str(path), "gt": str(gt_paths[path]) if gt else None, **result})

    content = {
        "format": report.FORMAT,
        "version": 1,
        "name": out.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "videos": [p.name for p in videos],
        "weights": str(args.weights) if getattr(args, "weights", None) else None,
        "skipped": nets.skipped,
        "summary": suite.pool(per_video, nets.skipped),
        "per_video": per_video,
    }
    _write_atomically(out, content)
    print(f"wrote {out / 'report.md'} and report.json ({len(videos)} video(s))")
    return 0
