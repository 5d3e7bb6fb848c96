"""Tests for lungct.guard: pure helpers (Hypothesis), the Gaussian score, the guard's
four verdicts and file format with a stand-in extractor, and the shipped guard on
real slices, phantoms of other anatomy and non-CT images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lungct import guard as guard_pkg
from lungct.config import REPO_ROOT, load_config
from lungct.guard import (ACCEPTED, CARD_FILE, NOT_CT, NOT_IMAGE, OUTSIDE_LUNGS, REJECTED,
                          WEIGHTS_FILE, GuardLoadError, InputGuard, OutOfDistribution,
                          modality_verdict)
from lungct.training import guard_fit
from lungct.guard.density import PPCAGaussian
from lungct.guard.variants import (affine, border, crop, jpeg, random_variant,
                                   resample, retissue, tissue_masks, window)
from lungct.guard.verdict import as_gray, spread
from lungct.pipeline import ClassifierBase
from lungct.preprocess import hu_window, load_image
from test_lungs import chest_hu

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))
GUARD_FILE = guard_pkg.guard_dir() / WEIGHTS_FILE

grays = arrays(np.float32, st.tuples(st.integers(16, 80), st.integers(16, 80)),
               elements=st.floats(0, 1, width=32))
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------- pure helpers

@FAST
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 30)),
              elements=st.floats(-5, 5)))
def test_as_gray_clips_to_unit_float32(arr):
    out = as_gray(arr)
    assert out.dtype == np.float32 and out.shape == arr.shape
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 2, 3)), np.zeros((0, 4)),
                                 np.array([[np.nan, 0.0]]), np.array([["a", "b"]])])
def test_as_gray_rejects_non_slices(bad):
    with pytest.raises(ValueError):
        as_gray(bad)


@FAST
@given(grays, st.floats(0, 0.4), st.floats(0.5, 1), st.floats(0.2, 5))
def test_window_stays_in_range_and_keeps_order(g, low, high, gamma):
    out = window(g, low, high, gamma)
    assert out.shape == g.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    order = np.argsort(g.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= -1e-6)  # monotone display change


def test_window_identity_and_errors():
    g = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    np.testing.assert_allclose(window(g), g, atol=1e-7)
    with pytest.raises(ValueError):
        window(g, 0.5, 0.5)
    with pytest.raises(ValueError):
        window(g, gamma=0)


@FAST
@given(grays, st.floats(0.05, 1), st.floats(0, 1), st.floats(0, 1))
def test_crop_is_a_subarray(g, frac, fx, fy):
    out = crop(g, frac, fx, fy)
    h, w = g.shape
    assert out.shape == (max(1, round(h * frac)), max(1, round(w * frac)))
    assert out.flags.c_contiguous


@FAST
@given(grays, st.integers(0, 20), st.floats(0, 1))
def test_border_pads_with_the_value(g, width, value):
    out = border(g, width, value)
    assert out.shape == (g.shape[0] + 2 * width, g.shape[1] + 2 * width)
    if width:
        assert np.allclose(out[0], np.float32(value))


@FAST
@given(grays, st.integers(8, 100))
def test_resample_and_jpeg_keep_the_contract(g, side):
    out = resample(g, side)
    assert out.shape == (side, side) and out.dtype == np.float32
    j = jpeg(g, 60)
    assert j.shape == g.shape and j.min() >= 0 and j.max() <= 1


@FAST
@given(grays, st.floats(-20, 20), st.floats(0.8, 1.2), st.floats(-0.1, 0.1),
       st.floats(-0.1, 0.1), st.booleans())
def test_affine_keeps_shape_and_range(g, angle, scale, dx, dy, flip):
    out = affine(g, angle, scale, dx, dy, flip)
    assert out.shape == g.shape and out.min() >= 0 and out.max() <= 1


def test_affine_identity_and_flip():
    g = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    np.testing.assert_allclose(affine(g), g, atol=1e-5)
    np.testing.assert_allclose(affine(g, hflip=True), g[:, ::-1], atol=1e-5)


@FAST
@given(grays, st.floats(0, 1), st.floats(0, 1))
def test_retissue_and_masks(g, soft, lung):
    body, lungs, bone = tissue_masks(g)
    assert body.shape == lungs.shape == bone.shape == g.shape
    assert not (lungs & ~body).any()  # lungs lie inside the body
    out = retissue(g, soft, lung)
    assert out.shape == g.shape and out.min() >= 0 and out.max() <= 1


@FAST
@given(grays)
def test_random_variant_keeps_the_contract(g):
    out = random_variant(g, np.random.default_rng(0))
    assert out.ndim == 2 and out.dtype == np.float32 and min(out.shape) >= 1
    assert out.min() >= 0 and out.max() <= 1 and np.isfinite(out).all()


@FAST
@given(st.floats(0, 1), st.integers(16, 300), st.integers(16, 300))
def test_spread_of_a_uniform_image_is_zero(v, h, w):
    assert spread(np.full((h, w), v, np.float32)) < 1e-6


def test_spread_of_a_slice_is_large():
    assert spread(load_image(SAMPLES[0])) > 0.05


@pytest.mark.parametrize("modality", ["MG", "US", "mr", " DX "])
def test_modality_verdict_rejects_non_ct(modality):
    v = modality_verdict(modality)
    assert v is not None and not v.in_distribution
    assert REJECTED in v.reason and modality.strip().upper() in v.reason
    json.dumps(v.as_dict())  # inf score becomes null


@pytest.mark.parametrize("modality", ["CT", "OT", "SC", None, ""])
def test_modality_verdict_leaves_ct_and_captures_to_the_pixels(modality):
    assert modality_verdict(modality) is None


# ------------------------------------------------------------ the score

@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2 ** 31), st.integers(3, 30), st.integers(1, 40))
def test_ppca_score_properties(seed, dim, k):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, dim)) * rng.uniform(0.1, 3, dim) + rng.normal(size=dim)
    g = PPCAGaussian.fit(X, k)
    s = g.score(X)
    assert np.all(s >= 0) and np.isfinite(s).all()
    assert abs(np.median(s) - 1) < 1e-6  # normalised by the fit-set median
    assert g.score(g.mean)[0] == pytest.approx(0, abs=1e-9)
    far = g.mean + 50 * X.std(0)
    assert g.score(far)[0] > s.max()
    back = PPCAGaussian.from_tensors(g.tensors("x"), "x")
    np.testing.assert_allclose(back.score(X), s, rtol=1e-5)


def test_ppca_full_rank_equals_mahalanobis():
    """With all components kept, the score is the plain (shrunk) Mahalanobis distance."""
    from sklearn.covariance import LedoitWolf
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    g = PPCAGaussian.fit(X, k=6)
    lw = LedoitWolf(assume_centered=True).fit(X - X.mean(0))
    d2 = lw.mahalanobis(X - X.mean(0))
    np.testing.assert_allclose(g.score(X) * g.scale * 6, d2, rtol=1e-4)


def test_ppca_needs_samples():
    with pytest.raises(ValueError):
        PPCAGaussian.fit(np.zeros((1, 4)))


# ------------------------------------------------- guard with a stand-in

class HistogramExtractor:
    """Stands in for the CNN: features are intensity histograms at two resolutions."""

    layers = ("a", "b")

    def __call__(self, grays, batch_size=32):
        a = [np.histogram(resample(g, 32), bins=8, range=(0, 1))[0] / 1024 for g in grays]
        b = [resample(g, 4).ravel() for g in grays]
        return {"a": np.asarray(a, np.float32), "b": np.asarray(b, np.float32)}


def _slice_like(rng, lungs: bool = True):
    """A chest phantom in a random lung-ish window: the toy guard's 'in-distribution'."""
    hu = chest_hu(96, lungs=lungs, seed=int(rng.integers(1 << 16)))
    return hu_window(hu, rng.uniform(1200, 1800), rng.uniform(-700, -450))


