"""AppTest runs of every page: no exception, the expected elements, a sample image end to end.

File uploads cannot be fed through AppTest's file_uploader, so the Classify page
is driven through its example picker and its ``classify_files`` session hook.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from conftest import PHI_STRINGS, FakeGuard, make_dicom
from streamlit.testing.v1 import AppTest

from lungct import CLASSES
from lungct.config import load_config

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180  # the CPU may be busy training


@pytest.fixture
def app(models_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [str(getattr(el, "value", "")) for el in at.main]
    parts += [str(getattr(el, "body", "")) for el in at.main]
    return "\n".join(parts)


def test_home(app, models_dir):
    from lungct.models.checkpoint import read_card
    cfg = load_config()
    name = cfg["app"]["default_model"]
    assert app.sidebar.selectbox(key="model_name").value == name
    assert "not a diagnostic device" in app.warning[0].value
    body = "\n".join(m.value for m in app.markdown)
    assert f"**{name}**" in body
    assert "10.17632/bhmdr45bh2" in body and "CC BY 4.0" in body
    if "test_metrics" not in read_card(models_dir / name):
        assert any("not evaluated" in i.value for i in app.info)
        return
    labels = [m.label for m in app.metric]
    assert labels[:2] == ["Accuracy", "Malignant recall"]
    assert all(m.value.endswith("%") for m in app.metric[:2])
    assert any(c.value.startswith("95% CI ") for c in app.caption)


def test_classify_example(app):
    at = open_page(app, "classify")
    assert "Upload one or more slices" in at.info[0].value
    at.selectbox(key="classify_example").select("malignant_1.jpg").run()
    assert not at.exception and not at.error
    label = at.metric[0]
    assert label.label == "Label" and label.value in CLASSES
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("image")) == 3                       # slice, overlay and findings
    assert any(c.value.startswith("Findings: candidates of focal abnormal tissue")
               for c in at.caption)
    assert any(m.value.startswith("#### File 1 of 1 (.jpg): example malignant_1.jpg")
               for m in at.markdown)
    assert len(at.get("download_button")) == 1            # the report (no CSV for one slice)


def test_classify_controls_and_case(app):
    at = open_page(app, "classify")
    examples = at.selectbox(key="classify_example")
    examples.select(examples.options[-1]).run()                # all examples as one case
    assert not at.exception
    assert any(m.value.startswith("**Case verdict:") for m in at.markdown)
    table = at.dataframe[0].value
    n = len(examples.options) - 2                            # minus "none" and "all"
    assert len(table) == n and table["suspicion"].is_monotonic_decreasing
    assert (table["suspicion"] <= table["p_malignant"] + 1e-9).all()   # weighed by findings
    assert set(table["label"]) <= set(CLASSES)
    assert len(at.get("plotly_chart")) == n
    assert len(at.get("download_button")) == 2            # CSV and report
    # the heatmap controls: a gradient-free method, another target, the opacity
    at.selectbox(key="classify_method").select("EigenCAM")
    at.selectbox(key="classify_target").select("benign")
    at.slider(key="classify_opacity").set_value(0.8).run()
    assert not at.exception and not at.error
    captions = [c for image in at.get("image") for c in image.captions]
    assert "EigenCAM (the same for every class)" in captions  # EigenCAM ignores the class


def test_classify_bad_file_and_phi(app, sample_bytes, monkeypatch):
    from lungct.app_support import cache
    monkeypatch.setattr(cache, "guard", lambda key, folder: None)  # the DICOM is synthetic
    at = open_page(app, "classify")
    at.session_state["classify_files"] = [
        ("Doe^Jane_PID-12345.dcm", make_dicom()), ("broken.png", b"\x89PNG\r\n\x1a\nxx"),
        ("ok.jpg", sample_bytes["normal_1.jpg"])]
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("File 2 of 3 (.png)")
    assert len(at.metric) == 2
    page = texts(at) + at.dataframe[0].value.to_string()
    for secret in PHI_STRINGS + ("broken", "ok.jpg"):
        assert secret not in page


def test_classify_guard_rejection(app, monkeypatch, sample_bytes):
    """A file the out-of-distribution guard refuses gets a warning and no label."""
    from lungct.app_support import cache
    monkeypatch.setattr(cache, "guard", lambda key, folder: FakeGuard())
    black = np.zeros((64, 64), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(black).save(buf, format="PNG")
    at = open_page(app, "classify")
    at.session_state["classify_files"] = [("x.png", buf.getvalue()),
                                          ("y.jpg", sample_bytes["normal_1.jpg"])]
    at.run()
    assert not at.exception and not at.error
    assert [w.value for w in at.warning if w.value.startswith("File 1 of 2 (.png): not a lung")]
    assert len(at.metric) == 1


def test_gradcam_example_and_carry_over(app):
    at = open_page(app, "gradcam")
    assert not at.error
    images = at.get("image")
    assert len(images) == 1 + 1 + 4 + 3      # slice, findings, fast methods, 3 classes
    assert len(at.get("download_button")) == 4 + 3
    layers = at.selectbox[2].options
    if len(layers) > 1:
        at.selectbox[2].select(layers[1]).run()
        assert not at.exception and not at.error


def test_gradcam_carry_over(models_dir):
    """The Classify page's "Open in the Grad-CAM page" button leaves these two keys."""
    from conftest import SAMPLES
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["gradcam_input"] = {"data": (SAMPLES / "benign_2.jpg").read_bytes(),
                                         "name": "upload.jpg", "title": "File 2 of 2 (.jpg)",
                                         "window": "lung"}
    at.session_state["gradcam_source"] = "from the Classify page"
    at.run()
    at = open_page(at, "gradcam")
    assert at.radio(key="gradcam_source").value == "from the Classify page"
    assert any(c.value == "File 2 of 2 (.jpg)" for c in at.caption)
    assert len(at.get("image")) == 9 and not at.error


