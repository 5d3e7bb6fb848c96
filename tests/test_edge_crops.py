"""Lungs that run into the image edge (screenshots cropped into the body, as teaching files
and web pages show them) are lungs; outside air at the edge is not; a colour photo is not a
CT slice (issue 24, item 3)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from test_guard_window import _dicom
from test_lungs import RENDERINGS, _ellipse, chest_hu, open_pocket_hu

from lungct.config import REPO_ROOT
from lungct.guard import NOT_CT, InputGuard
from lungct.preprocess import hu_window
from lungct.guard.verdict import colour_photo
from lungct.lungs import segment
from lungct.preprocess import decode_image, load_image
from lungct.lab.safety_report import CROP_SIDES, crop_figures, crop_into_body

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))
SIDES = ("left", "right", "top", "bottom")
DEPTHS = (10, 30, 50)


@pytest.fixture(scope="module")
def guard():
    return InputGuard.load()  # shipped in git: models/ood_guard


def _crops(gray: np.ndarray, box=None, depths=DEPTHS, sides=SIDES):
    box = box or segment(gray).body_box
    return [(f"{d}px {s}", crop_into_body(gray, box, s, d)) for d in depths for s in sides]


def test_crop_into_body_cuts_where_it_says():
    g = np.arange(100 * 80, dtype=np.float32).reshape(100, 80) / 8000
    box = (10, 5, 90, 75)
    assert crop_into_body(g, box, "left", 10).shape == (100, 65)
    assert crop_into_body(g, box, "right", 10).shape == (100, 65)
    assert crop_into_body(g, box, "top", 10).shape == (80, 80)
    assert crop_into_body(g, box, "bottom", 10).shape == (80, 80)
    assert crop_into_body(g, box, "all", 10).shape == (60, 50)
    assert crop_into_body(g, box, "left", 10)[0, 0] == g[0, 15]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_samples_cut_into_the_body_are_accepted(guard, path):
    crops = _crops(load_image(path))
    verdicts = guard.check_many([c for _, c in crops])
    assert [(k, v.reason) for (k, _), v in zip(crops, verdicts) if not v.accepted] == []


def test_a_dicom_cut_into_the_body_keeps_its_lungs(guard):
    """A synthesized CT DICOM (lung window, as users load it), cut on every side: the lungs
    run into the edge and are still lung fields."""
    hu = chest_hu(512)
    gray = decode_image(_dicom(hu), name="x.dcm")
    ys, xs = np.nonzero(hu > -400)
    box = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
    whole = segment(gray).lung_fraction
    for key, crop in _crops(gray, box):
        seg = segment(crop)
        assert seg.n_lungs == 2 and seg.lung_fraction > 0.6 * whole, key
    # the guard's anatomy rule on the same crops (its learned score knows real CT, not this
    # phantom: the samples above test the whole guard)
    assert all(segment(c).lung_fraction >= guard.min_lung for _, c in _crops(gray, box))


def test_the_lungs_reach_the_cut_edge():
    """The crops do test what they say: the lung fields touch the edge after the cut."""
    gray = hu_window(chest_hu(256), *RENDERINGS["lung window"])
    seg = segment(crop_into_body(gray, segment(gray).body_box, "left", 50))
    assert seg.lungs[:, :4].any() and seg.n_lungs == 2


@pytest.mark.parametrize("window", sorted(RENDERINGS))
def test_outside_air_at_the_edge_is_never_lung(window):
    """A slice without lung cut on each side: the air above and beside the body reaches the
    edge outside the body, and is not lung."""
    gray = hu_window(chest_hu(256, lungs=False), *RENDERINGS[window])
    for key, crop in _crops(gray):
        assert segment(crop).lung_fraction == 0, key


@pytest.mark.parametrize("window", ["lung window", "wide window"])
def test_a_pocket_open_to_the_outside_air_stays_open_when_cut(window):
    """The pocket joined to the outside air by a gap above the body, cut on the sides where
    the gap stays in the picture. (A cut through the gap itself leaves a dark pocket that
    runs into the cut inside the body: in the picture that is a lung running into it.)"""
    gray = hu_window(open_pocket_hu(), *RENDERINGS[window])
    for key, crop in _crops(gray, sides=("left", "right", "bottom")):
        assert segment(crop).lung_fraction == 0, key


def test_gas_at_the_level_of_air_on_a_cut_edge_is_not_lung():
    """Bowel gas (-1000 HU) inside the body where the picture cuts through it: as dark as
    air, so not lung, in a window that shows air grey."""
    n = 256
    hu = chest_hu(n, lungs=False)
    hu[_ellipse(n, n * 0.5, n * 0.2, n * 0.1, n * 0.1)] = -1000
    gray = hu_window(hu, *RENDERINGS["lung window"])
    for depth in DEPTHS:
        crop = crop_into_body(gray, segment(gray).body_box, "left", depth)
        assert segment(crop).lung_fraction == 0, depth


def test_crop_figures_count_every_crop(guard):
    grays = [load_image(p) for p in SAMPLES[:2]]
    fig = crop_figures(guard, [(g, None) for g in grays], depths=(20,), sides=CROP_SIDES)
    assert fig["plain"] == [2, 2]
    assert set(fig["crops"]) == {f"20px {s}" for s in CROP_SIDES}
    assert all(n == 2 for _, n in fig["crops"].values())


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def colour_picture(n: int = 384, seed: int = 0) -> np.ndarray:
    """A synthetic photo: smooth coloured fields (sky, grass, a red object) and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] / n
    rgb = np.stack([0.3 + 0.2 * x, 0.5 + 0.3 * y, 0.9 - 0.5 * y], -1)
    rgb[y > 0.6] = (0.25, 0.6, 0.2)
    rgb[_ellipse(n, n * 0.45, n * 0.5, n * 0.15, n * 0.2)] = (0.85, 0.15, 0.1)
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    return (rgb * 255).astype(np.uint8)


