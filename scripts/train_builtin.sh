#!/usr/bin/env bash
# Retrain the built-in model from nothing, on the procedural world, with the project's own trainer.
# Latents of a fixed set of clips are encoded up front (data.cache), so the transformer stages are cheap.
# Every stage resumes from its checkpoint when re-run; finished stages are skipped.
# Usage: bash scripts/train_builtin.sh
# Where the built-in model was trained: steps 0-2 (VAE, alpha path) on 2 CPU cores, about 40 min; steps 3-6
# (transformer) on one H200, about 8 min of training plus 1.5 min of clip encoding. Steps 3-6 run on a CPU
# too, but take hours there (a step of 128 clips takes seconds). layert2v/weights/world/MODEL_CARD.md says
# what the model reaches. Check the VAE with benchmarks/vae_quality.py before training anything on top of it.
set -euo pipefail
cd "$(dirname "$0")/.."
for stage in 0_vae_images 1_vae 2_alpha 3_t2v 4_layered 5_multi 6_polish; do
  out=runs/world/$stage/final
  if [ -d "$out" ]; then echo "== $stage: done ($out)"; continue; fi
  echo "== $stage"
  layert2v train configs/world/$stage.yaml
done
python scripts/export_builtin.py runs/world/6_polish/final layert2v/weights/world
