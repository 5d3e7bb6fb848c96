#!/usr/bin/env bash
# The GPU path after a release: a tiny training and a distillation on CUDA with mixed
# precision, then the same training under torchrun with one process (the DDP set-up).
# A few images per class, 64 px, one epoch: about a minute on one GPU. Into a temporary
# folder; nothing of the checkout is written. Needs the dataset (LUNGCT_DATA, or a
# pre-decoded pack: training/pack_data.py) and a CUDA GPU; exits 1 without one.
#
#   LUNGCT_DATA=DIR training/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu check: no CUDA device" >&2; exit 1; }
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" LUNGCT_MODELS="$OUT/models"
COMMON=(--preset smoke --no-mlflow --limit 4 --set "reports.dir=$OUT/reports"
        --set "data.manifest=$OUT/splits.csv")
$PY -m lungct lab split --preset smoke --set "data.manifest=$OUT/splits.csv"
$PY -m lungct lab train --name teacher_hybrid_vit --out "$OUT/models/teacher_hybrid_vit" "${COMMON[@]}" \
  2>&1 | tee "$OUT/teacher.log"
$PY -m lungct lab train --name student_kd --out "$OUT/models/student_kd" \
  --teacher "$OUT/models/teacher_hybrid_vit" "${COMMON[@]}" 2>&1 | tee "$OUT/student.log"
torchrun --nproc_per_node=1 training/train.py --name student_plain --out "$OUT/models/ddp" "${COMMON[@]}" \
  2>&1 | tee "$OUT/ddp.log"
grep -qi "cuda" "$OUT/teacher.log" "$OUT/student.log" "$OUT/ddp.log" \
  || { echo "gpu check: the runs did not report a CUDA device" >&2; exit 1; }
echo "gpu check OK: teacher, distilled student and torchrun (1 process) trained on CUDA"
