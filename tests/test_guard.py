"""Tests for lungct.ood: pure helpers (Hypothesis), the Gaussian score, the guard's
verdict logic and file format with a stand-in extractor, and the shipped guard on
real slices and non-CT images (skipped until models/ood_guard is fitted)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lungct import ood
from lungct.config import REPO_ROOT, load_config
from lungct.ood import (CARD_FILE, REJECTED, WEIGHTS_FILE, GuardLoadError, OODGuard, PPCAGaussian,
                        as_gray, border, crop, jpeg, modality_verdict, resample, retissue,
                        spread, tissue_masks, window)
from lungct.preprocess import load_image

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))
GUARD_FILE = ood.guard_dir() / WEIGHTS_FILE
needs_guard = pytest.mark.skipif(not GUARD_FILE.exists(),
                                 reason=f"no fitted guard at {GUARD_FILE} "
                                        "(python -m lungct.ood fit)")

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
    out = ood.affine(g, angle, scale, dx, dy, flip)
    assert out.shape == g.shape and out.min() >= 0 and out.max() <= 1


def test_affine_identity_and_flip():
    g = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    np.testing.assert_allclose(ood.affine(g), g, atol=1e-5)
    np.testing.assert_allclose(ood.affine(g, hflip=True), g[:, ::-1], atol=1e-5)


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
    out = ood.random_variant(g, np.random.default_rng(0))
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


def _slice_like(rng):
    """Dark background, bright ring and speckle: a crude stand-in 'in-distribution' image."""
    yy, xx = np.mgrid[0:64, 0:64] / 32.0 - 1
    r = np.hypot(xx / rng.uniform(0.8, 0.95), yy / rng.uniform(0.6, 0.75))
    g = np.where(r < 1, 0.05 + 0.05 * rng.random((64, 64)), 0.0)
    g[(r > 0.9) & (r < 1)] = 0.9
    return g.astype(np.float32)


@pytest.fixture(scope="module")
def toy_guard():
    rng = np.random.default_rng(0)
    fx = HistogramExtractor()
    feats = fx([_slice_like(rng) for _ in range(300)])
    gaussians = {k: PPCAGaussian.fit(v, 4) for k, v in feats.items()}
    guard = OODGuard(gaussians, threshold=1.0, card={"kind": "ood_guard", "input_size": 224},
                     extractor=fx)
    val = guard.score_many([_slice_like(rng) for _ in range(100)])
    guard.threshold = float(np.percentile(val, 99))
    return guard


def test_toy_guard_accepts_its_kind_and_rejects_others(toy_guard):
    rng = np.random.default_rng(5)
    good = toy_guard.check_many([_slice_like(rng) for _ in range(20)])
    assert sum(v.in_distribution for v in good) >= 18
    noise = toy_guard.check(rng.random((64, 64)))
    assert not noise.in_distribution and noise.score > noise.threshold
    assert noise.reason.startswith(REJECTED)


def test_blank_rule_has_its_own_reason(toy_guard):
    v = toy_guard.check(np.zeros((50, 50), np.float32))
    assert not v.in_distribution and "blank" in v.reason


def test_check_many_equals_check(toy_guard):
    rng = np.random.default_rng(7)
    imgs = [_slice_like(rng), rng.random((40, 70)), np.ones((20, 20))]
    # batch size changes the summation order of BLAS kernels: scores agree to rounding
    many, one = toy_guard.check_many(imgs), [toy_guard.check(g) for g in imgs]
    assert [v.in_distribution for v in many] == [v.in_distribution for v in one]
    assert [v.score for v in many] == pytest.approx([v.score for v in one], rel=1e-6)
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
    assert card["kind"] == "ood_guard" and "arch" not in card
    assert (folder / WEIGHTS_FILE).read_bytes()[8:9] == b"{"  # safetensors header, no pickle
    back = OODGuard.load(folder, cfg={"ood": {"threshold": None}})
    back._extractor = toy_guard._extractor
    assert back.threshold == pytest.approx(toy_guard.threshold)
    rng = np.random.default_rng(3)
    imgs = [_slice_like(rng), rng.random((64, 64))]
    assert [v.in_distribution for v in back.check_many(imgs)] == \
        [v.in_distribution for v in toy_guard.check_many(imgs)]
    # params.yaml's ood.threshold wins over the card's
    assert OODGuard.load(folder, cfg={"ood": {"threshold": 123.0}}).threshold == 123.0
    # loading by the weights file path works too
    assert OODGuard.load(folder / WEIGHTS_FILE, cfg={}).layers == toy_guard.layers


def test_load_errors(toy_guard, tmp_path):
    with pytest.raises(GuardLoadError, match="no OOD guard"):
        OODGuard.load(tmp_path / "missing", cfg={})
    folder = toy_guard.save(tmp_path / "g")
    (folder / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(GuardLoadError, match="corrupt"):
        OODGuard.load(folder, cfg={})
    folder = toy_guard.save(tmp_path / "h")
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(GuardLoadError):
        OODGuard.load(folder, cfg={})


def test_guard_folder_is_not_a_classifier(toy_guard, tmp_path):
    from lungct.models import list_shipped
    toy_guard.save(tmp_path / "ood_guard")
    assert list_shipped(tmp_path) == []


def test_fit_guard_plumbing(tmp_path, monkeypatch):
    """fit_guard on a tiny synthetic dataset, with the stand-in extractor (no CNN, seconds)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    rows = []
    for part, n in (("train", 12), ("val", 6), ("test", 3)):
        for i in range(n):
            rel = f"Normal cases/{part}_{i}.png"
            (root / "Normal cases").mkdir(parents=True, exist_ok=True)
            Image.fromarray((_slice_like(rng) * 255).astype(np.uint8)).save(root / rel)
            rows.append({"path": rel, "label": "normal", "md5": "x", "group": f"g{i}",
                         "paper_split": part, "grouped_split": part})
    from lungct.data.splits import write_manifest
    write_manifest(rows, tmp_path / "splits.csv")
    monkeypatch.setattr(ood, "shared_extractor", lambda *a, **k: HistogramExtractor())
    monkeypatch.setattr(ood, "LAYERS", HistogramExtractor.layers)
    cfg = {"data": {"root": str(root), "manifest": str(tmp_path / "splits.csv")},
           "ood": {"variants_per_image": 1, "val_variants_per_image": 1, "components": 3}}
    guard = ood.fit_guard(cfg, log=lambda s: None)
    card = guard.card
    assert card["kind"] == "ood_guard" and card["fit"]["images"] == 12
    assert card["fit"]["samples"] == 24 and card["threshold_selection"]["images"] == 6
    assert math.isfinite(guard.threshold) and guard.threshold > 0
    again = ood.fit_guard(cfg, log=lambda s: None)
    assert again.threshold == guard.threshold  # seeded: same data, same guard


