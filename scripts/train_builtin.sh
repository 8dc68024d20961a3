#!/usr/bin/env bash
# Retrain the built-in model from nothing, on the procedural world, with the project's own trainer.
# Latents of a fixed set of clips are cached (data.cache), so the transformer stages are cheap on CPU.
# Every stage resumes from its checkpoint when re-run; finished stages are skipped.
# Usage: bash scripts/train_builtin.sh
# On 2 CPU cores the whole recipe takes about an hour; layert2v/weights/world/MODEL_CARD.md says what it reaches.
# Check the VAE with benchmarks/vae_quality.py before training anything on top of it.
set -euo pipefail
cd "$(dirname "$0")/.."
for stage in 0_vae_images 1_vae 2_alpha 3_t2v 4_layered 5_multi; do
  out=runs/world/$stage/final
  if [ -d "$out" ]; then echo "== $stage: done ($out)"; continue; fi
  echo "== $stage"
  layert2v train configs/world/$stage.yaml
done
python scripts/export_builtin.py runs/world/5_multi/final layert2v/weights/world
