"""The lesion check: normal slices, plain and with a painted mass, through a classifier."""

import numpy as np
import pytest

from lungct.app_support.heatmaps import what_it_shows
from lungct.config import REPO_ROOT
from lungct.inference import Prediction
from lungct.lab.lesion_check import lesion_sensitivity, paint_slices
from lungct.lungs import segment
from lungct.preprocess import load_image

NORMAL = sorted((REPO_ROOT / "samples").glob("normal_*.jpg"))


class _Scorer:
    """P(malignant) from a function of the slice (no model needed)."""

    def __init__(self, score):
        self.score = score

    def predict_many(self, grays, batch_size=32):
        out = []
        for g in grays:
            m = float(np.clip(self.score(g), 0, 1))
            probs = {"normal": 1 - m, "benign": 0.0, "malignant": m}
            out.append(Prediction(max(probs, key=probs.get), probs, "fake", False))
        return out


@pytest.fixture(scope="module")
def normal_slice():
    if not NORMAL:
        pytest.skip("no normal sample slice shipped in samples/")
    return load_image(NORMAL[0])


def test_masses_are_painted_inside_the_lungs(normal_slice):
    (i, painted), = paint_slices([normal_slice])
    assert i == 0 and painted.shape == normal_slice.shape
    changed = np.abs(painted - normal_slice) > 0.1
    assert changed.sum() > 100
    lungs = segment(normal_slice).mask("lungs")
    ys, xs = np.nonzero(changed)
    assert lungs[int(np.median(ys)), int(np.median(xs))]
    (_, again), = paint_slices([normal_slice])
    assert np.array_equal(painted, again)        # seeded: every model meets the same masses


def test_sensitivity_tells_a_lesion_reader_from_a_blind_model(normal_slice):
    grays = [normal_slice, normal_slice]
    reader = lesion_sensitivity(_Scorer(lambda g: g.mean() * 2), grays)
    blind = lesion_sensitivity(_Scorer(lambda g: 0.3), grays)
    assert reader["n"] == blind["n"] == 2
    assert reader["auc_painted_vs_plain"] == pytest.approx(1.0)
    assert reader["mean_p_malignant"]["painted"] > reader["mean_p_malignant"]["plain"]
    assert blind["auc_painted_vs_plain"] == pytest.approx(0.5)
    assert blind["called_malignant"] == {"plain": 0.0, "painted": 0.0}


def test_no_lungs_nothing_to_paint():
    assert lesion_sensitivity(_Scorer(lambda g: 0.3), [np.zeros((64, 64), np.float32)]) == {"n": 0}


def test_heatmap_note_from_the_card():
    card = {"pointing_game": {"methods": {"Grad-CAM": {"n": 38, "hits": 4}}},
            "lesion_sensitivity": {"n": 84, "called_malignant": {"plain": 0.024, "painted": 0.036}}}
    note = what_it_shows(card, "Grad-CAM")
    assert "4 of 38" in note and "from 2% to 4%" in note
    assert "4 of 38" not in (what_it_shows(card, "EigenCAM") or "")
    assert what_it_shows({}, "Grad-CAM") is None


def test_the_command_needs_the_dataset(tmp_path, monkeypatch, capsys):
    from lungct.cli import main as cli_main
    monkeypatch.setenv("LUNGCT_DATA", str(tmp_path / "absent"))
    assert cli_main(["lab", "lesion-check", "--model", "student_kd"]) == 2
    assert "needs the dataset" in capsys.readouterr().err


def test_the_command_on_the_normal_samples(samples_as_test_part, capsys):
    from lungct.cli import main as cli_main
    if not NORMAL:
        pytest.skip("no normal sample slice shipped in samples/")
    rc = cli_main(["lab", "lesion-check", "--model", "student_kd", "--set", samples_as_test_part])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"student_kd (grouped test, {len(NORMAL)} normal slices): AUC painted vs plain" in out
