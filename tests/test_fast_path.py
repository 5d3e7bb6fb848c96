"""The fast default path gives the same answers as the plain one.

- the segmentation's bounding-box shortcuts equal the whole-image computations;
- the guard split into ``prepare`` (per slice, in the decode threads) and
  ``check_prepared`` (one batched score) equals ``check_many``;
- the case pipeline, which prepares guard and model inputs ahead and shares
  one segmentation, equals classifying slice by slice;
- the guard's ONNX Runtime extractor is kept only when its scores match PyTorch's.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image

from lungct import lungs
from lungct.guard import InputGuard, guard_dir
from lungct.guard.features import EXTRACTOR_FILE, OnnxFeatureExtractor
from lungct.training import first_use, guard_fit
from test_lungs import chest_hu
from lungct.preprocess import hu_window
from lungct.preprocess import decode_image


def _masks(seed: int, n: int = 6):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        m = ndi.binary_opening(rng.random((90, 120)) < 0.5, iterations=2)
        m[:, :2] = False
        yield m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_opencv_morphology_equals_scipy(seed):
    """The segmentation's OpenCV erosion and opening are scipy's, pixel for pixel, also
    where the mask touches the image edge (outside counts as background in both)."""
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3):
        m = rng.random((70, 90)) < 0.6
        m[:, :5] = True
        assert np.array_equal(lungs._erode(m, n), ndi.binary_erosion(m, iterations=n))
        assert np.array_equal(lungs._open(m, n), ndi.binary_opening(m, iterations=n))
        labels, k = ndi.label(m)
        assert np.array_equal(lungs._sizes(labels, k),
                              ndi.sum(m, labels, index=np.arange(1, k + 1)))
    empty = np.zeros((12, 12), bool)
    assert lungs.bbox(empty) is None
    box = empty.copy()
    box[3:7, 2:9] = True
    assert lungs.bbox(box) == (3, 2, 7, 9)


def test_an_in_range_slice_is_used_as_is_and_a_bad_one_refused():
    g = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    assert lungs._as_gray(g) is g
    assert lungs._as_gray(g * 2).max() == 1.0
    for bad in (np.full((20, 20), np.nan, np.float32), np.full((20, 20), np.inf)):
        with pytest.raises(ValueError, match="finite 2-D grey slice"):
            lungs._as_gray(bad)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hull_on_the_bounding_box_equals_the_whole_image(seed):
    for m in _masks(seed):
        assert np.array_equal(lungs._hull(m), convex_hull_image(m) if m.any() else m)
    empty = np.zeros((10, 10), bool)
    assert not lungs._hull(empty).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_inscribed_radius_equals_the_whole_image_transform(seed):
    for m in _masks(seed):
        labels, n = ndi.label(m)
        for k in range(1, n + 1):
            full = float(ndi.distance_transform_edt(labels == k).max())
            assert lungs._inscribed_radius(labels, k) == pytest.approx(full)


def _trim_reference(gray, tol=0.01):
    """The first release's trim_frame: every row and column tested."""
    h, w = gray.shape

    def flat(axis):
        med = np.median(gray, axis=axis, keepdims=True)
        mostly = (np.abs(gray - med) <= 2 * tol).mean(axis=axis) >= 0.9
        return (gray.std(axis=axis) < tol) | (mostly & (med.squeeze(axis) > 0.05))

    def run(f):
        return int(np.argmin(f)) if not f.all() else len(f)
    rows, cols = flat(1), flat(0)
    y0, y1, x0, x1 = run(rows), h - run(rows[::-1]), run(cols), w - run(cols[::-1])
    if y1 - y0 < h // 4 or x1 - x0 < w // 4:
        return 0, 0, h, w
    return y0, x0, y1, x1


@pytest.mark.parametrize("pad", [0, 3, 37])
@pytest.mark.parametrize("value", [0.0, 0.8])
def test_trim_frame_equals_testing_every_line(pad, value):
    g = hu_window(chest_hu(120, seed=pad), 1500, -600)
    framed = np.pad(g, ((pad, pad + 5), (pad + 20, pad)), constant_values=value)
    framed[2:6, 10:60] = 1.0 if pad else framed[2:6, 10:60]      # a title bar
    assert lungs.trim_frame(framed) == _trim_reference(framed)
    blank = np.full((40, 40), value, np.float32)
    assert lungs.trim_frame(blank) == _trim_reference(blank) == (0, 0, 40, 40)