# ------------------------------------------------------ the shipped guard

@pytest.fixture(scope="module")
def guard():
    if not GUARD_FILE.exists():
        pytest.skip(f"no fitted guard at {GUARD_FILE}")
    return OODGuard.load()


@needs_guard
def test_shipped_guard_files_are_small_and_described():
    folder = ood.guard_dir()
    assert (folder / WEIGHTS_FILE).stat().st_size < 5_000_000
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["kind"] == "ood_guard" and "arch" not in card
    assert card["fit"]["split"] == "grouped train"
    assert card["threshold_selection"]["split"] == "grouped val"
    assert not (folder / "card.json").exists()


@needs_guard
def test_params_threshold_is_used(guard):
    params = load_config().get("ood") or {}
    if params.get("threshold") is not None:
        assert guard.threshold == pytest.approx(float(params["threshold"]))


@needs_guard
def test_samples_pass(guard):
    verdicts = guard.check_many([load_image(p) for p in SAMPLES])
    assert all(v.in_distribution for v in verdicts), [v.reason for v in verdicts]


@needs_guard
def test_other_renderings_of_a_sample_pass(guard):
    from lungct.safety_report import other_source_variants
    g = load_image(REPO_ROOT / "samples" / "normal_1.jpg")
    variants = [(k, v) for k, v in other_source_variants(g, seed=0)
                if k in ("gamma", "resize_256", "resize_768", "screenshot", "jpeg_q40")]
    verdicts = guard.check_many([v for _, v in variants])
    assert all(v.in_distribution for v in verdicts), \
        [(k, v.score) for (k, _), v in zip(variants, verdicts)]


@needs_guard
def test_non_ct_images_are_rejected(guard):
    from lungct.safety_report import non_ct_set
    items = non_ct_set()[::3]  # a third of the set: the full one is in the safety report
    verdicts = guard.check_many([g for _, _, g in items])
    accepted = [(c, n) for (c, n, _), v in zip(items, verdicts) if v.in_distribution]
    assert not accepted


@needs_guard
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
    assert isinstance(info.value, ood.OutOfDistribution)
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
    with pytest.raises(ood.OutOfDistribution, match="modality US"):
        toy_guard.require(good, buf.getvalue())
    assert toy_guard.require(good, b"\x89PNG\r\n\x1a\n").in_distribution  # not DICOM: pixels


# ------------------------------------------------- safety-report helpers

@FAST
@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_interval_contains_the_rate(k, n):
    from lungct.safety_report import wilson
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0 <= lo <= k / n + 1e-9 and k / n - 1e-9 <= hi <= 1


def test_image_sets_keep_the_decoded_contract():
    from lungct.safety_report import OTHER_SOURCE_KINDS, non_ct_set, other_source_variants, rss_mb
    items = non_ct_set()
    assert len(items) >= 90 and len({c for c, _, _ in items}) >= 10
    for _, _, g in items:
        assert g.ndim == 2 and g.dtype == np.float32 and 0 <= g.min() and g.max() <= 1
    variants = other_source_variants(load_image(SAMPLES[0]), seed=1)
    assert tuple(k for k, _ in variants) == OTHER_SOURCE_KINDS
    assert all(g.ndim == 2 and 0 <= g.min() and g.max() <= 1 for _, g in variants)
    assert rss_mb() > 10
