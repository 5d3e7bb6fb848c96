"""Lung segmentation, lung crop and rendering standardisation (lungct.lungs) on phantoms
rendered the ways hospitals export CT: lung window, narrow window, screenshots with
borders; plus the committed IQ-OTH/NCCD samples."""

from __future__ import annotations

import numpy as np
import pytest

from lungct.config import REPO_ROOT
from lungct.guard.variants import border, jpeg
from lungct.preprocess import hu_window
from lungct.lungs import (LUNG_LEVEL, TISSUE_LEVEL, crop_box, lung_view, segment, standardise,
                          trim_frame)
from lungct.preprocess import load_image, model_view

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))


def _ellipse(n, cy, cx, ry, rx):
    y, x = np.mgrid[:n, :n]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def chest_hu(n: int = 256, lungs: bool = True, seed: int = 0) -> np.ndarray:
    """An axial chest-like slice in HU: air, a body of soft tissue, two lungs, a spine,
    a nodule in the right lung, a table below."""
    rng = np.random.default_rng(seed)
    hu = np.full((n, n), -1000.0, np.float32)
    body = _ellipse(n, n * 0.5, n * 0.5, n * 0.32, n * 0.44)
    hu[body] = 40
    if lungs:
        hu[_ellipse(n, n * 0.47, n * 0.31, n * 0.22, n * 0.14)] = -850
        hu[_ellipse(n, n * 0.47, n * 0.69, n * 0.22, n * 0.14)] = -850
        hu[_ellipse(n, n * 0.42, n * 0.30, n * 0.03, n * 0.03)] = 30  # nodule
    hu[_ellipse(n, n * 0.72, n * 0.5, n * 0.05, n * 0.05)] = 700  # vertebra
    hu[int(n * 0.86):int(n * 0.88), int(n * 0.1):int(n * 0.9)] = 300  # table
    return hu + rng.normal(0, 15, hu.shape).astype(np.float32)


RENDERINGS = {"lung window": (1500, -600), "narrow window": (350, 40),
              "wide window": (2000, -500)}


@pytest.mark.parametrize("window", sorted(RENDERINGS))
def test_lungs_found_in_any_window(window):
    gray = hu_window(chest_hu(), *RENDERINGS[window])
    seg = segment(gray)
    assert seg.n_lungs == 2
    assert 0.2 < seg.lung_fraction < 0.6
    assert seg.has_lungs
    # the crop holds both lungs (x 0.17-0.83 of the side) with a margin, not the table
    y0, x0, y1, x1 = seg.box
    assert x0 <= 256 * 0.16 and x1 >= 256 * 0.84
    assert y1 <= 256 * 0.86  # the table (y 0.86-0.88) lies below the crop
    assert y1 - y0 == pytest.approx(x1 - x0, abs=2)  # square


def test_a_slice_without_lung_has_none():
    for window in RENDERINGS.values():
        seg = segment(hu_window(chest_hu(lungs=False), *window))
        assert seg.lung_fraction < 0.03 and not seg.has_lungs


def test_view_is_alike_across_windows():
    """Standardisation puts the same tissue at the same grey level whatever the window."""
    views = {name: lung_view(hu_window(chest_hu(), *w), 128) for name, w in RENDERINGS.items()}
    ref = views["lung window"]
    for name, v in views.items():
        assert v.shape == (128, 128) and v.dtype == np.float32
        assert 0 <= v.min() and v.max() <= 1
        assert np.abs(v - ref).mean() < 0.08, name
    # without the standardisation the raw renderings differ far more
    raw = {n: crop_box(hu_window(chest_hu(), *w), segment(hu_window(chest_hu(), *w)).box, 128)
           for n, w in RENDERINGS.items()}
    assert np.abs(raw["narrow window"] - raw["lung window"]).mean() > 0.2


def test_screenshot_borders_and_jpeg_do_not_move_the_lungs():
    gray = hu_window(chest_hu(), *RENDERINGS["lung window"])
    plain = segment(gray)
    framed = border(jpeg(gray, 70), 30, 0.5)
    seg = segment(framed)
    assert seg.n_lungs == 2
    assert seg.lung_fraction == pytest.approx(plain.lung_fraction, abs=0.05)
    assert seg.box[0] == pytest.approx(plain.box[0] + 30, abs=6)
    assert trim_frame(framed) == (30, 30, 286, 286)


def test_standardise_maps_the_anchors():
    g = np.array([[0.2, 0.6], [0.0, 1.0]], np.float32)
    out = standardise(g, 0.2, 0.6)
    assert out[0, 0] == pytest.approx(LUNG_LEVEL) and out[0, 1] == pytest.approx(TISSUE_LEVEL)
    assert out.min() >= 0 and out.max() <= 1


def test_mask_matches_the_input_shape():
    gray = hu_window(chest_hu(300), *RENDERINGS["lung window"])[:, 20:]
    seg = segment(gray)
    for which in ("lungs", "body"):
        m = seg.mask(which)
        assert m.shape == gray.shape and m.dtype == bool
    assert seg.mask("lungs").sum() < seg.mask("body").sum()


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_have_lungs(path):
    seg = segment(load_image(path))
    assert seg.has_lungs


def test_model_view_dispatch():
    gray = hu_window(chest_hu(), *RENDERINGS["lung window"])
    assert model_view(gray, 64, "full").shape == (64, 64)
    assert model_view(gray, 64, "lungs").shape == (64, 64)
    with pytest.raises(ValueError, match="unknown model view"):
        model_view(gray, 64, "sideways")


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((10, 10, 3)),
                                 np.array([[np.nan] * 10] * 10)])
def test_bad_arrays_are_refused(bad):
    with pytest.raises(ValueError):
        segment(bad)


