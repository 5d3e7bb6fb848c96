"""The rendering robustness check (python -m lungct lab robustness): figures and the command."""

from __future__ import annotations

import numpy as np
import pytest

from lungct.cli import main as cli_main
from lungct.config import SAMPLES_DIR
from lungct.lab.phantoms import OTHER_SOURCE_KINDS
from lungct.preprocess import load_image
from lungct.lab.robustness import rendering_figures, rendering_robustness


def test_figures_count_what_they_say():
    labels = ["normal", "normal", "benign", "malignant", "malignant"]
    plain = ["normal", "benign", "benign", "malignant", "normal"]
    lung = ["malignant", "malignant", "malignant", "malignant", "malignant"]
    r = rendering_figures(labels, plain, {"lung_window_imitation": lung})
    assert r["n"] == 5
    assert r["plain"] == {"accuracy": 0.6, "malignant_recall": 0.5,
                          "normal_called_malignant": 0.0}
    k = r["kinds"]["lung_window_imitation"]
    assert k["accuracy"] == 0.4 and k["malignant_recall"] == 1.0
    assert k["normal_called_malignant"] == 1.0 and k["same_label_as_plain"] == 0.2


class _Bright:
    """A stand-in classifier: "malignant" when the slice is bright on average."""

    def predict_gray(self, gray):
        class P:
            label = "malignant" if float(np.mean(gray)) > 0.3 else "normal"
        return P()

    def predict_many(self, grays, batch_size=32):
        return [self.predict_gray(g) for g in grays]


def test_every_rendering_kind_is_classified():
    grays = [load_image(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
    labels = [p.name.split("_")[0] for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
    r = rendering_robustness(_Bright(), grays, labels)
    assert set(r["kinds"]) == set(OTHER_SOURCE_KINDS) and r["n"] == len(grays)
    # the lung-window imitation greys the black lungs: brighter slices, more "malignant"
    assert r["kinds"]["lung_window_imitation"]["normal_called_malignant"] >= \
        r["plain"]["normal_called_malignant"]
    for k in r["kinds"].values():
        assert 0 <= k["accuracy"] <= 1 and 0 <= k["same_label_as_plain"] <= 1


def test_the_command_needs_the_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LUNGCT_DATA", str(tmp_path / "absent"))
    assert cli_main(["lab", "robustness", "--model", "student_kd"]) == 2
    assert "needs the dataset" in capsys.readouterr().err


@pytest.mark.skipif(not (SAMPLES_DIR / "normal_1.jpg").exists(), reason="samples missing")
def test_the_command_on_a_tiny_dataset(samples_as_test_part, capsys):
    rc = cli_main(["lab", "robustness", "--model", "student_kd", "--set", samples_as_test_part])
    assert rc == 0
    out = capsys.readouterr().out
    assert "student_kd (grouped test, 6 slices)" in out and "lung_window_imitation" in out


def test_the_model_readme_lists_other_sources():
    from lungct.lab.model_card_md import render
    card = {"name": "m", "arch": "a", "input_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3,
            "classes": ["normal", "benign", "malignant"], "protocol": "grouped",
            "external": {"lpcd": {"layout": "Lung-PET-CT-Dx", "lung_slices_accepted": 1.0,
                                  "boxed_slices_called_malignant": 0.5,
                                  "other_slices_called_malignant": 0.25,
                                  "series_called_malignant": 1, "series": {"a": {}, "b": {}},
                                  "auc_boxed_vs_other": 0.475}},
            "lesion_sensitivity": {"n": 84, "data": "normal slices of the grouped test part",
                                   "auc_painted_vs_plain": 0.654,
                                   "called_malignant": {"plain": 0.024, "painted": 0.036}},
            "pointing_game": {"methods": {"Grad-CAM": {"n": 38, "pointing_game": 0.1,
                                                       "energy_in_box": 0.04}}},
            "rendering_robustness": rendering_figures(
                ["normal", "malignant"], ["normal", "malignant"],
                {"lung_window_imitation": ["malignant", "malignant"]})}
    text = render(card)
    assert "## Other sources" in text
    assert "tumour-box slices called malignant 50.0%" in text and "series with a malignant verdict 1/2" in text
    assert "Grad-CAM 10.0% / 4.0%" in text
    assert "tumour-box slices against the others 0.475" in text
    assert "called malignant 2.4% plain, 3.6% with the mass" in text
    assert "lung window imitation accuracy 50.0%, normal called malignant 100.0%" in text
    bare = {k: v for k, v in card.items()
            if k not in ("external", "pointing_game", "rendering_robustness",
                         "lesion_sensitivity")}
    assert "## Other sources" not in render(bare)