@pytest.fixture(scope="module")
def toy_guard():
    rng = np.random.default_rng(0)
    fx = HistogramExtractor()
    # like the real fit: chest slices and CT slices without lung (neck, abdomen) alike
    feats = fx([_slice_like(rng, lungs=i % 3 != 0) for i in range(300)])
    gaussians = {k: PPCAGaussian.fit(v, 4) for k, v in feats.items()}
    guard = InputGuard(gaussians, threshold=1.0, card={"input_size": 64}, extractor=fx)
    val = guard.score_many([_slice_like(rng, lungs=i % 3 != 0) for i in range(100)])
    guard.threshold = float(np.percentile(val, 99))
    return guard


def test_toy_guard_accepts_its_kind_and_rejects_others(toy_guard):
    rng = np.random.default_rng(5)
    good = toy_guard.check_many([_slice_like(rng) for _ in range(20)])
    assert sum(v.in_distribution for v in good) >= 18
    assert all(v.status == ACCEPTED and v.accepted for v in good if v.in_distribution)
    noise = toy_guard.check(rng.random((64, 64)))
    assert not noise.in_distribution and noise.status == NOT_CT
    assert noise.reason.startswith(REJECTED)


def test_a_ct_slice_without_lung_is_outside_the_lungs(toy_guard):
    """Neck and abdomen: CT, so not refused as 'not CT', and never classified (never normal)."""
    rng = np.random.default_rng(6)
    verdicts = toy_guard.check_many([_slice_like(rng, lungs=False) for _ in range(10)])
    assert sum(v.status == OUTSIDE_LUNGS for v in verdicts) >= 8
    for v in verdicts:
        assert not v.accepted and not v.in_distribution
        if v.status == OUTSIDE_LUNGS:
            assert "outside the lungs" in v.reason and v.lung_fraction < toy_guard.min_lung


