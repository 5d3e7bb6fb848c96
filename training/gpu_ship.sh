#!/usr/bin/env bash
# Train the shipped 320 px models (grouped and paper protocol) on one GPU, several runs at once.
#
#   training/gpu_ship.sh [EPOCHS]
#
# Runs the same `python -m lungct lab train --name ...` commands as the DVC stages,
# reading each model's entry in params.yaml, on a single CUDA GPU (mixed
# precision), six runs side by side in phase 1 and two in phase 2:
#   1. four teacher candidates (how much of the pretrained CNN sits under the
#      transformer, and the learning rate: the last round of the search recorded
#      in the teacher's card), the paper-protocol teacher, and student_plain;
#   2. the candidate with the lowest best validation loss becomes
#      models/teacher_hybrid_vit (the choice is written into its card), then
#      student_kd and student_kd_paper are distilled from their teachers.
# Every model is then stored in float16 if that changes no validation label.
# A GPU box with a small upload limit can take the data pre-decoded:
# `python training/pack_data.py --size 320 --out DIR`, then LUNGCT_DATA=DIR.
# Only train/val images are read; test parts stay untouched. EPOCHS overrides
# every model's train.epochs and LIMIT=N keeps N images per class and part (quick
# checks). Logs go to logs/gpu_ship/.
# MLflow is skipped (--no-mlflow) because GPU boxes often lack it; import the
# runs into the local store afterwards with `python -m lungct lab tracking import`.
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
    "$PY" -m lungct lab train "$@" "${COMMON[@]}" > "$LOGS/$log.log" 2>&1
    local rc=$?
    echo "$log: exit $rc, $(grep -c 'val_loss=' "$LOGS/$log.log") epochs"
    return $rc
}

start=$(date +%s)
cand() {  # cand STAGES DEPTH LR
    train "teacher_s$1_d$2_lr$3" --name teacher_hybrid_vit --out "sweep/teacher_s$1_d$2_lr$3" \
        --set "train.model_kwargs.stages=$1" --set "train.model_kwargs.depth=$2" --set "train.lr=$3"
}
cand 5 2 0.0005 &
cand 6 2 0.0005 &
cand 7 2 0.0005 &
cand 7 2 0.0002 &
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
for n in teacher_hybrid_vit student_kd student_plain teacher_hybrid_vit_paper student_kd_paper; do
    "$PY" -m lungct lab half "$n" --set "train.num_workers=0"
done
echo "total: $(( $(date +%s) - start )) s"