@pytest.fixture(scope="module")
def real_guard():
    return InputGuard.load()


@pytest.fixture(scope="module")
def slices(sample_bytes):
    grays = [decode_image(b) for b in sample_bytes.values()]
    return grays + [hu_window(chest_hu(160, lungs=False, seed=1), 400, 40),
                    np.zeros((64, 64), np.float32), np.random.default_rng(0).random((80, 80))]


def test_prepare_then_check_equals_check_many(real_guard, slices):
    many = real_guard.check_many(slices)
    prepared = real_guard.check_prepared([real_guard.prepare(g) for g in slices])
    assert [v.status for v in prepared] == [v.status for v in many]
    assert [v.score for v in prepared] == pytest.approx([v.score for v in many], rel=1e-5,
                                                        nan_ok=True)
    seg = lungs.segment(slices[0])       # a segmentation made elsewhere is used as is
    assert real_guard.check_prepared([real_guard.prepare(slices[0], seg=seg)])[0].score == \
        pytest.approx(many[0].score, rel=1e-5)


def test_case_pipeline_equals_slice_by_slice(real_guard, sample_bytes):
    from lungct.pipeline import analyse_slices
    from lungct.inference import Classifier
    from lungct.pipeline.series import read_slice

    clf = Classifier.from_name("student_lungs", backend="torch")
    files = [read_slice(name, data) for name, data in sample_bytes.items()]
    results = analyse_slices(clf, files, real_guard, batch_size=4)
    for r, data in zip(results, sample_bytes.values()):
        gray = decode_image(data)
        verdict = real_guard.check(gray)
        assert r.guard["status"] == verdict.status
        assert r.guard_input is None and r.model_input is None   # freed after the batch
        if verdict.accepted:
            want = clf.predict_gray(gray).probabilities
            assert r.prediction.probabilities == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("model", ["student_kd", "student_lungs"])
def test_a_lone_slice_equals_the_batch_path(real_guard, sample_bytes, model):
    """One slice runs the guard beside the forward pass (``analyse_one``); a batch runs them
    in turn. Same verdicts, same answers; a refused slice carries no prediction."""
    import io

    from PIL import Image

    from lungct.pipeline import run_case
    from lungct.inference import Classifier

    clf = Classifier.from_name(model, backend="torch")
    noise = io.BytesIO()
    Image.fromarray((np.random.default_rng(3).random((96, 96)) * 255).astype(np.uint8)).save(
        noise, format="PNG")
    inputs = [*sample_bytes.items(), ("noise.png", noise.getvalue())]
    together = {r.name: r for r in run_case(inputs, clf, real_guard).slices}
    assert len(together) == len(inputs)
    for name, data in inputs:
        batch = together[name]
        alone = run_case([(name, data)], clf, real_guard).slices[0]
        assert alone.status == batch.status and alone.guard["status"] == batch.guard["status"]
        if batch.guard["score"] is None:  # refused before any score (blank, noise)
            assert alone.guard["score"] is None
        else:
            assert alone.guard["score"] == pytest.approx(batch.guard["score"], rel=1e-5)
        if batch.ok:
            assert alone.prediction.probabilities == pytest.approx(
                batch.prediction.probabilities, abs=1e-5)
            assert alone.warning == batch.warning
        else:
            assert alone.prediction is None and alone.error
    assert together["noise.png"].status == "refused"


def test_onnx_extractor_is_kept_only_when_it_matches(real_guard, slices, tmp_path):
    folder = tmp_path / "guard"
    shutil.copytree(guard_dir(), folder, ignore=shutil.ignore_patterns("extractor*"))
    guard = InputGuard.load(folder)
    assert guard.backend == "torch"                   # nothing built yet
    views = [lungs.lung_view(g, guard.size) for g in slices[:6]]
    record = guard_fit.export_onnx(guard, views)
    assert record["passed"] and record["verdicts_identical"]
    assert record["max_abs_score_diff"] <= record["max_score_diff_allowed"]
    fast = InputGuard.load(folder)
    assert fast.backend == "onnx" and isinstance(fast.extractor, OnnxFeatureExtractor)
    torch_scores = [v.score for v in guard.check_many(slices)]   # PyTorch, float32
    onnx_scores = [v.score for v in fast.check_many(slices)]
    assert onnx_scores == pytest.approx(torch_scores, abs=1e-3, nan_ok=True)
    # an impossible tolerance: the file is not kept
    (folder / EXTRACTOR_FILE).unlink()
    assert not guard_fit.export_onnx(guard, views, max_score_diff=-1.0)["passed"]
    assert not (folder / EXTRACTOR_FILE).exists()


