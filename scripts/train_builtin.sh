#!/usr/bin/env bash
# Retrain the built-in model from nothing, on the procedural world, with the project's own trainer.
# Every stage resumes from its checkpoint when re-run; finished stages are skipped.
# Usage: bash scripts/train_builtin.sh            (CPU: about 1-2 hours on 2 cores; a GPU: minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
for stage in 1_vae 2_alpha 3_t2v 4_layered 5_multi; do
  out=runs/world/$stage/final
  if [ -d "$out" ]; then echo "== $stage: done ($out)"; continue; fi
  echo "== $stage"
  layert2v train configs/world/$stage.yaml
done
python scripts/export_builtin.py runs/world/5_multi/final layert2v/weights/world
