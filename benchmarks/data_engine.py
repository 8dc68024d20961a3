"""The data engine on static-camera footage with known layers (layert2v.data.engine.footage: a photograph with textured
discs crossing it), weight-free backends:

- quality against the truth: alpha IoU@0.5, matting SAD / MSE (layert2v.eval.matting), clean-plate PSNR, and
  recomposite PSNR of the saved layers against the saved full video;
- throughput: clips per minute in one process (--local) and on a local Ray (all cores), each into a fresh dataset;
- kill and resume: a `layert2v data build` subprocess is killed once half the clips are done, then rerun; the
  rerun must process exactly the clips without a done marker, and the dataset must end with every clip.

    python benchmarks/data_engine.py --n 8 --size 64 --frames 17
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from layert2v.data.engine.build import build
from layert2v.data.engine.config import parse_config
from layert2v.data.engine.footage import make_clip, write_footage
from layert2v.data.folder import FolderDataset
from layert2v.eval.layers import iou, psnr
from layert2v.eval.matting import mse, sad


def quality(dataset: Path, truths: dict) -> dict[str, float]:
    data = FolderDataset(dataset)
    rows: dict[str, list[float]] = {"alpha IoU@0.5": [], "matting SAD": [], "matting MSE x1e3": [],
                                    "clean-plate PSNR (dB)": [], "recomposite PSNR (dB)": []}
    for i, record in enumerate(data.records):
        video, truth = data[i], truths[record["source"]]
        rows["alpha IoU@0.5"].append(iou(video.alphas[0], truth.alphas[0]))
        rows["matting SAD"].append(float(np.mean([sad(p, g) for p, g in zip(video.alphas[0], truth.alphas[0])])))
        rows["matting MSE x1e3"].append(float(np.mean([mse(p, g) for p, g in zip(video.alphas[0],
                                                                                  truth.alphas[0])])))
        rows["clean-plate PSNR (dB)"].append(psnr(video.background, truth.background))
        rows["recomposite PSNR (dB)"].append(psnr(video.composite(), video.full))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def timed(footage: Path, out: Path, executor: str) -> tuple[int, float]:
    start = time.perf_counter()
    summary = build(footage, out, parse_config({}), executor=executor, progress=False)
    seconds = time.perf_counter() - start
    if summary.rejected:
        print(f"  ({len(summary.rejected)} rejected: {summary.rejected[0]['reason']})")
    return len(summary.accepted) + len(summary.rejected), seconds


def kill_and_resume(footage: Path, out: Path, n: int) -> tuple[int, int, int, int, float]:
    """(done before the kill, processed by the rerun, redone, clips accounted for at the end, rerun seconds)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "layert2v.cli", "data", "build", str(footage), "--out", str(out), "--local"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / ".engine" / "records"
    while proc.poll() is None and (not records.is_dir() or len(list(records.glob("*.json"))) < n // 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.stem for p in records.glob("*.json")}
    processed: list[str] = []
    start = time.perf_counter()
    summary = build(footage, out, parse_config({}), executor="local", progress=False,
                    on_clip=lambda clip, record: processed.append(clip.id))
    seconds = time.perf_counter() - start
    redone = len(before & set(processed))
    return len(before), len(processed), redone, len(summary.accepted) + len(summary.rejected), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="clips")
    parser.add_argument("--size", type=int, default=64, help="width = height")
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="data-engine-bench-"))
    try:
        footage, truths = work / "footage", {}
        for i in range(args.n):
            truths[f"clip{i:03d}.mov"] = make_clip(i, num_frames=args.frames, size=(args.size, args.size))
            write_footage(footage, f"clip{i:03d}", truths[f"clip{i:03d}.mov"])
        print(f"{args.n} clips, {args.size}x{args.size}, {args.frames} frames, static camera, weight-free backends, "
              f"{os.cpu_count()} CPU cores")

        count, local_s = timed(footage, work / "local", "local")
        print(f"one process:  {count} clips in {local_s:.1f} s = {60 * count / local_s:.1f} clips/min")
        count, ray_s = timed(footage, work / "ray", "ray")
        print(f"local Ray:    {count} clips in {ray_s:.1f} s = {60 * count / ray_s:.1f} clips/min (including Ray's "
              "start)")
        for name, value in quality(work / "local", truths).items():
            print(f"  {name:24s} {value:8.3f}")

        done, processed, redone, total, seconds = kill_and_resume(footage, work / "resumed", args.n)
        print(f"killed after {done} clips were done; the rerun (one process) processed {processed} in {seconds:.1f} s "
              f"= {60 * processed / seconds:.1f} clips/min, redid {redone}; {total} of {args.n} clips accounted for")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