def test_a_foreign_extractor_file_falls_back_to_pytorch(tmp_path):
    folder = tmp_path / "guard"
    shutil.copytree(guard_dir(), folder, ignore=shutil.ignore_patterns("extractor*"))
    (folder / EXTRACTOR_FILE).write_bytes(b"not an onnx model")
    assert InputGuard.load(folder).backend == "torch"


def test_the_guard_builds_its_onnx_extractor_once_on_first_use(tmp_path, monkeypatch):
    """After a plain ``pip install -e .`` there is no ``make onnx``: the first command or
    app session builds the extractor (one line says so), later ones do not; nothing is
    built when PyTorch is forced, and a failed build leaves the guard on PyTorch."""
    folder = tmp_path / "guard"
    shutil.copytree(guard_dir(), folder, ignore=shutil.ignore_patterns("extractor*"))
    guard, built, lines = InputGuard.load(folder), [], []

    def build(g):
        built.append(g.folder)
        (g.folder / EXTRACTOR_FILE).write_bytes(b"built")
        return {"passed": True}, None

    monkeypatch.delenv("LUNGCT_BACKEND", raising=False)
    monkeypatch.setattr(guard_fit, "build_exports", build)
    assert first_use.ensure_exports(guard, lines.append) and built == [folder]
    assert "make onnx" in lines[0]
    assert not first_use.ensure_exports(guard, lines.append) and len(built) == 1
    (folder / EXTRACTOR_FILE).unlink()
    monkeypatch.setenv("LUNGCT_BACKEND", "torch")
    assert not first_use.ensure_exports(guard, lines.append) and len(built) == 1
    monkeypatch.delenv("LUNGCT_BACKEND")

    def broken(g):
        raise PermissionError("read-only models folder")

    monkeypatch.setattr(guard_fit, "build_exports", broken)
    assert not first_use.ensure_exports(guard, lines.append)
    assert "runs on PyTorch" in lines[-1] and "PermissionError" in lines[-1]
    assert not first_use.ensure_exports(None, lines.append)


def test_a_shipped_model_is_exported_once_on_first_use(tmp_path, monkeypatch):
    """The same for the classifier: the default model without ``model.onnx`` is exported on
    first use, once; another model, a folder given by path, a forced PyTorch backend or a
    folder without weights is left alone."""
    from lungct.config import load_config
    from lungct.training import onnx_export

    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    (models / "m" / "model.safetensors").write_bytes(b"weights")
    (models / "m" / "card.json").write_text("{}")
    elsewhere = tmp_path / "mine"
    shutil.copytree(models / "m", elsewhere)
    monkeypatch.setenv("LUNGCT_MODELS", str(models))
    monkeypatch.delenv("LUNGCT_BACKEND", raising=False)
    exported, lines = [], []

    def export(folder, cfg):
        exported.append(folder.name)
        (folder / "model.onnx").write_bytes(b"onnx")
        return {"parity": {"passed": True}}

    monkeypatch.setattr(onnx_export, "export_model", export)
    cfg = load_config(overrides=["app.default_model=m"])
    shutil.copytree(models / "m", models / "other")
    assert not first_use.ensure_model_export("other", cfg, log=lines.append)
    assert first_use.ensure_model_export("m", cfg, log=lines.append) and exported == ["m"]
    assert "make onnx" in lines[0]
    assert not first_use.ensure_model_export("m", cfg, log=lines.append)     # built
    assert not first_use.ensure_model_export(str(elsewhere), cfg, log=lines.append)
    (models / "m" / "model.onnx").unlink()
    assert not first_use.ensure_model_export("m", cfg, backend="torch", log=lines.append)
    (models / "m" / "model.safetensors").unlink()
    assert not first_use.ensure_model_export("m", cfg, log=lines.append)
    assert exported == ["m"]
