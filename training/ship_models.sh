#!/usr/bin/env bash
# Train every shipped model in dependency order (teachers before students),
# then evaluate each on its own protocol's test split. Runs on CPU or GPU;
# on this 2-core CPU the whole sequence takes roughly 70-80 minutes.
# Each model's settings live in params.yaml under `models:`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
for name in ${MODELS:-teacher_hybrid_vit student_kd student_plain teacher_hybrid_vit_paper student_kd_paper vgg16_scratch}; do
  echo "=== $(date -u +%H:%M:%S) train $name"
  $PY -m lungct lab train --name "$name" "$@"
done
echo "=== $(date -u +%H:%M:%S) done"