@pytest.mark.parametrize("encode", [_png, _jpeg], ids=["png", "jpeg"])
def test_a_colour_photo_is_not_a_ct_slice(guard, encode):
    data = encode(colour_picture())
    assert colour_photo(data)
    v = guard.check_upload(data, decode_image(data))
    assert v.status == NOT_CT and "colour" in v.reason


@pytest.mark.parametrize("encode", [_png, _jpeg], ids=["png", "jpeg"])
def test_a_grey_slice_in_a_colour_file_is_not_a_photo(guard, encode):
    """Screenshots store grey CT in RGB; a few coloured marks (a viewer's text) do not
    make it a photo."""
    gray = (load_image(SAMPLES[0]) * 255).astype(np.uint8)
    rgb = np.stack([gray] * 3, -1)
    rgb[10:20, 10:120] = (255, 200, 0)  # a coloured label
    data = encode(rgb)
    assert not colour_photo(data)
    assert guard.check_upload(data, decode_image(data)).accepted
    # grey files never reach a pixel decode here
    assert not colour_photo(SAMPLES[0].read_bytes())


def test_a_colour_photo_is_refused_by_every_route_not_only_the_bytes_check():
    """The case pipeline (app, predict, case) refuses a colour photo as not a CT slice."""
    import io

    import numpy as np
    from PIL import Image

    from lungct.guard import load_guard
    from lungct.pipeline import ClassifierBase, run_case

    rng = np.random.default_rng(1)
    photo = np.zeros((256, 256, 3), np.uint8)
    photo[..., 0] = 180
    photo[..., 1] = np.linspace(40, 220, 256)[None, :]
    photo[..., 2] = rng.integers(0, 255, (256, 256))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")

    class Fixed(ClassifierBase):
        unsure_below, name = 0.6, "fixed"

        def prepare(self, gray, seg=None):
            return np.zeros(1, np.float32)

        def predict_prepared(self, arrays):
            raise AssertionError("a refused slice must not be classified")

    s = run_case([("photo.png", buf.getvalue())], Fixed(), guard=load_guard()).slices[0]
    assert s.status == "refused" and "colour picture" in s.error
