"""One decision rule (issue 24): a slice's label and the case verdict follow the same threshold.

A slice whose likeliest class is malignant but whose P(malignant) is below the threshold
(0.49: shown "malignant" before, while the verdict rule said malignant means >= 0.50) is
never labelled malignant, by the classifier, the case pipeline, the exports or the screens.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from dicom_factory import ct_series
from PIL import Image

from lungct import CLASSES, MALIGNANT_THRESHOLD, slice_label
from lungct.pipeline import (CASE_RULE, ClassifierBase, SliceResult, analyse_slices, case_label,
                             case_verdict, run_case)
from lungct.pipeline.report import format_case
from lungct.config import REPO_ROOT
from lungct.inference import Classifier, Prediction
from lungct.pipeline.series import read_slice

NEAR_MISS = {"normal": 0.30, "benign": 0.21, "malignant": 0.49}   # malignant is the argmax


class FixedNet(torch.nn.Module):
    """Returns logits whose softmax is ``probs`` for every input (a model with a card)."""

    classes, input_size, mean, std, name, arch = CLASSES, 8, (0.5,) * 3, (0.5,) * 3, "fixed", "x"

    def __init__(self, probs: dict[str, float]):
        super().__init__()
        self.register_buffer("logits", torch.log(torch.tensor([probs[c] for c in CLASSES])))
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * self.w


def png(value: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("probs, expected", [
    (NEAR_MISS, "benign"),                                        # argmax malignant, below 0.50
    ({"normal": 0.25, "benign": 0.25, "malignant": 0.50}, "malignant"),   # inclusive
    ({"normal": 0.10, "benign": 0.41, "malignant": 0.49}, "benign"),
    ({"normal": 0.50, "benign": 0.10, "malignant": 0.40}, "normal"),     # argmax kept
    ({"normal": 0.20, "benign": 0.70, "malignant": 0.10}, "benign"),
])
def test_slice_label_is_malignant_only_from_the_threshold(probs, expected):
    assert slice_label(probs) == expected
    assert slice_label([probs[c] for c in CLASSES]) == expected      # array form, CLASSES order
    assert case_label([[probs[c] for c in CLASSES]]) == expected     # one slice: same answer


def test_classifier_labels_a_near_miss_benign_and_unsure():
    clf = Classifier(FixedNet(NEAR_MISS))
    pred = clf.predict_prepared([np.zeros((3, 8, 8), np.float32)])[0]
    assert pred.probabilities["malignant"] == pytest.approx(0.49, abs=1e-6)
    assert max(pred.probabilities, key=pred.probabilities.get) == "malignant"
    assert pred.label != "malignant" and pred.label == "benign"
    assert pred.unsure


def test_case_pipeline_verdict_and_slice_labels_agree():
    clf = Classifier(FixedNet(NEAR_MISS))
    case = run_case([(f"s{i}.png", png(60 + i)) for i in range(3)], clf, findings=None)
    labels = [r.prediction.label for r in case.slices]
    verdict = case.verdict
    assert "malignant" not in labels and verdict["label"] == "benign" == labels[0]
    assert verdict["unsure"] and verdict["rule"] == CASE_RULE
    exported = case.as_dict()                      # what JSON, PDF, SR and PACS carry
    assert exported["verdict"] == "benign"
    assert {s["label"] for s in exported["slices"]} == {"benign"}
    table = format_case(case)                      # the terminal table of case / pacs run
    assert "verdict: benign" in table
    assert all(" malignant " not in line for line in table.splitlines()[7:])


class ArgmaxClassifier(ClassifierBase):
    """A minimal classifier that labels by argmax (the old way): the pipeline applies the rule."""

    unsure_below, name = 0.6, "argmax"

    def prepare(self, gray, seg=None):
        return np.zeros(1, np.float32)

    def predict_prepared(self, arrays):
        return [Prediction("malignant", dict(NEAR_MISS), self.name, False) for _ in arrays]


def test_the_pipeline_relabels_an_argmax_classifier():
    results = analyse_slices(ArgmaxClassifier(), [read_slice("a.png", png())], findings=None)
    assert results[0].prediction.label == "benign" and results[0].prediction.unsure
    assert case_verdict(results)["label"] == "benign"


def test_verdict_is_always_the_gravest_slice_label():
    rng = np.random.default_rng(0)
    for _ in range(200):
        probs = rng.dirichlet(np.ones(3), size=int(rng.integers(1, 6)))
        results = [SliceResult(i + 1, len(probs), ".png", prediction=Prediction(
            slice_label(p), dict(zip(CLASSES, map(float, p))), "m", False))
            for i, p in enumerate(probs)]
        labels = {r.prediction.label for r in results}
        gravest = next((c for c in ("malignant", "benign") if c in labels), "normal")
        assert case_verdict(results)["label"] == gravest
        assert (gravest == "malignant") == bool(probs[:, 2].max() >= MALIGNANT_THRESHOLD)


# ------------------------------------------------------------------ clinical pages' views

def test_percentages_never_round_up_to_the_threshold():
    from lungct.app_support.case import percent, probabilities_text
    assert percent(0.497) == "49%" and percent(0.5) == "50%" and percent(None) == "—"
    assert probabilities_text(NEAR_MISS) == "malignant 49% · normal 30% · benign 21%"


def test_study_views_text_cells_and_labelled_axes():
    from lungct.app_support import pacs_view, study

    clf = Classifier(FixedNet(NEAR_MISS))
    case = run_case([("a.png", png(80)), ("b.png", png(90)), ("c.txt", b"not an image")],
                    clf, findings=None)
    table = study.session_table(case)
    assert "guard_score" not in table.columns and "score" not in table.columns
    for value in table.to_numpy().ravel():
        assert isinstance(value, str) and value not in ("None", "nan")
    assert set(table.loc[table["status"] == "classified", "label"]) == {"benign (unsure)"}
    assert "guard_score" not in pacs_view.slice_table(case).columns
    fig = study.profile_figure(case, 1)    # raster files: slice numbers, whole ticks
    assert fig.layout.xaxis.title.text.startswith("slice number")
    assert fig.layout.xaxis.dtick >= 1 and float(fig.layout.xaxis.dtick).is_integer()

    series = run_case([(f"s{i}.dcm", d) for i, d in enumerate(ct_series(4, size=64))], clf,
                      findings=None)
    assert study.profile_figure(series).layout.xaxis.title.text == "slice position z (mm)"


def test_window_presets_reach_zip_members_from_the_slices_own_hu():
    """The Study page's display windows come from the HU each slice carries (zip members
    too), equal the file's own HU in that window, and differ between presets."""
    import pydicom

    from lungct.app_support import study
    from lungct.preprocess import hu_window, to_hu

    datas = ct_series(3, size=64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, d in enumerate(datas):
            z.writestr(f"series/IM{i}.dcm", d)
    case = run_case([("study.zip", buf.getvalue())], Classifier(FixedNet(NEAR_MISS)),
                    findings=None)
    by_z = {}
    for d in datas:
        ds = pydicom.dcmread(io.BytesIO(d))
        by_z[float(ds.ImagePositionPatient[2])] = to_hu(ds.pixel_array.astype(float), ds)
    for r in case.slices:
        hu = by_z[r.location_mm]
        for width, level in study.WL_PRESETS.values():
            np.testing.assert_allclose(study.display(r, width, level),
                                       hu_window(hu, width, level), atol=2e-3)
        assert not np.allclose(study.display(r, *study.WL_PRESETS["lung"]),
                               study.display(r, *study.WL_PRESETS["mediastinal"]))
    png = run_case([("a.png", (REPO_ROOT / "samples" / "normal_1.jpg").read_bytes())],
                   Classifier(FixedNet(NEAR_MISS)), findings=None).slices[0]
    assert png.hu is None and study.display(png, 350, 50) is None


def test_clinical_pages_offer_no_research_protocol_model(tmp_path):
    import json

    from lungct.app_support import catalog
    from lungct.models.checkpoint import CARD_FILE, WEIGHTS_FILE
    for name, protocol in (("a_grouped", "grouped"), ("a_paper", "paper"), ("b_old", None)):
        (tmp_path / name).mkdir()
        card = {"arch": "x"} | ({"protocol": protocol} if protocol else {})
        (tmp_path / name / CARD_FILE).write_text(json.dumps(card))
        (tmp_path / name / WEIGHTS_FILE).write_bytes(b"")
    entries = catalog.list_entries(tmp_path)
    assert [e.name for e in catalog.runnable(entries)] == ["a_grouped", "a_paper", "b_old"]
    assert [e.name for e in catalog.clinical(entries)] == ["a_grouped", "b_old"]
    assert catalog.default_model(entries, "a_paper") == "a_grouped"


def test_home_lists_every_page_of_the_app():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    titles = re.findall(r'st\.Page\([^)]*title="([^"]+)"', (root / "app.py").read_text())
    home = (root / "app_pages" / "home.py").read_text()
    assert len(titles) >= 7
    assert all(f"**{t}**" in home for t in titles), titles
