#!/usr/bin/env bash
# Train the shipped 320 px models (grouped and paper protocol) on one GPU, several runs at once.
#
#   training/gpu_ship.sh [EPOCHS]
#
# Runs the same `python -m lungct train --name ...` commands as the DVC stages,
# reading each model's entry in params.yaml, on a single CUDA GPU (mixed
# precision), four runs side by side in phase 1 and two in phase 2:
#   1. three teacher candidates (lr 1e-3, 5e-4, 2e-4), the paper-protocol teacher,
#      and student_plain (needs no teacher);
#   2. the teacher with the lower best validation loss becomes
#      models/teacher_hybrid_vit (the choice is written into its card), then
#      student_kd and student_kd_paper are distilled from their teachers.
# Only train/val images are read; test parts stay untouched. EPOCHS overrides
# every model's train.epochs and LIMIT=N keeps N images per class and part (quick
# checks). Logs go to logs/gpu_ship/.
# MLflow is skipped (--no-mlflow) because GPU boxes often lack it; import the
# runs into the local store afterwards with `python -m lungct.training.tracking import`.
set -uo pipefail
PY=${PYTHON:-python3}
LOGS=logs/gpu_ship
mkdir -p "$LOGS" sweep
COMMON=(--no-mlflow --set "train.num_workers=${WORKERS:-3}")
[ -n "${1:-}" ] && COMMON+=(--set "train.epochs=$1")
[ -n "${LIMIT:-}" ] && COMMON+=(--limit "$LIMIT")   # a few images per class: a quick check
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}

train() {  # train LOGNAME ARGS...
    local log=$1; shift
    "$PY" -m lungct train "$@" "${COMMON[@]}" > "$LOGS/$log.log" 2>&1
    local rc=$?
    echo "$log: exit $rc, $(grep -c 'val_loss=' "$LOGS/$log.log") epochs"
    return $rc
}

start=$(date +%s)
train teacher_lr5e-4 --name teacher_hybrid_vit --out sweep/teacher_lr5e-4 --set train.lr=0.0005 &
train teacher_lr2e-4 --name teacher_hybrid_vit --out sweep/teacher_lr2e-4 --set train.lr=0.0002 &
train teacher_lr1e-3 --name teacher_hybrid_vit --out sweep/teacher_lr1e-3 --set train.lr=0.001 &
train teacher_paper --name teacher_hybrid_vit_paper &
train student_plain --name student_plain &
wait
echo "phase 1: $(( $(date +%s) - start )) s"

"$PY" - <<'PYEOF' || exit 1
import json, shutil
from pathlib import Path
from lungct.training.run import write_history

cands = {}
for d in sorted(Path("sweep").glob("teacher_*")):
    card = json.loads((d / "card.json").read_text())
    cands[d.name] = (min(h["val_loss"] for h in card["training"]["history"]), d, card)
    print(f"{d.name}: best val_loss {cands[d.name][0]:.4f}")
name = min(cands, key=lambda k: cands[k][0])
loss, src, card = cands[name]
card["training"]["selection"] = {
    "rule": "lowest best-epoch validation loss among the candidates (test never read)",
    "candidates": {k: round(v[0], 4) for k, v in cands.items()}, "chosen": name}
(src / "card.json").write_text(json.dumps(card, indent=2) + "\n")
write_history(card["training"]["history"], Path("reports/history/teacher_hybrid_vit.csv"))
dest = Path("models/teacher_hybrid_vit")
shutil.rmtree(dest, ignore_errors=True)
shutil.copytree(src, dest)
print(f"teacher: {name}")
PYEOF

train student_kd --name student_kd &
train student_kd_paper --name student_kd_paper &
wait
echo "total: $(( $(date +%s) - start )) s"