def test_model_selector_and_transformer_maps(app, models_dir):
    """The sidebar's choice reaches the pages; the ViT teacher's maps come from its tokens."""
    if not (models_dir / "teacher_hybrid_vit" / "model.safetensors").is_file():
        pytest.skip("no teacher_hybrid_vit weights")
    app.sidebar.selectbox(key="model_name").select("teacher_hybrid_vit").run()
    assert any("hybrid" in c.value.lower() for c in app.sidebar.caption)
    at = open_page(app, "gradcam")
    assert at.sidebar.selectbox(key="model_name").value == "teacher_hybrid_vit"
    assert not at.error
    assert len(at.get("image")) == 9
    assert any("Prediction of **teacher_hybrid_vit**" in m.value for m in at.markdown)


def test_compare(app, models_dir):
    from lungct.app_support.catalog import list_entries
    entries = [e for e in list_entries(models_dir) if e.protocol == "grouped"]
    grouped = {e.name for e in entries}
    at = open_page(app, "compare")
    table, models = at.dataframe[0].value, at.dataframe[1].value  # metrics; size and speed
    assert list(table["model"]) == list(models["model"])
    assert "leakage probe: pixel 1-NN" in set(table["model"])
    assert any(m.startswith("paper:") for m in table["model"])
    assert set(models[models["kind"] == "ours"]["model"]) == grouped
    if any(e.test_metrics for e in entries):
        assert any(v.startswith(("0.", "1.")) and "[" in v for v in table["accuracy [95% CI]"])
    evaluated = any(e.test_metrics for e in entries)
    assert len(at.get("plotly_chart")) >= (3 if evaluated else 1)
    # the findings layer's measured figures, fitted on one patient and reported on the other
    found = [d.value for d in at.dataframe if "fitted on -> reported on" in d.value.columns]
    assert len(found) == 1 and len(found[0]) == 2
    assert found[0]["pointing game"].between(0, 1).all()
    at.selectbox(key="compare_example").select("malignant_2.jpg").run()
    assert not at.exception and not at.error
    assert any(m.value.startswith(f"**{load_config()['app']['default_model']}**:")
               for m in at.markdown)
    at.radio(key="compare_protocol").set_value("paper").run()
    assert not at.exception


def test_experiments_first_use_imports_the_shipped_runs(app, models_dir):
    """A fresh store (the fixture's points to a missing folder) gets the cards' runs."""
    from lungct.models.checkpoint import list_shipped, read_card
    with_history = sorted(n for n in list_shipped(models_dir)
                          if (read_card(models_dir / n).get("training") or {}).get("history"))
    at = open_page(app, "experiments")
    if not with_history:
        assert "python -m lungct lab train --name student_kd" in at.info[0].value
        return
    assert not at.error
    assert sorted(at.dataframe[0].value["model_name"]) == with_history
    assert any("imported_from_card" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1                  # learning curves from the cards


def test_experiments_runs(models_dir, mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at = open_page(at, "experiments")
    assert not at.error
    runs = at.dataframe[0].value
    assert sorted(runs["model_name"]) == ["student_kd", "student_plain"]
    assert len(at.get("plotly_chart")) == 1
    at.multiselect(key="experiments_models").unselect("student_plain").run()
    assert list(at.dataframe[0].value["model_name"]) == ["student_kd"]
    at.selectbox(key="experiments_metric").select("val_acc").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
