#!/usr/bin/env bash
# Retrain the built-in model from nothing, on the procedural world, with the project's own trainer.
# Latents of a fixed set of clips are encoded up front (data.cache), so the transformer stages are cheap.
# Every stage resumes from its checkpoint when re-run; finished stages are skipped.
# Usage: bash scripts/train_builtin.sh
# Where the built-in model was trained: steps 0-2 (VAE, alpha path) on 2 CPU cores, about 40 min; steps 3-8
# (transformer) on one H200, about 18 min of training plus 3 min of clip encoding; step 9 on 2 CPU cores,
# about an hour; steps 10-11 on one H100, about 7 min of training plus 3 min of clip encoding; steps 12-14
# (the decoders retrained under the transformer, then more transformer) on one H100, about 8 min of training;
# steps 15-16 (editing variants and box conditioning, from the exported v9) on 2 CPU cores, about 35 min each.
# Steps 3-6 run on a CPU too, but take hours there (a step of 128 clips takes seconds); steps 7, 8, 10, 11 and
# 14 train in bf16, which needs a GPU (CPUs without bf16 units run it about 20x slower than fp32).
# layert2v/weights/world/MODEL_CARD.md says what the model reaches. Check the VAE with
# benchmarks/vae_quality.py before training anything on top of it.
set -euo pipefail
cd "$(dirname "$0")/.."
for stage in 0_vae_images 1_vae 2_alpha 3_t2v 4_layered 5_multi 6_polish 7_more 8_high_noise 9_cons 10_more_clips 11_settle \
    12_decoder 13_alpha_decoder 14_more_steps 15_editing 16_more_editing; do
  out=runs/world/$stage/final
  if [ -d "$out" ]; then echo "== $stage: done ($out)"; continue; fi
  echo "== $stage"
  if [ "$stage" = 15_editing ]; then  # step 15 starts from the exported step 14 (v9), as the shipped v10 did
    python scripts/export_builtin.py runs/world/14_more_steps/final layert2v/weights/world
  fi
  layert2v train configs/world/$stage.yaml
done
python scripts/export_builtin.py runs/world/16_more_editing/final layert2v/weights/world
