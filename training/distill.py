"""Distil a student from a teacher: ``train.py`` with ``--teacher``.

    python training/distill.py --name student_kd --teacher teacher_hybrid_vit
    python training/distill.py --name vgg16_kd                 # the paper's VGG16 student

The loss is L = alpha*CE + (1-alpha)*T^2*KL(teacher/T || student/T), with
alpha and T from params.yaml (``distill``); the teacher must come from the
same protocol (grouped or paper) as the student.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lungct.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
