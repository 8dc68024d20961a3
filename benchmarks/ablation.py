"""LayerT2V's layer-module ablation (Table 3) on the procedural world: the same layered-stage budget three ways.

    concat  - temporal concatenation only: LayerAdaLN rows frozen at zero, every segment reads every prompt
    adaln   - + LayerAdaLN (trained); every segment still reads every prompt
    routed  - + layered cross-attention: each segment reads only its own prompts (the full method)

Each variant fine-tunes the same plain text-to-video model (``--init``, the built-in recipe's ``3_t2v`` output)
with the layered-stage config (``--config``) for ``--steps`` steps, then generates the held-out cases of
``benchmarks/world_quality.py``. "Every segment reads every prompt" is a layout whose routing table shows all
prompts to all segments; the variants exist only here, so the library keeps one code path.

    python benchmarks/ablation.py --init runs/world/3_t2v/final --steps 1000 --n 16 --out docs/ablation
    python benchmarks/ablation.py --init runs/world/3_t2v/final --config configs/ablation_world_cpu.yaml \
        --steps 400 --n 32 --runs runs/ablation_lcons --out docs/ablation   # CPU budget: 42 minutes on 2 cores

A variant whose training finished under ``--runs`` is resumed, not retrained: give a fresh ``--runs`` to rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

import layert2v.pipeline as pipeline_module
import layert2v.training.recipes as recipes_module
import layert2v.training.trainer as trainer_module
from layert2v.data.world import heldout_prompts
from layert2v.io.layered_dir import contact_sheet
from layert2v.layout import LayerLayout, Segment
from layert2v.pipeline import LayerT2VPipeline
from layert2v.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("concat", "adaln", "routed")


def _load_world_quality():
    spec = importlib.util.spec_from_file_location("world_quality", ROOT / "benchmarks" / "world_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class UnroutedLayout(LayerLayout):
    """The same segments, but no layered cross-attention: every segment reads every prompt."""

    def visible_prompts(self, segment: Segment) -> tuple[int, ...]:
        return tuple(range(self.num_prompts))


@contextlib.contextmanager
def routing(variant: str) -> Iterator[None]:
    """Training and sampling build their layouts through these module names; swap them for the unrouted one."""
    if variant == "routed":
        yield
        return
    saved = recipes_module.LayerLayout, pipeline_module.LayerLayout
    recipes_module.LayerLayout = pipeline_module.LayerLayout = UnroutedLayout
    try:
        yield
    finally:
        recipes_module.LayerLayout, pipeline_module.LayerLayout = saved


def train_variant(variant: str, config: Path, init: Path, steps: int, out: Path, latents: dict) -> Path:
    """``latents``: the clips' cached latents, shared by the variants (they depend on the data and VAE only)."""
    raw = TrainConfig.from_yaml(config).to_dict()
    raw.update(init=str(init), output_dir=str(out / variant))
    raw["train"]["steps"] = steps
    with routing(variant):
        trainer = trainer_module.Trainer(TrainConfig.from_dict(raw))
        trainer.latents._encoded = latents
        if variant == "concat":  # LayerAdaLN stays at its zero init: plain Wan modulation for every segment
            layer_adaln = trainer._unwrapped().layer_adaln
            layer_adaln.requires_grad_(False).zero_()
            trainer.trainable_names.remove("layer_adaln")
            trainer.optimizer.param_groups[0]["params"] = [p for p in trainer.optimizer.param_groups[0]["params"]
                                                          if p is not layer_adaln]
        trainer.train()
    return trainer.out / "final"


def evaluate(variant: str, model: Path, cases: list, seeds: int, frames: int, preview: Path) -> dict[str, float]:
    wq = _load_world_quality()
    pipe = LayerT2VPipeline.from_pretrained(model)
    with routing(variant):
        summary, rows = wq.run(cases, lambda spec, s: wq.generate(pipe, spec.prompts, s, num_frames=frames),
                               seeds=seeds)
        video = wq.generate(pipe, cases[0].prompts, 0, num_frames=frames)
    contact_sheet(video, rows=3).save(preview)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", type=Path, required=True, help="plain text-to-video model (stage t2v output)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "world" / "4_layered.yaml")
    parser.add_argument("--steps", type=int, default=1000, help="layered-stage steps per variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--n", type=int, default=16, help="held-out cases (one foreground each)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"), help="where the variants train")
    parser.add_argument("--out", type=Path, required=True, help="table (ablation.md/json) and previews")
    args = parser.parse_args(argv)
    if not (args.init / "transformer").is_dir():
        sys.exit(f"error: {args.init} holds no transformer; pass the t2v stage output, e.g. runs/world/3_t2v/final")

    torch.manual_seed(0)
    cases = heldout_prompts(args.n, seed=0, num_frames=args.frames, height=64, width=64, num_foregrounds=1)
    args.out.mkdir(parents=True, exist_ok=True)
    results, latents = {}, {}
    for variant in args.variants:
        start = time.perf_counter()
        model = train_variant(variant, args.config, args.init, args.steps, args.runs, latents)
        results[variant] = evaluate(variant, model, cases, args.seeds, args.frames, args.out / f"{variant}.png")
        print(f"{variant}: {time.perf_counter() - start:.0f} s", flush=True)

    accuracies = ("fg_colour", "fg_shape", "fg_motion", "bg_kind", "bg_colour")
    lines = [f"Same budget ({args.steps} layered steps from {args.init}), {args.n} held-out one-object cases x "
             f"{args.seeds} seed(s), {args.frames} frames.", "",
             "| variant | object in background (lower better) | text alignment (mean reader accuracy) | "
             "recomposite PSNR (dB) | "
             + " | ".join(accuracies) + " |", "|---" * (4 + len(accuracies)) + "|"]
    for variant, s in results.items():
        alignment = float(np.mean([s[a] for a in accuracies]))
        lines.append(f"| {variant} | {s['object_in_background']:.4f} | {alignment:.3f} | {s['recomposite_psnr']:.2f} | "
                     + " | ".join(f"{s[a]:.2f}" for a in accuracies) + " |")
    table = "\n".join(lines)
    print(table)
    (args.out / "ablation.md").write_text(table + "\n")
    (args.out / "ablation.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
