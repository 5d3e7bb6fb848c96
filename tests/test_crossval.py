"""python -m lungct lab cv: every fold trains on its own parts (the teacher too), every image is
predicted once, finished folds are not retrained, the report lands in reports/cv/."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

import lungct.training.evaluate  # noqa: F401  imported before load_model is patched (it binds it)
from lungct import CLASSES
from lungct.config import load_config
from lungct.lab import crossval


def _manifest(path: Path, n_groups: int = 15) -> list[dict]:
    rows = []
    for g in range(n_groups):
        label = CLASSES[g % 3]
        rows += [{"path": f"{label}/{g}_{i}.jpg", "label": label, "md5": "x", "group": f"g{g}",
                  "paper_split": "train", "grouped_split": "train"} for i in range(3)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_run_cv_plumbing(tmp_path, monkeypatch):
    rows = _manifest(tmp_path / "splits.csv")
    cfg = load_config()
    cfg["data"]["manifest"] = str(tmp_path / "splits.csv")
    cfg["data"]["root"] = str(tmp_path)
    cfg.setdefault("reports", {})["dir"] = str(tmp_path / "reports")
    trained = []

    def fake_train(fcfg, name, out_dir, teacher=None, track=True, **kw):
        with open(fcfg["data"]["manifest"], encoding="utf-8") as fh:
            parts = {r["path"]: r["grouped_split"] for r in csv.DictReader(fh)}
        trained.append((name, str(teacher) if teacher else None, parts, fcfg["train"]))
        return Path(out_dir)

    def fake_logits(model, root, test_rows, batch_size=32):
        y = torch.tensor([CLASSES.index(r["label"]) for r in test_rows])
        return torch.nn.functional.one_hot(y, 3).float() * 4.0, y

    monkeypatch.setattr("lungct.training.run.train_from_config", fake_train)
    monkeypatch.setattr("lungct.models.load_model", lambda folder: object())
    monkeypatch.setattr("lungct.training.evaluate.collect_logits", fake_logits)

    first = crossval.run_cv(cfg, "student_lungs", k=3, epochs=1, only=[0],
                            cache=tmp_path / "cache")
    assert first is None                                   # two folds still to run
    assert [t[0] for t in trained] == ["teacher_lungs_cv0", "student_lungs_cv0"]
    assert trained[1][1].endswith("fold0/teacher")         # distilled from the fold's teacher
    assert trained[0][3]["epochs"] == 1 and trained[0][3]["protocol"] == "grouped"
    report = crossval.run_cv(cfg, "student_lungs", k=3, epochs=1, cache=tmp_path / "cache")
    assert len(trained) == 6                               # fold 0 was not trained again
    tested = [p for _, _, parts, _ in trained[1::2] for p, part in parts.items()
              if part == "test"]
    assert sorted(tested) == sorted(r["path"] for r in rows)   # each image tested once
    for _, _, parts, _ in trained:                         # a patient never spans two parts
        by_group = {}
        for r in rows:
            by_group.setdefault(r["group"], set()).add(parts[r["path"]])
        assert all(len(v) == 1 for v in by_group.values())
    assert report["accuracy"] == 1.0 and report["n_images"] == len(rows)
    assert report["teacher_per_fold"] == "teacher_lungs"
    saved = json.loads((tmp_path / "reports" / "cv" / "student_lungs.json").read_text())
    assert saved["case_accuracy"] == 1.0
    assert np.isfinite(saved["calibration"]["ece_cross_fitted"])
    same = crossval.compare_runs(cfg, "student_lungs", "student_lungs", k=3,
                                 cache=tmp_path / "cache")
    assert same["difference"] == 0.0 and same["only_a_right"] == same["only_b_right"] == 0
