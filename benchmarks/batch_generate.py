"""Clips per minute: a shell loop of single `layert2v generate` calls against `generate --prompts` with 1 and 2
workers, in one run, on the built-in model.

    python benchmarks/batch_generate.py                   # 24 prompts, the model's steps (issue 30's setting)
    python benchmarks/batch_generate.py --n 6 --steps 4   # a quick look

The prompts are the built-in world's held-out cases 0..n-1 (layert2v.data.world.sample_spec, split "heldout"),
with one and two foregrounds in turn (three can make a prompt longer than the model's 32 tokens), clip k with seed k
in every variant. Each variant is timed from its first command to the last clip
on disk, start-up and model loading included, as a user would see it: the loop starts one `layert2v` process per
prompt (torch's default threads), `--prompts` one process (one thread per worker; two workers run on a local Ray,
whose start is counted). The machine's load is printed before and after; ratios measured within one run are what
to compare. The two `--prompts` runs must write identical clip directories, which is checked and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]


def layert2v(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "layert2v.cli", *args], env=env, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"layert2v {' '.join(args[:3])} ... failed ({run.returncode}): {run.stderr[-2000:]}")


def clip_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.parent != out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24, help="prompts (default 24)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    args = parser.parse_args()
    from layert2v.data.world import sample_spec

    cases = [sample_spec(k, split="heldout", num_foregrounds=1 + k % 2).prompts for k in range(args.n)]
    steps = ["--steps", str(args.steps)] if args.steps else []
    print(f"{args.n} prompts, built-in model, steps {args.steps or 'the model default'}, {os.cpu_count()} CPU cores; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = tmp / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": c["full"], "bg": c["background"], "fg": c["foregrounds"],
                                               "seed": k}) + "\n" for k, c in enumerate(cases)))
        start = time.perf_counter()
        for k, c in enumerate(cases):
            fgs = [a for f in c["foregrounds"] for a in ("--fg", f)]
            layert2v("generate", c["full"], "--bg", c["background"], *fgs, "--seed", str(k), *steps,
                     "--out", str(tmp / "loop" / f"{k:06d}"))
        rates["shell loop of `generate`"] = args.n / (time.perf_counter() - start) * 60
        for workers in (1, 2):
            start = time.perf_counter()
            layert2v("generate", "--prompts", str(prompts), "--workers", str(workers), *steps,
                     "--out", str(tmp / f"batch{workers}"))
            rates[f"--prompts, {workers} worker(s)"] = args.n / (time.perf_counter() - start) * 60
        same = clip_files(tmp / "batch1") == clip_files(tmp / "batch2")
    loop = rates["shell loop of `generate`"]
    for name, rate in rates.items():
        print(f"  {name:<28} {rate:6.1f} clips/min   {rate / loop:4.2f}x the loop")
    print(f"1 and 2 workers wrote identical clip directories: {'yes' if same else 'NO'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