def test_blank_and_noise_do_not_crash():
    for g in (np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32),
              np.random.default_rng(0).random((64, 64)).astype(np.float32)):
        seg = segment(g)
        assert lung_view(g, 32, seg).shape == (32, 32)


def lung_base_hu(n: int = 256, fat_ring: bool = True) -> np.ndarray:
    """A slice through the lung bases: liver and spleen fill the body, the lungs are two
    thin crescents behind them (posterior costophrenic recesses); a thin ring of
    subcutaneous fat follows the body wall."""
    rng = np.random.default_rng(3)
    hu = np.full((n, n), -1000.0, np.float32)
    body = _ellipse(n, n * 0.5, n * 0.5, n * 0.32, n * 0.44)
    hu[body] = 50
    if fat_ring:
        hu[body & ~_ellipse(n, n * 0.5, n * 0.5, n * 0.30, n * 0.42)] = -100
    for cx in (0.32, 0.68):
        outer = _ellipse(n, n * 0.5, n * cx, n * 0.27, n * 0.13)
        inner = _ellipse(n, n * 0.455, n * cx, n * 0.27, n * 0.13)
        hu[outer & ~inner & (np.mgrid[:n, :n][0] > n * 0.5)] = -850
    hu[_ellipse(n, n * 0.72, n * 0.5, n * 0.05, n * 0.05)] = 700  # vertebra
    return hu + rng.normal(0, 15, hu.shape).astype(np.float32)


def test_thin_lung_bases_count_in_a_lung_window_and_fat_never_does():
    """A lung window shows fat far brighter than lung, so thin dark crescents there are lung
    bases; a soft-tissue window shows fat dark too, so thin dark rings are dropped there."""
    lung_window = segment(hu_window(lung_base_hu(), *RENDERINGS["lung window"]))
    assert lung_window.n_lungs == 2 and lung_window.lung_fraction > 0.02
    # a soft-tissue window: the fat ring is not lung (nor, there, are the thin crescents)
    assert segment(hu_window(lung_base_hu(), *RENDERINGS["narrow window"])).lung_fraction == 0
    assert not segment(hu_window(chest_hu(lungs=False), *RENDERINGS["lung window"])).has_lungs


def small_crescents_hu(n: int = 256) -> np.ndarray:
    """The lowest slice that still shows lung: each crescent well under 1% of the body."""
    hu = lung_base_hu(n, fat_ring=False)
    lung = (hu > -950) & (hu < -500)
    hu[lung & (np.mgrid[:n, :n][0] < n * 0.725)] = 50  # keep the deepest part only
    return hu


def test_the_smallest_lung_base_crescents_count_in_a_lung_window():
    """A lung window tells gas and open air from lung by level and enclosure, so crescents
    below ``MIN_LUNG_PART`` of the body count there (they are lung: a finding behind the
    diaphragm must not be turned away as "outside the lungs")."""
    from lungct.lungs import MIN_CRESCENT_PART, MIN_LUNG_PART
    seg = segment(hu_window(small_crescents_hu(), *RENDERINGS["lung window"]))
    assert seg.n_lungs == 2
    assert 2 * MIN_CRESCENT_PART < seg.lung_fraction < 2 * MIN_LUNG_PART


def open_pocket_hu(n: int = 256, channel: bool = True) -> np.ndarray:
    """A slice without lung that has a pocket of air a little greyer than the air around the
    patient (-880 HU against -1000: under a blanket, between an arm and the chest) joined
    to the outside by a narrow gap; the body's outline closes over the gap."""
    rng = np.random.default_rng(5)
    hu = np.full((n, n), -1000.0, np.float32)
    hu[_ellipse(n, n * 0.55, n * 0.5, n * 0.28, n * 0.44)] = 50
    hu[_ellipse(n, n * 0.4, n * 0.5, n * 0.08, n * 0.12)] = -880
    if channel:
        hu[int(n * 0.2):int(n * 0.4), int(n * 0.5) - 1:int(n * 0.5) + 2] = -880
    hu[_ellipse(n, n * 0.74, n * 0.5, n * 0.05, n * 0.05)] = 700  # vertebra
    hu[int(n * 0.02):int(n * 0.04), int(n * 0.02):int(n * 0.12)] = 300  # a label: no frame to trim
    return hu + rng.normal(0, 15, hu.shape).astype(np.float32)


def test_a_pocket_open_to_the_outside_air_is_not_lung():
    assert segment(hu_window(open_pocket_hu(), *RENDERINGS["lung window"])).lung_fraction == 0
    # walled in by tissue, the same pocket is a lung field
    closed = segment(hu_window(open_pocket_hu(channel=False), *RENDERINGS["lung window"]))
    assert closed.lung_fraction > 0.03


def test_hull_is_skimage_convex_hull_pixel_for_pixel():
    """The row-by-row hull fill is a speed-up only: the same pixels as skimage's
    ``convex_hull_image`` on blobs, thin lines, single pixels and empty masks."""
    from scipy import ndimage as ndi
    from skimage.morphology import convex_hull_image

    from lungct.lungs import _hull
    rng = np.random.default_rng(0)
    masks = [ndi.gaussian_filter(rng.random((64, 80)), 3) > t for t in (0.5, 0.52, 0.55)]
    masks += [rng.random((40, 40)) > 0.995, np.zeros((20, 30), bool), np.eye(16, dtype=bool)]
    line = np.zeros((20, 20), bool)
    line[5, 3:15] = True
    one = np.zeros((9, 9), bool)
    one[4, 4] = True
    for m in masks + [line, one]:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns on a hull without area
            expected = convex_hull_image(m) if m.any() else m
        np.testing.assert_array_equal(_hull(m), expected)
