#!/usr/bin/env bash
# A tiny end-to-end run of every pipeline stage (a few images, 64 px, one
# epoch), into a temporary folder, so a broken stage fails CI and not a user.
# Needs the dataset (LUNGCT_DATA or data/raw/iq-othnccd). Nothing under
# models/ or reports/ of the checkout is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
export LUNGCT_MODELS="$OUT/models"
COMMON=(--preset smoke --set "reports.dir=$OUT/reports" --set "data.manifest=$OUT/splits.csv")
$PY -m lungct lab split "${COMMON[@]}"
$PY -m lungct lab leakage "${COMMON[@]}" --out "$OUT/reports/leakage.json"
$PY -m lungct lab train --name teacher_hybrid_vit --out "$OUT/models/teacher_hybrid_vit" --limit 4 "${COMMON[@]}"
$PY -m lungct lab train --name student_kd --out "$OUT/models/student_kd" --teacher "$OUT/models/teacher_hybrid_vit" --limit 4 "${COMMON[@]}"
$PY -m lungct lab half "$OUT/models/student_kd" "${COMMON[@]}"
$PY -m lungct lab evaluate --model "$OUT/models/student_kd" "${COMMON[@]}"
$PY -m lungct lab export --model "$OUT/models/student_kd" --limit 8 "${COMMON[@]}"
cp -r models/ood_guard "$OUT/models/"   # the committed input guard
$PY -m lungct predict --json --model "$OUT/models/student_kd" samples/
$PY -m lungct lab bench --repeats 3 --cli-images 16 --out "$OUT/reports/bench.json" --models student_kd
.venv/bin/dvc dag > /dev/null   # dvc.yaml still parses
echo "smoke pipeline OK"
