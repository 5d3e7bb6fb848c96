"""External evaluation (python -m lungct lab external), the pointing game and the shortcut probe,
on synthetic layouts and tiny untrained models: no dataset needed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lungct.cli import main as cli_main
from lungct.config import REPO_ROOT
from lungct.data.leakage import grey_histogram, histogram_probe
from lungct.data.lung_pet_ct_dx import patient_of, read_all, read_boxes
from lungct.lab.external import evaluate_external, folder_class
from lungct.preprocess import hu_window
from lungct.inference import Classifier
from lungct.models import create_model, save_model
from lungct.lab.pointing import box_mask, energy_inside, hit, pointing_game
from test_lungs import chest_hu

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))


@pytest.mark.parametrize("name,label", [
    ("normal", "normal"), ("Normal cases", "normal"), ("Bengin cases", "benign"),
    ("adenocarcinoma", "malignant"), ("squamous.cell.carcinoma", "malignant"),
    ("large_cell", "malignant"), ("Malignant cases", "malignant"), ("misc", None)])
def test_folder_names_map_to_classes(name, label):
    assert folder_class(name) == label


def test_hit_and_energy():
    heat = np.zeros((100, 100), np.float32)
    heat[50, 60] = 1.0
    assert hit(heat, [(55, 45, 70, 55)])
    assert hit(heat, [(70, 40, 80, 45)], tol=15) and not hit(heat, [(70, 40, 80, 45)], tol=5)
    assert energy_inside(heat, [(55, 45, 70, 55)]) == pytest.approx(1.0)
    assert energy_inside(np.zeros((4, 4)), [(0, 0, 1, 1)]) == 0.0
    assert box_mask((10, 10), [(2, 3, 4, 5)]).sum() == 9


def test_histogram_probe_finds_a_rendering_shortcut():
    """Classes rendered at different brightness are told apart from histograms alone;
    the same images standardised are not."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 2], 60)
    dark = [rng.random((32, 32)) * (0.5 if k == 2 else 1.0) for k in y]
    same = [rng.random((32, 32)) for _ in y]
    train = np.arange(len(y)) % 2 == 0
    shortcut = histogram_probe(np.stack([grey_histogram(g) for g in dark]), y, train, ~train)
    fair = histogram_probe(np.stack([grey_histogram(g) for g in same]), y, train, ~train)
    assert shortcut["random_forest"]["accuracy"] > 0.9
    assert fair["random_forest"]["accuracy"] < 0.75
    assert fair["majority_rate"] == pytest.approx(0.5)


def tiny_model(folder, view="lungs"):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", input_size=64)
    model.view = view
    save_model(model, folder, {"protocol": "grouped"})
    return folder


def write_lpcd(root, patients=("A0001", "A0002"), n=4):
    """A Lung-PET-CT-Dx-like layout: chest-phantom series and one box per patient."""
    from dicom_factory import ct_series
    import pydicom

    image = hu_window(chest_hu(128), 1500, -600)
    for p in patients:
        folder = root / f"Lung_Dx-{p}-series2"
        folder.mkdir(parents=True)
        for i, data in enumerate(ct_series(n, size=128, image=image)):
            (folder / f"1-{n - i:02d}.dcm").write_bytes(data)  # file order is not anatomy
        uid = pydicom.dcmread(folder / "1-02.dcm").SOPInstanceUID
        ann = root / "annotations" / p
        ann.mkdir(parents=True)
        (ann / f"{uid}.xml").write_text(
            "<annotation><object><bndbox><xmin>30</xmin><ymin>40</ymin><xmax>50</xmax>"
            "<ymax>60</ymax></bndbox></object></annotation>")
    return root


def test_lung_pet_ct_dx_reader(tmp_path):
    root = write_lpcd(tmp_path / "lpcd")
    boxes = read_boxes(root)
    assert len(boxes) == 2 and all(v == [(30, 40, 50, 60)] for v in boxes.values())
    slices = read_all(root)
    assert len(slices) == 8 and {s.patient for s in slices} == {"A0001", "A0002"}
    for p in ("A0001", "A0002"):
        zs = [s.z for s in slices if s.patient == p]
        assert zs == sorted(zs)  # anatomical order, not file order
    assert sum(bool(s.boxes) for s in slices) == 2
    assert patient_of("Lung_Dx-G0012-x") == "G0012" and patient_of("nothing") == ""


def test_pointing_game_runs_on_boxes(tmp_path):
    from lungct.models import load_model
    root = write_lpcd(tmp_path / "lpcd")
    model = load_model(tiny_model(tmp_path / "m"))
    r = pointing_game(model, read_all(root), method="Grad-CAM")
    assert r["n"] == 2 and 0 <= r["hits"] <= 2
    assert 0 <= r["energy_in_box"] <= 1 and 0 < r["chance_energy"] < 0.1
    assert len(r["pointing_game_ci95"]) == 2
    per = [tuple(map(int, v.split("/"))) for v in r["hits_by_series"].values()]
    assert sum(h for h, _ in per) == r["hits"] and sum(n for _, n in per) == r["n"]


def test_external_on_class_folders(tmp_path):
    root = tmp_path / "ext"
    for label in ("normal", "adenocarcinoma"):
        (root / label).mkdir(parents=True)
    for p in SAMPLES:
        dst = "adenocarcinoma" if "malignant" in p.name else "normal"
        shutil.copy(p, root / dst / p.name)
    (root / "normal" / "notes.txt").write_text("not an image")
    clf = Classifier.from_name(tiny_model(tmp_path / "m"), backend="torch")
    r = evaluate_external(root, clf, guard=None)
    assert r["layout"] == "class folders"
    assert r["classes"]["adenocarcinoma"]["label"] == "malignant"
    assert r["classes"]["adenocarcinoma"]["slices"] == 2
    assert np.asarray(r["confusion"]).sum() == 6
    assert r["auc_malignant_vs_normal"] is None or 0 <= r["auc_malignant_vs_normal"] <= 1


def test_external_on_lung_pet_ct_dx_and_the_command(tmp_path, capsys):
    root = write_lpcd(tmp_path / "lpcd")
    folder = tiny_model(tmp_path / "m")
    clf = Classifier.from_name(folder, backend="torch")
    r = evaluate_external(root, clf, guard=None)
    assert r["layout"] == "Lung-PET-CT-Dx" and len(r["series"]) == 2
    for s in r["series"].values():
        assert s["slices"] == 4 and s["boxed_slices"] == 1
        assert s["case_verdict"] in ("normal", "benign", "malignant")
    assert r["pointing"]["Grad-CAM"]["n"] == 2
    # every slice is classified without the guard: 2 boxed, 6 others; probabilities sum to 1
    assert set(r["mean_probabilities"]) == {"boxed", "other"}
    for p in r["mean_probabilities"].values():
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-3) and set(p) == set(clf.classes)
    assert 0.0 <= r["other_slices_called_malignant"] <= 1.0
    assert 0.0 <= r["auc_boxed_vs_other"] <= 1.0   # both kinds of slice were classified
    rc = cli_main(["lab", "external", str(root), "--model", str(folder), "--no-guard",
                   "--write-card"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "pointing game Grad-CAM" in out and "mean probabilities, boxed slices" in out
    from lungct.models.checkpoint import read_card
    assert read_card(folder)["external"]["lpcd"]["layout"] == "Lung-PET-CT-Dx"
    assert cli_main(["lab", "external", str(tmp_path / "missing"), "--model", str(folder)]) == 2
