"""The rendering caution (``lungct.pipeline.slice_caution``, ``lungct.guard.caution``).

A slice rendered unlike the training exports (here: a synthetic lung-window CT DICOM,
Lung-PET-CT-Dx-like, made from a sample slice) is still classified, flagged unsure and
carries a caution in every output; the committed IQ-OTH/NCCD samples carry none. Uses the
shipped guard (``models/ood_guard``, its ``caution`` section and ``caution.safetensors``)
and a tiny random model or a fake classifier: no data set needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lungct.config import REPO_ROOT

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))
CARD = {"rendering_robustness": {"kinds": {
    "lung_window_imitation": {"normal_called_malignant": 0.8214},
    "mediastinal_window_imitation": {"normal_called_malignant": 0.2262}}},
    "test_metrics": {"n": 219, "accuracy": 0.8}}


def lung_window_series(n: int = 1, **kwargs) -> list[bytes]:
    """CT DICOM whose lung-window rendering shows the lungs grey and soft tissue light, as
    most hospitals' exports (Lung-PET-CT-Dx) do: a sample slice re-rendered that way."""
    from lungct.data.demo_series import synthetic_series
    from lungct.guard.variants import retissue
    from lungct.preprocess import load_image

    img = retissue(load_image(next(p for p in SAMPLES if p.name == "normal_1.jpg")),
                   soft=0.85, lung=0.3, seed=0)
    return synthetic_series(n, size=256, image=img, **kwargs)


def _reasons(text: str) -> str:
    return re.sub(r"[0-9.]+", "#", text)


def drawn_words(pdf: bytes) -> str:
    """The PDF's drawn strings joined by spaces: a sentence the layout wrapped reads whole."""
    from lungct.pipeline.report import pdf_text
    parts = re.findall(r"\(((?:\\.|[^\\)])*)\) Tj", pdf_text(pdf))
    return " ".join(re.sub(r"\\(.)", r"\1", p) for p in parts)


