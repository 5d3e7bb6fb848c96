"""Synthetic masses for training: painted inside the lung fields, relabelled, never elsewhere."""

import numpy as np
import pytest

from lungct import CLASSES
from lungct.training.lesions import LesionPainter, paint_mass

MAL, NORMAL = CLASSES.index("malignant"), CLASSES.index("normal")


def _chest(side=128):
    """A body disc (soft-tissue grey with speckle) holding two dark lung fields."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    body = (yy - side / 2) ** 2 / (0.42 * side) ** 2 + (xx - side / 2) ** 2 / (0.46 * side) ** 2 < 1
    lungs = np.zeros_like(body)
    for cx in (0.3 * side, 0.7 * side):
        lungs |= (yy - side / 2) ** 2 / (0.28 * side) ** 2 + (xx - cx) ** 2 / (0.14 * side) ** 2 < 1
    g = np.where(body, 0.65 + 0.05 * rng.standard_normal((side, side)), 0.0)
    g = np.where(lungs, 0.12, g)
    return np.clip(g * 255, 0, 255).astype(np.uint8), lungs, body


def test_mass_lands_in_the_lungs_in_tissue_grey():
    img, lungs, body = _chest()
    out = paint_mass(img, lungs, np.random.default_rng(1), diameter=(0.15, 0.2), spicule_p=0)
    changed = np.abs(out.astype(int) - img.astype(int)) > 20
    assert changed.sum() > 50
    assert not (changed & ~body).any()                 # never in the air around the body
    ys, xs = np.nonzero(changed)
    assert lungs[int(np.median(ys)), int(np.median(xs))]   # centred in a lung field
    core = np.abs(out.astype(int) - img.astype(int)) > 50    # inside the soft edge
    assert abs(np.median(out[core]) / 255 - 0.65) < 0.12   # the slice's soft-tissue grey


def test_painter_relabels_only_its_sources():
    img, lungs, _ = _chest()
    painter = LesionPainter(lungs[None], sources=(NORMAL,), target=MAL, p=1.0)
    out, label, where = painter(img, 0, NORMAL, rng=np.random.default_rng(2))
    assert label == MAL and (out != img).any()
    changed = np.abs(out.astype(int) - img.astype(int)) > 20
    assert where.sum() > 50 and changed[where].mean() > 0.75  # the mask is the mass (some
    assert changed[~where].sum() < 0.3 * where.sum()         # of it may lie on tissue)
    assert (where & lungs).sum() > 0.5 * where.sum()
    out, label, where = painter(img, 0, MAL, rng=np.random.default_rng(2))
    assert label == MAL and (out == img).all() and where is None  # malignant left alone
    never = LesionPainter(lungs[None], sources=(NORMAL,), target=MAL, p=0.0)
    out, label, where = never(img, 0, NORMAL)
    assert label == NORMAL and (out == img).all() and where is None


def test_no_lung_field_no_paint():
    img, lungs, _ = _chest()
    painter = LesionPainter(np.zeros_like(lungs)[None], sources=(NORMAL,), target=MAL, p=1.0)
    out, label, where = painter(img, 0, NORMAL)
    assert label == NORMAL and (out == img).all() and where is None
    assert paint_mass(img, np.zeros_like(lungs), np.random.default_rng(0)) is None
    assert paint_mass(img, lungs, np.random.default_rng(0), body=~lungs) is None


def test_bad_diameter_is_a_clear_error():
    with pytest.raises(ValueError, match="diameter"):
        LesionPainter(np.zeros((1, 8, 8), bool), sources=(NORMAL,), target=MAL, diameter=(0.3, 0.1))