def test_blank_rule_has_its_own_reason(toy_guard):
    v = toy_guard.check(np.zeros((50, 50), np.float32))
    assert not v.in_distribution and "blank" in v.reason and v.status == NOT_IMAGE
    assert toy_guard.check(np.full((8, 8), 0.5, np.float32)).status == NOT_IMAGE


def test_check_many_equals_check(toy_guard):
    rng = np.random.default_rng(7)
    imgs = [_slice_like(rng), rng.random((40, 70)), np.ones((20, 20))]
    # batch size changes the summation order of BLAS kernels: scores agree to rounding
    many, one = toy_guard.check_many(imgs), [toy_guard.check(g) for g in imgs]
    assert [v.in_distribution for v in many] == [v.in_distribution for v in one]
    assert [v.status for v in many] == [v.status for v in one]
    assert [v.score for v in many] == pytest.approx([v.score for v in one], rel=1e-6,
                                                    nan_ok=True)
    assert toy_guard.check_many([]) == []


def test_check_refuses_non_arrays(toy_guard):
    with pytest.raises(ValueError):
        toy_guard.check(np.zeros((3, 3, 3)))


def test_verdict_semantics(toy_guard):
    thr = toy_guard.threshold
    assert toy_guard.verdict(thr).in_distribution  # the threshold itself passes
    assert not toy_guard.verdict(thr * 1.001).in_distribution
    assert not toy_guard.verdict(math.nan).in_distribution
    d = toy_guard.verdict(math.inf).as_dict()
    assert d["score"] is None and json.dumps(d)


def test_save_load_round_trip(toy_guard, tmp_path):
    folder = toy_guard.save(tmp_path / "g")
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_FILE, CARD_FILE])
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["kind"] == "input_guard" and "arch" not in card
    assert (folder / WEIGHTS_FILE).read_bytes()[8:9] == b"{"  # safetensors header, no pickle
    back = InputGuard.load(folder, cfg={"ood": {"threshold": None}})
    back._extractor = toy_guard._extractor
    assert back.threshold == pytest.approx(toy_guard.threshold)
    rng = np.random.default_rng(3)
    imgs = [_slice_like(rng), rng.random((64, 64))]
    assert [v.in_distribution for v in back.check_many(imgs)] == \
        [v.in_distribution for v in toy_guard.check_many(imgs)]
    # params.yaml's ood.threshold wins over the card's
    assert InputGuard.load(folder, cfg={"ood": {"threshold": 123.0}}).threshold == 123.0
    # loading by the weights file path works too
    assert InputGuard.load(folder / WEIGHTS_FILE, cfg={}).layers == toy_guard.layers