@pytest.fixture(scope="module")
def guard():
    from lungct.guard import load_guard
    g = load_guard()
    if g.caution is None:
        pytest.fail("the shipped guard has no rendering caution: `python -m lungct guard caution`")
    return g


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The lung-window DICOM, its PNG render in the lung window, and the samples."""
    from lungct.preprocess import decode_image

    folder = tmp_path_factory.mktemp("caution")
    data = lung_window_series(1)[0]
    (folder / "slice.dcm").write_bytes(data)
    gray = decode_image(data, name="slice.dcm", window="lung")
    Image.fromarray(np.round(gray * 255).astype(np.uint8)).save(folder / "slice.png")
    return {"dicom": folder / "slice.dcm", "png": folder / "slice.png"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from lungct.models import create_model, save_model
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=64)
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny", {"name": "tiny"})


@pytest.fixture(scope="module")
def rows(guard, inputs) -> dict[str, dict]:
    """``predict_paths`` rows (the pipeline under predict) with a fake classifier and a card."""
    from test_case import BatchClassifier

    from lungct.pipeline.batch import predict_paths
    clf = BatchClassifier()
    clf.card = CARD
    paths = [inputs["dicom"], inputs["png"], *SAMPLES]
    return {Path(r["file"]).name: r for r in predict_paths(clf, paths, guard=guard,
                                                           findings=None)}


def test_the_limit_is_calibrated_and_low_on_the_training_source(guard):
    section = guard.card["caution"]
    assert section["command"] == "python -m lungct guard caution"
    assert "99th percentile" in section["rule"] and section["limits"]
    report = section["report"]
    assert report["iq_test"]["rate"] <= 0.05           # IQ-OTH/NCCD's own held-out slices
    for key, r in report.items():                      # every window, DICOM and PNG
        if key.startswith("lung_pet_ct_dx_"):
            assert r["rate"] >= 0.95, key


def test_caution_for_a_lung_window_dicom_and_none_for_the_samples(rows):
    r = rows["slice.dcm"]
    assert "error" not in r and r["unsure"] is True
    assert r["caution"].startswith("caution: this slice's rendering is unlike the training "
                                   "exports (score ")
    assert "lung-window image" in r["caution"] and "82%" in r["caution"]
    assert r["caution"] in r["warning"]
    assert r["ood"]["rendering_score"] > r["ood"]["rendering_limit"]
    for p in SAMPLES:
        s = rows[p.name]
        assert "error" not in s and "caution" not in s, p.name
        assert s["ood"]["rendering_score"] <= s["ood"]["rendering_limit"]


def test_same_caution_for_the_dicom_and_its_png(rows):
    dcm, png = rows["slice.dcm"], rows["slice.png"]
    assert _reasons(dcm["caution"]) == _reasons(png["caution"])
    assert png["ood"]["rendering_score"] == pytest.approx(dcm["ood"]["rendering_score"],
                                                          rel=0.05)


def test_caution_without_a_lung_window_quotes_the_cards_worst_rate():
    from lungct.pipeline import Cautions, SliceResult, slice_caution
    r = SliceResult(1, 1, guard={"rendering_score": 8.4, "rendering_limit": 2.99},
                    lung_window=False)
    text = slice_caution(r, Cautions(None, ("mediastinal_window_imitation", 0.2262)))
    assert "score 8.4" in text and "2.99" in text and "up to 23%" in text
    r.guard["rendering_score"] = 1.2
    assert slice_caution(r, Cautions(None, ("x", 0.5))) is None


def test_predict_terminal_line_and_json(tiny_model, inputs, capsys):
    from lungct.cli import main
    assert main(["predict", "--model", str(tiny_model), str(inputs["dicom"]),
                 str(SAMPLES[0])]) == 0
    out = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(out) if line.startswith(str(inputs["dicom"])))
    assert "(unsure)" in out[at]
    assert out[at + 1].strip().startswith("caution: this slice's rendering is unlike")
    assert not any("caution" in line for line in out if line.startswith(str(SAMPLES[0])))
    assert main(["predict", "--json", "--model", str(tiny_model), str(inputs["dicom"]),
                 str(SAMPLES[0])]) == 0
    dcm, sample = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert dcm["unsure"] is True and dcm["caution"].startswith("caution: ")
    assert "caution" not in sample


def test_case_json_table_and_pdf(tiny_model, tmp_path, capsys):
    from lungct.pipeline.report import CAUTION_HEADING, case_pdf
    from lungct.cli import main
    for i, data in enumerate(lung_window_series(3)):
        (tmp_path / f"{i}.dcm").write_bytes(data)
    assert main(["case", "--json", "--model", str(tiny_model), str(tmp_path)]) == 0
    case = json.loads(capsys.readouterr().out)
    assert case["unsure"] is True
    classified = [s for s in case["slices"] if s["status"] == "classified"]
    assert classified and all(s["caution"].startswith("caution: ") for s in classified)
    assert main(["case", "--model", str(tiny_model), str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert f"CAUTION: {len(classified)} of {len(classified)} classified slices carry a " \
           "caution" in table
    assert table.count("[caution]") == len(classified)
    drawn = drawn_words(case_pdf(case, CARD))
    assert CAUTION_HEADING in drawn
    assert "this slice's rendering is unlike the training exports" in drawn


def test_samples_case_report_has_no_caution(guard):
    from test_case import BatchClassifier

    from lungct.pipeline import run_case
    from lungct.pipeline.report import CAUTION_HEADING, case_pdf, pdf_text, report_sections
    clf = BatchClassifier()
    clf.card = CARD
    case = run_case([str(p) for p in SAMPLES], clf, guard=guard, findings=None).as_dict()
    assert all("caution" not in s for s in case["slices"])
    assert CAUTION_HEADING not in [h for h, _ in report_sections(case, CARD)]
    assert CAUTION_HEADING not in pdf_text(case_pdf(case, CARD))
