"""Train or distil one model: a thin entry point over ``lungct.training``.

    python training/train.py --name student_kd            # settings from params.yaml
    python training/train.py --name student_kd --teacher teacher_hybrid_vit
    torchrun --nproc_per_node=4 training/train.py --name teacher_hybrid_vit

Runs on CUDA with mixed precision when a GPU is present, on the CPU
otherwise; under torchrun with several GPUs it trains with PyTorch DDP.
All options of ``python -m lungct lab train`` apply. A model with a teacher (in
params.yaml or ``--teacher``) is distilled: L = alpha*CE +
(1-alpha)*T^2*KL(teacher/T || student/T), alpha and T from ``distill:``; the
teacher must come from the same protocol (grouped or paper) as the student.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lungct.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