def test_load_errors(toy_guard, tmp_path):
    with pytest.raises(GuardLoadError, match="no input guard"):
        InputGuard.load(tmp_path / "missing", cfg={})
    folder = toy_guard.save(tmp_path / "g")
    (folder / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(GuardLoadError, match="corrupt"):
        InputGuard.load(folder, cfg={})
    folder = toy_guard.save(tmp_path / "h")
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(GuardLoadError):
        InputGuard.load(folder, cfg={})


def test_guard_folder_is_not_a_classifier(toy_guard, tmp_path):
    from lungct.models import list_shipped
    toy_guard.save(tmp_path / "ood_guard")
    assert list_shipped(tmp_path) == []


def test_fit_guard_plumbing(tmp_path, monkeypatch):
    """fit_guard on a tiny synthetic dataset and a synthetic DICOM layout of two patients,
    with the stand-in extractor (no CNN): seeded, thresholds from validation, held-out report."""
    from PIL import Image

    from dicom_factory import ct_series

    def write_ct_series(folder, n, size):
        folder.mkdir(parents=True)
        image = hu_window(chest_hu(size), 1500, -600)
        for i, data in enumerate(ct_series(n, size=size, image=image)):
            (folder / f"1-{i + 1:02d}.dcm").write_bytes(data)

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    rows = []
    for part, n in (("train", 10), ("val", 5), ("test", 3)):
        for i in range(n):
            rel = f"Normal cases/{part}_{i}.png"
            (root / "Normal cases").mkdir(parents=True, exist_ok=True)
            Image.fromarray((_slice_like(rng) * 255).astype(np.uint8)).save(root / rel)
            rows.append({"path": rel, "label": "normal", "md5": "x", "group": f"g{i}",
                         "paper_split": part, "grouped_split": part})
    from lungct.data.splits import write_manifest
    write_manifest(rows, tmp_path / "splits.csv")
    ext = tmp_path / "lpcd"
    for patient in ("A0001", "A0002"):
        for kernel in ("B", "L"):
            write_ct_series(ext / f"Lung_Dx-{patient}-series-{kernel}", n=4, size=96)
    monkeypatch.setattr(guard_fit, "shared_extractor", lambda *a, **k: HistogramExtractor())
    monkeypatch.setattr(guard_fit, "LAYERS", HistogramExtractor.layers)
    cfg = {"data": {"root": str(root), "manifest": str(tmp_path / "splits.csv"),
                    "external": str(ext)},
           "ood": {"variants_per_image": 1, "val_variants_per_image": 1, "components": 3}}
    guard = guard_fit.fit_guard(cfg, log=lambda s: None)
    card = guard.card
    assert card["kind"] == "input_guard" and card["fit"]["iq_othnccd"]["images"] == 10
    assert card["fit"]["lung_pet_ct_dx"]["slices"] == 4
    assert card["report"]["held_out_patient"]["patients"] == ["A0002"]
    assert math.isfinite(guard.threshold) and guard.threshold > 0
    assert 0 < guard.min_lung < 0.5  # the phantoms' lungs fill about 40% of the body
    assert card["threshold_selection"]["min_lung"]["val_lung_slices_accepted"] >= 0.98
    again = guard_fit.fit_guard(cfg, log=lambda s: None)
    assert again.threshold == pytest.approx(guard.threshold)  # seeded: same data, same guard
    other = guard_fit.fit_guard(cfg, fit_patient="A0002", log=lambda s: None)
    assert other.card["report"]["held_out_patient"]["patients"] == ["A0001"]
    with pytest.raises(ValueError, match="not in"):
        guard_fit.fit_guard(cfg, fit_patient="Z9999", log=lambda s: None)


# ------------------------------------------------------ the shipped guard

@pytest.fixture(scope="module")
def guard():
    return InputGuard.load()  # shipped in git: models/ood_guard


def test_shipped_guard_files_are_small_and_described():
    folder = guard_pkg.guard_dir()
    assert (folder / WEIGHTS_FILE).stat().st_size < 5_000_000
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["kind"] == "input_guard" and "arch" not in card
    assert card["fit"]["iq_othnccd"]["split"] == "grouped train"
    assert "held_out_patient" in card["report"]  # other scanners' DICOM, never fitted on
    assert not (folder / "card.json").exists()


def test_params_threshold_is_used(guard):
    params = load_config().get("ood") or {}
    if params.get("threshold") is not None:
        assert guard.threshold == pytest.approx(float(params["threshold"]))


def test_samples_pass(guard):
    verdicts = guard.check_many([load_image(p) for p in SAMPLES])
    assert all(v.in_distribution for v in verdicts), [v.reason for v in verdicts]


def test_other_renderings_of_a_sample_pass(guard):
    from lungct.lab.safety_report import other_source_variants
    g = load_image(REPO_ROOT / "samples" / "normal_1.jpg")
    variants = [(k, v) for k, v in other_source_variants(g, seed=0)
                if k in ("gamma", "resize_256", "resize_768", "screenshot", "jpeg_q40")]
    verdicts = guard.check_many([v for _, v in variants])
    assert all(v.in_distribution for v in verdicts), \
        [(k, v.score) for (k, _), v in zip(variants, verdicts)]


def test_non_ct_images_are_rejected(guard):
    from lungct.lab.safety_report import non_ct_set
    items = non_ct_set()[::3]  # a third of the set: the full one is in the safety report
    verdicts = guard.check_many([g for _, _, g in items])
    accepted = [(c, n) for (c, n, _), v in zip(items, verdicts) if v.in_distribution]
    assert not accepted


@pytest.mark.parametrize("window", [(1500, -600), (1200, -500), (400, 40)])
def test_chest_phantom_as_a_scanner_renders_it_is_ct(guard, window):
    """A chest slice in HU, in lung, wide and soft-tissue windows: CT with lungs, never
    'not a CT slice'."""
    v = guard.check(hu_window(chest_hu(512), *window))
    assert v.status != NOT_IMAGE and v.lung_fraction > guard.min_lung


def test_other_anatomy_is_never_classified(guard):
    """Brain and abdomen CT phantoms and a chest X-ray phantom: no class, whatever the reason."""
    from lungct.lab.phantoms import abdomen_ct_phantom, brain_ct_phantom, chest_xray_phantom
    images = [f(seed) for f in (brain_ct_phantom, abdomen_ct_phantom, chest_xray_phantom)
              for seed in range(3)]
    assert not [v.reason for v in guard.check_many(images) if v.accepted]


def test_guard_is_deterministic(guard):
    g = load_image(SAMPLES[1])
    assert guard.check(g) == guard.check(g.copy())


def test_require_raises_an_invalid_image_error(toy_guard):
    from lungct.preprocess import InvalidImageError
    rng = np.random.default_rng(11)
    good = _slice_like(rng)
    assert toy_guard.require(good).in_distribution
    with pytest.raises(InvalidImageError) as info:
        toy_guard.require(rng.random((64, 64)))
    assert isinstance(info.value, OutOfDistribution)
    assert str(info.value).startswith(REJECTED) and not info.value.verdict.in_distribution


def test_require_checks_the_dicom_modality(toy_guard):
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    good = _slice_like(np.random.default_rng(0))  # pixels the toy guard accepts
    with pytest.raises(OutOfDistribution, match="modality US"):
        toy_guard.require(good, buf.getvalue())
    assert toy_guard.require(good, b"\x89PNG\r\n\x1a\n").in_distribution  # not DICOM: pixels


# ------------------------------------------------- safety-report helpers

@FAST
@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_interval_contains_the_rate(k, n):
    from lungct.lab.safety_report import wilson
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0 <= lo <= k / n + 1e-9 and k / n - 1e-9 <= hi <= 1


def test_image_sets_keep_the_decoded_contract():
    from lungct.lab.safety_report import OTHER_SOURCE_KINDS, non_ct_set, other_source_variants, rss_mb
    items = non_ct_set()
    assert len(items) >= 90 and len({c for c, _, _ in items}) >= 10
    for _, _, g in items:
        assert g.ndim == 2 and g.dtype == np.float32 and 0 <= g.min() and g.max() <= 1
    variants = other_source_variants(load_image(SAMPLES[0]), seed=1)
    assert tuple(k for k, _ in variants) == OTHER_SOURCE_KINDS
    assert all(g.ndim == 2 and 0 <= g.min() and g.max() <= 1 for _, g in variants)
    assert rss_mb() > 10


def test_min_lung_keeps_every_found_lung_slice_of_validation():
    """The limit is the lowest lung fraction among validation lung slices whose lung
    fields are found (the bases: a quantile would turn them away), below the cap that keeps
    99% of all-chest slices; slices with nothing found do not drag it to the floor."""
    fractions = np.array([0.0, 0.0123, 0.2, 0.3, 0.25, 0.0, 0.002])
    reference = np.array([True, True, True, True, True, False, False])
    t, info = guard_fit.choose_min_lung(fractions, reference, np.full(50, 0.2))
    assert t == pytest.approx(0.012)
    assert info["val_lung_slices_found"] == pytest.approx(0.8)
    assert info["val_lung_slices_accepted"] == pytest.approx(0.8)
    assert info["val_other_slices_outside_lungs"] == pytest.approx(1.0)
    # never above the all-chest cap, never below the floor
    assert guard_fit.choose_min_lung(fractions, reference, np.full(50, 0.01))[0] == pytest.approx(0.01)
    assert guard_fit.choose_min_lung(np.array([0.001]), np.array([True]),
                                     np.full(5, 0.2))[0] == pytest.approx(0.005)
    # a lower recall may drop the lowest found slice
    assert guard_fit.choose_min_lung(fractions, reference, np.full(50, 0.2),
                                     recall=0.7)[0] == pytest.approx(0.2)


def test_two_tone_images_are_masks_not_ct():
    """A chest segmentation mask (shaped like a chest, no tissue grey) is refused as not CT
    before the learned score and the anatomical check see it; CT renderings never are."""
    import io

    from PIL import Image

    from lungct.guard.verdict import two_tone
    from lungct.lab.phantoms import chest_mask
    for kind in ("body", "lungs", "inverted"):
        mask = chest_mask(1, 256, kind)
        assert two_tone(mask)
        buf = io.BytesIO()
        Image.fromarray((mask * 255).astype(np.uint8)).save(buf, "JPEG", quality=75)
        assert two_tone(np.asarray(Image.open(buf), np.float32) / 255)
    from lungct.lab.phantoms import other_source_variants
    for path in sorted((REPO_ROOT / "samples").glob("*.jpg")):  # narrow-window exports
        gray = load_image(path)
        assert not two_tone(gray)
        # contrast stretched until nearly every pixel is black or white: still CT noise
        assert not two_tone(dict(other_source_variants(gray, seed=0))["contrast"])
    for window in ((1500, -600), (350, 40)):
        assert not two_tone(hu_window(chest_hu(), *window))


def test_the_guard_refuses_a_mask_with_its_reason(toy_guard):
    from lungct.lab.phantoms import chest_mask
    verdict = toy_guard.check(chest_mask(2, 256, "body"))
    assert verdict.status == NOT_CT and "two-tone" in verdict.reason


def test_kernel_variant_blurs_sharpens_and_adds_noise():
    from lungct.guard.variants import kernel
    gray = hu_window(chest_hu(), 1500, -600)
    edges = lambda g: float(np.abs(np.diff(g, axis=1)).mean())  # noqa: E731
    soft, sharp = kernel(gray, -1.0), kernel(gray, 1.0)
    assert soft.shape == sharp.shape == gray.shape and soft.dtype == np.float32
    assert edges(soft) < edges(gray) < edges(sharp)
    assert 0.0 <= sharp.min() and sharp.max() <= 1.0
    noisy = kernel(gray, 0.0, 0.03, np.random.default_rng(1))
    assert float(np.std(noisy - gray)) == pytest.approx(0.03, abs=0.01)
    np.testing.assert_array_equal(kernel(gray, 0.0), gray)


class _CardClassifier(ClassifierBase):
    """A stand-in model whose card records how it fares on lung-window renderings."""

    name, classes = "stub", ("normal", "benign", "malignant")

    def __init__(self, normal_called_malignant):
        self.card = {"rendering_robustness": {"kinds": {"lung_window_imitation": {
            "normal_called_malignant": normal_called_malignant}}}}

    def prepare(self, gray, seg=None):
        return np.zeros(1, np.float32)

    def predict_prepared(self, arrays):
        from lungct.inference import Prediction
        return [Prediction("malignant", {"normal": 0.05, "benign": 0.05, "malignant": 0.9},
                           self.name, unsure=False) for _ in arrays]


def _png(gray) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray((np.asarray(gray) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_a_lung_window_answer_is_flagged_when_the_card_shows_the_model_fails_there(toy_guard):
    """A model whose card says it calls most lung-window normal slices malignant (``python
    -m lungct lab robustness``) still answers on a lung-window slice, flagged unsure with the
    measured rate as the slice's warning; not on a narrow-window slice, nor when the card
    shows no such failure."""
    from lungct.pipeline import CAUTION_RATE, run_case
    from lungct.lungs import segment
    lung = hu_window(chest_hu(96, seed=1), 1500, -600)
    narrow = hu_window(chest_hu(96, seed=1), 350, 40)
    assert segment(lung).grey_lungs and not segment(narrow).grey_lungs
    case = run_case([("lung.png", _png(lung)), ("narrow.png", _png(narrow))],
                    _CardClassifier(CAUTION_RATE + 0.5), guard=toy_guard)
    first, second = case.slices
    assert first.ok and second.ok
    assert first.lung_window and first.prediction.unsure
    assert "lung-window image" in first.warning and "75%" in first.warning
    assert second.lung_window is False and not second.prediction.unsure and not second.warning
    assert case.verdict["unsure"]
    calm = run_case([("lung.png", _png(lung))], _CardClassifier(CAUTION_RATE - 0.1),
                    guard=toy_guard)
    assert not calm.slices[0].prediction.unsure and not calm.slices[0].warning
