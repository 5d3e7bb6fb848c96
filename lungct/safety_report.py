"""Clinical-safety figures in one command: ``python -m lungct.safety_report``.

Prints and writes ``reports/safety.json``:

1. the OOD guard's false rejection on the grouped **test** split (real lung
   CT slices it never saw, neither in fitting nor in choosing the threshold);
2. its rejection rate on a non-CT set, per category (scikit-image sample
   photos and scans, noise, blank, gradients, checkerboards, rendered
   documents, procedural chest-X-ray, brain-CT and abdominal-CT phantoms);
3. its pass rate on "other source" lung CTs: the test slices re-windowed,
   cropped, resized, saved as 8-bit screenshots with a border, plus pydicom's
   real CT_small.dcm;
4. ECE before/after temperature calibration of every shipped model (from
   the cards' ``calibration`` section, written by ``python -m lungct evaluate``);
5. memory (RSS) over 200 consecutive classifications + Grad-CAM heatmaps with
   the default model.

The image generators here are also the test suite's source of non-CT images.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WINDOWS_HU = {"lung": (1500.0, -600.0), "mediastinal": (350.0, 50.0), "brain": (80.0, 40.0),
              "bone": (2000.0, 500.0), "abdomen": (400.0, 40.0),
              "dataset_like": (900.0, 450.0)}
"""(width, level) in HU; ``dataset_like`` roughly imitates the training slices' display."""


def hu_window(hu: np.ndarray, name: str) -> np.ndarray:
    width, level = WINDOWS_HU[name]
    return np.clip((hu - (level - width / 2)) / width, 0, 1).astype(np.float32)


def _grid(n: int):
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    return (xx - n / 2) / (n / 2), (yy - n / 2) / (n / 2)  # in [-1, 1]


def _ellipse(x, y, cx, cy, a, b, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _smooth_noise(rng, n, sigma):
    from scipy import ndimage as ndi
    z = ndi.gaussian_filter(rng.normal(0, 1, (n, n)), sigma)
    return z / (z.std() + 1e-9)


# --------------------------------------------------------------- phantoms

def brain_ct_phantom(seed: int = 0, n: int = 512) -> np.ndarray:
    """Axial head CT in HU: skull ring, uniform brain, ventricles, air around."""
    rng = np.random.default_rng(seed)
    x, y = _grid(n)
    a, b = rng.uniform(0.62, 0.72), rng.uniform(0.78, 0.88)
    ang = rng.uniform(-0.15, 0.15)
    t = rng.uniform(0.05, 0.08)
    hu = np.full((n, n), -1000.0, np.float32)
    head = _ellipse(x, y, 0, 0, a + t * 0.4, b + t * 0.4, ang)
    inner = _ellipse(x, y, 0, 0, a - t * 0.6, b - t * 0.6, ang)
    hu[head] = 60  # scalp
    hu[_ellipse(x, y, 0, 0, a, b, ang) & ~inner] = rng.uniform(900, 1600)  # skull
    hu[inner] = 32 + 4 * _smooth_noise(rng, n, 6)[inner]
    for side in (-1, 1):  # lateral ventricles
        hu[_ellipse(x, y, side * 0.12, -0.05, 0.07, 0.25, side * 0.3)] = 5
    hu[_ellipse(x, y, 0, 0.45, 0.25, 0.12)] = 36  # cerebellum
    hu += rng.normal(0, 6, hu.shape)
    return hu


def abdomen_ct_phantom(seed: int = 0, n: int = 512) -> np.ndarray:
    """Axial abdominal CT in HU: large soft-tissue body, fat, liver, kidneys, spine, no lungs."""
    rng = np.random.default_rng(seed)
    x, y = _grid(n)
    a, b = rng.uniform(0.8, 0.92), rng.uniform(0.55, 0.7)
    hu = np.full((n, n), -1000.0, np.float32)
    body = _ellipse(x, y, 0, 0.05, a, b)
    hu[body] = -100  # subcutaneous fat
    hu[_ellipse(x, y, 0, 0.05, a - 0.08, b - 0.08)] = 40  # muscle/viscera
    hu[_ellipse(x, y, -0.35, -0.05, 0.38, 0.35)] = 60  # liver
    hu[_ellipse(x, y, 0.4, 0.0, 0.2, 0.18)] = 45  # spleen
    for side in (-1, 1):
        hu[_ellipse(x, y, side * 0.3, 0.3, 0.1, 0.14)] = 150  # enhancing kidneys
    hu[_ellipse(x, y, 0.05, 0.05, 0.05, 0.05)] = 180  # aorta
    hu[_ellipse(x, y, 0, 0.5, 0.1, 0.09)] = 700  # vertebral body
    hu[_ellipse(x, y, 0, 0.63, 0.04, 0.06)] = 700  # spinous process
    for _ in range(int(rng.integers(3, 8))):  # bowel gas
        cx, cy = rng.uniform(-0.3, 0.4), rng.uniform(-0.35, 0.25)
        hu[_ellipse(x, y, cx, cy, rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.05))] = -950
    hu[(y > 0.85) & (y < 0.9) & (np.abs(x) < 0.95)] = 200  # table
    hu += rng.normal(0, 12, hu.shape)
    return hu


def chest_xray_phantom(seed: int = 0, n: int = 512) -> np.ndarray:
    """A frontal chest radiograph-like projection in [0, 1]: dark lungs, bright ribs/spine."""
    from scipy import ndimage as ndi
    rng = np.random.default_rng(seed)
    x, y = _grid(n)
    img = np.full((n, n), rng.uniform(0.0, 0.1), np.float32)
    torso = (np.abs(x) < 0.85 - 0.25 * np.clip(-y - 0.6, 0, 1)) & (y > -0.9)
    img[torso] = 0.6
    lungs = np.zeros_like(torso)
    for side in (-1, 1):
        lungs |= _ellipse(x, y, side * 0.38, -0.05, 0.27, 0.62)
    img[lungs] = 0.22
    img[_ellipse(x, y, 0.12, 0.25, 0.3, 0.28)] = 0.62  # heart shadow
    img[(np.abs(x) < 0.08) & torso] = 0.8  # spine / mediastinum
    img[y > 0.55 + 0.05 * np.cos(3 * x)] = 0.65  # diaphragm/abdomen
    ribs = np.zeros_like(img)
    for k in range(10):  # rib arcs
        yk = -0.7 + k * 0.15
        arc = yk + 0.25 * (np.abs(x) - 0.4) ** 2
        ribs += np.exp(-((y - arc) / 0.018) ** 2) * (np.abs(x) > 0.08) * (np.abs(x) < 0.75)
    for side in (-1, 1):  # clavicles
        ribs += (np.exp(-((y + 0.72 - 0.2 * side * x) / 0.02) ** 2)
                 * (side * x > 0.05) * (side * x < 0.6))
    img = img + 0.25 * np.clip(ribs, 0, 1) * torso
    img = ndi.gaussian_filter(img, rng.uniform(2, 4)) + 0.02 * _smooth_noise(rng, n, 2)
    if rng.random() < 0.3:
        img = 1 - img  # some viewers display radiographs inverted
    return np.clip(img, 0, 1).astype(np.float32)


def document(seed: int = 0, w: int = 600, h: int = 800) -> np.ndarray:
    """A rendered text page (report, letter, table) in [0, 1]."""
    rng = np.random.default_rng(seed)
    words = ("patient report findings impression lung nodule left right lobe ct scan "
             "normal benign malignant follow up months recommended clinical history "
             "lorem ipsum dolor sit amet consectetur adipiscing elit sed do").split()
    img = Image.new("L", (w, h), int(rng.integers(225, 256)))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(12, 26))
    font = ImageFont.load_default(size=size)
    yy = int(rng.integers(20, 60))
    draw.text((40, yy), "RADIOLOGY REPORT", fill=0, font=ImageFont.load_default(size=size + 8))
    yy += size + 30
    while yy < h - 40:
        line = " ".join(rng.choice(words, int(rng.integers(4, 10))))
        draw.text((40, yy), line, fill=int(rng.integers(0, 60)), font=font)
        yy += int(size * rng.uniform(1.3, 1.8))
        if rng.random() < 0.08:
            draw.rectangle((40, yy, w - 40, yy + 3 * size), outline=0)
            yy += 4 * size
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if rng.random() < 0.4:  # scanned: grey cast, noise, slight rotation
        arr = 0.85 * arr + 0.05 + rng.normal(0, 0.03, arr.shape).astype(np.float32)
        arr = np.asarray(Image.fromarray(np.clip(arr, 0, 1)).rotate(rng.uniform(-3, 3),
                                                                       fillcolor=0.9))
    return np.clip(arr, 0, 1).astype(np.float32)


def _skimage_images() -> list[tuple[str, np.ndarray]]:
    try:
        import skimage.data as skd
    except ImportError:
        return []
    names = ("astronaut", "camera", "coffee", "chelsea", "rocket", "text", "page", "moon",
             "coins", "horse", "brick", "cat", "cell", "clock", "grass", "gravel",
             "hubble_deep_field", "immunohistochemistry", "logo", "retina", "colorwheel",
             "microaneurysms", "binary_blobs", "checkerboard", "shepp_logan_phantom")
    # "brain" (an MRI) needs an optional download (pooch): not available offline
    out = []
    for name in names:
        try:
            img = getattr(skd, name)()
        except Exception:  # a sample that needs a download: skip it offline
            continue
        img = np.asarray(img, dtype=np.float64)
        if img.ndim == 3:
            img = (img[..., :3] @ np.array([0.299, 0.587, 0.114]) if img.shape[-1] >= 3
                   else img[..., 0])
        img = (img - img.min()) / max(img.max() - img.min(), 1e-9)
        out.append((name, img.astype(np.float32)))
    return out


def non_ct_set(seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(category, name, gray) of inputs the guard must reject."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, np.ndarray]] = []
    for name, img in _skimage_images():
        category = "skimage_document" if name in ("text", "page") else (
            "skimage_medical" if name in ("shepp_logan_phantom", "brain", "retina", "cell",
                                          "microaneurysms", "immunohistochemistry")
            else "skimage_photo")
        out.append((category, name, img))
    n = 384
    for i in range(6):
        out.append(("noise", f"uniform_{i}", rng.random((n, n)).astype(np.float32)))
        out.append(("noise", f"gaussian_{i}", np.clip(rng.normal(0.5, 0.2, (n, n)), 0, 1)))
        out.append(("noise", f"smooth_{i}", np.clip(0.5 + 0.2 * _smooth_noise(rng, n, 2 + 3 * i),
                                                    0, 1)))
        sp = np.zeros((n, n), np.float32)
        sp[rng.random((n, n)) < 0.05 * (i + 1)] = 1.0
        out.append(("noise", f"salt_{i}", sp))
    for v in (0.0, 0.02, 0.5, 1.0):
        out.append(("blank", f"uniform_{v}", np.full((n, n), v, np.float32)))
    out.append(("blank", "near_black_noise", np.clip(rng.normal(0.01, 0.005, (n, n)), 0, 1)))
    out.append(("blank", "dark_frame", np.pad(np.full((n - 40, n - 40), 0.03, np.float32), 20,
                                              constant_values=0.5)))
    x, y = _grid(n)
    out += [("gradient", "horizontal", (x + 1) / 2), ("gradient", "vertical", (y + 1) / 2),
            ("gradient", "diagonal", (x + y + 2) / 4),
            ("gradient", "radial", np.clip(1 - np.hypot(x, y) / 1.4, 0, 1)),
            ("gradient", "radial_dark_centre", np.clip(np.hypot(x, y) / 1.4, 0, 1)),
            ("gradient", "vignette_disc", np.clip(1.2 - np.hypot(x, y) ** 2, 0, 1))]
    for k in (2, 4, 8, 16, 32, 64):
        yy, xx = np.mgrid[0:n, 0:n]
        out.append(("checkerboard", f"squares_{k}", ((xx // (n // k)) + (yy // (n // k))) % 2))
    out.append(("checkerboard", "stripes", ((np.mgrid[0:n, 0:n][1] // 16) % 2).astype(np.float32)))
    for i in range(8):
        out.append(("document", f"page_{i}", document(seed * 100 + i)))
    for i in range(8):
        out.append(("chest_xray_phantom", f"cxr_{i}", chest_xray_phantom(seed * 100 + i)))
    for i, win in enumerate(("brain", "bone", "lung", "dataset_like", "brain", "mediastinal")):
        out.append(("brain_ct_phantom", f"brain_{i}_{win}",
                    hu_window(brain_ct_phantom(seed * 100 + i), win)))
    for i, win in enumerate(("abdomen", "lung", "dataset_like", "mediastinal", "abdomen", "bone")):
        out.append(("abdomen_ct_phantom", f"abdomen_{i}_{win}",
                    hu_window(abdomen_ct_phantom(seed * 100 + i), win)))
    return [(c, nm, np.clip(np.asarray(g, np.float32), 0, 1)) for c, nm, g in out]


# ------------------------------------------------------ other-source lung CTs

def screenshot(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit PNG screenshot of a viewer: grey frame, a title bar, slight rescale."""
    from lungct.ood import border, resample
    g = resample(gray, int(rng.choice([400, 512, 600])))
    g = border(g, int(rng.integers(8, 40)), float(rng.choice([0.12, 0.2, 0.94])))
    g[: max(6, g.shape[0] // 25)] = float(rng.uniform(0.3, 0.9))  # title bar
    buf = io.BytesIO()
    Image.fromarray(np.round(g * 255).astype(np.uint8)).save(buf, "PNG")
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


OTHER_SOURCE_KINDS = ("gamma", "contrast", "crop", "resize_256", "resize_768", "screenshot",
                      "jpeg_q40", "lung_window_imitation", "mediastinal_window_imitation")


def other_source_variants(gray: np.ndarray, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """One rendering of a lung CT slice per kind in ``OTHER_SOURCE_KINDS``."""
    from lungct.ood import crop, jpeg, resample, retissue, window
    rng = np.random.default_rng(seed)
    return [
        ("gamma", window(gray, 0, 1, float(rng.choice([0.5, 0.7, 1.5, 2.0])))),
        ("contrast", window(gray, rng.uniform(0, 0.1), rng.uniform(0.6, 0.9))),
        ("crop", crop(gray, rng.uniform(0.8, 0.95), rng.random(), rng.random())),
        ("resize_256", resample(gray, 256)),
        ("resize_768", resample(gray, 768)),
        ("screenshot", screenshot(gray, rng)),
        ("jpeg_q40", jpeg(gray, 40)),
        ("lung_window_imitation", retissue(gray, rng.uniform(0.75, 0.9), rng.uniform(0.2, 0.35),
                                           seed=seed)),
        ("mediastinal_window_imitation", retissue(gray, rng.uniform(0.4, 0.6), 0.0, seed=seed)),
    ]


def ct_small() -> list[tuple[str, np.ndarray]]:
    """pydicom's CT_small.dcm (a real 128x128 CT crop: spine, aorta, lung edges) in each window."""
    try:
        from pydicom.data import get_testdata_file
        path = get_testdata_file("CT_small.dcm")
    except Exception:
        return []
    if not path:
        return []
    from lungct.preprocess import load_image
    return [(f"CT_small.dcm ({w} window)", load_image(path, window=w))
            for w in ("lung", "mediastinal", "file")]


# ------------------------------------------------------------------ figures

def rss_mb() -> float:
    """Resident set size of this process in MB (psutil if installed, else /proc)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        pass
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, Linux kB


def _rate(flags) -> float | None:
    flags = list(flags)
    return round(float(np.mean(flags)), 4) if flags else None


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion k/n (sensible at 0/n and n/n)."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _ci(flags) -> str:
    flags = list(flags)
    lo, hi = wilson(sum(flags), len(flags)) or (math.nan, math.nan)
    return f"95% CI {100 * lo:.1f}-{100 * hi:.1f}%"


def guard_figures(guard, cfg: dict, every: int = 1, log=print) -> dict:
    """False rejection on grouped test, non-CT rejection, other-source pass rate."""
    from lungct.config import resolve
    from lungct.data.splits import read_manifest
    from lungct.preprocess import load_image

    root = resolve(cfg["data"]["root"])
    rows = [r for r in read_manifest(resolve(cfg["data"]["manifest"]))
            if r["grouped_split"] == "test"]
    t0 = time.time()
    grays = [load_image(root / r["path"]) for r in rows]
    verdicts = guard.check_many(grays)
    rejected = [r["path"] for r, v in zip(rows, verdicts) if not v.in_distribution]
    out: dict = {"threshold": guard.threshold, "guard_card": {
        k: guard.card.get(k) for k in ("method", "fit", "threshold_selection")}}
    out["test_false_rejection"] = {
        "split": "grouped test", "n": len(rows), "rejected": len(rejected),
        "rate": _rate(not v.in_distribution for v in verdicts),
        "ci95": wilson(len(rejected), len(rows)), "rejected_files": rejected,
        "max_score": round(max(v.score for v in verdicts), 4)}
    per_slice_ms = 1000 * (time.time() - t0) / max(len(rows), 1)
    log(f"grouped test: {len(rejected)}/{len(rows)} lung CT slices rejected "
        f"({100 * out['test_false_rejection']['rate']:.1f}%, "
        f"{_ci(not v.in_distribution for v in verdicts)})")

    non = non_ct_set()
    nv = guard.check_many([g for _, _, g in non])
    cats: dict[str, list] = {}
    for (cat, name, _), v in zip(non, nv):
        cats.setdefault(cat, []).append((name, v))
    out["non_ct_rejection"] = {
        "n": len(non), "rate": _rate(not v.in_distribution for v in nv),
        "ci95": wilson(sum(not v.in_distribution for v in nv), len(nv)),
        "per_category": {c: {"n": len(items),
                             "rate": _rate(not v.in_distribution for _, v in items),
                             "accepted": [n for n, v in items if v.in_distribution]}
                         for c, items in cats.items()},
        "min_score_over_threshold": round(min(v.score for v in nv) / guard.threshold, 3)}
    log(f"non-CT set: {sum(not v.in_distribution for v in nv)}/{len(non)} rejected "
        f"({100 * out['non_ct_rejection']['rate']:.1f}%, "
        f"{_ci(not v.in_distribution for v in nv)})")
    for c, d in out["non_ct_rejection"]["per_category"].items():
        extra = f"  accepted: {', '.join(d['accepted'])}" if d["accepted"] else ""
        log(f"  {c:22s} {100 * d['rate']:5.1f}% of {d['n']}{extra}")

    kinds: dict[str, list[bool]] = {}
    for i in range(0, len(grays), every):
        variants = other_source_variants(grays[i], seed=i)
        for (kind, _), v in zip(variants, guard.check_many([g for _, g in variants])):
            kinds.setdefault(kind, []).append(v.in_distribution)
    small = ct_small()
    small_v = guard.check_many([g for _, g in small]) if small else []
    all_flags = [f for fl in kinds.values() for f in fl]
    out["other_source_pass"] = {
        "source": f"grouped test slices (every {every}), each re-rendered per kind",
        "rate": _rate(all_flags), "n": len(all_flags), "ci95": wilson(sum(all_flags),
                                                                      len(all_flags)),
        "per_kind": {k: {"n": len(fl), "rate": _rate(fl)} for k, fl in kinds.items()},
        "ct_small_dcm": {name: v.as_dict() for (name, _), v in zip(small, small_v)}}
    log(f"other-source lung CTs: {100 * out['other_source_pass']['rate']:.1f}% of "
        f"{len(all_flags)} pass ({_ci(all_flags)})")
    for k, d in out["other_source_pass"]["per_kind"].items():
        log(f"  {k:30s} {100 * d['rate']:5.1f}% of {d['n']}")
    for (name, _), v in zip(small, small_v):
        log(f"  {name:30s} {'pass' if v.in_distribution else 'rejected'} "
            f"(score {v.score:.2f}, threshold {v.threshold:.2f})")
    out["guard_ms_per_slice"] = round(per_slice_ms, 1)
    return out


def calibration_figures(log=print) -> dict:
    """ECE before/after temperature scaling, from every shipped model's card."""
    from lungct.models import list_shipped
    from lungct.models.checkpoint import MODELS_DIR, read_card

    out = {}
    for name in list_shipped():
        card = read_card(MODELS_DIR / name)
        cal = card.get("calibration")
        if not cal:
            out[name] = None
            log(f"  {name:26s} not evaluated yet (python -m lungct evaluate --model {name})")
            continue
        out[name] = {"temperature": cal.get("temperature"), "ece_before": cal.get("ece_before"),
                     "ece_after": cal.get("ece_after"),
                     "evaluated_on": card.get("evaluated_on")}
        log(f"  {name:26s} T={cal.get('temperature'):.3f}  ECE {cal.get('ece_before'):.4f} -> "
            f"{cal.get('ece_after'):.4f}")
    return out


def memory_figures(cfg: dict, iterations: int = 200, guard=None, log=print) -> dict:
    """RSS over ``iterations`` consecutive classifications + Grad-CAM heatmaps (+ guard)."""
    import gc

    from lungct.config import REPO_ROOT
    from lungct.explain import explain
    from lungct.inference import Classifier
    from lungct.models import list_shipped, load_model
    from lungct.preprocess import decode_image

    name = cfg.get("app", {}).get("default_model", "student_kd")
    shipped = list_shipped()
    if name not in shipped:
        if not shipped:
            log("  no shipped model: memory test skipped")
            return {"skipped": "no shipped model"}
        log(f"  default model {name!r} not shipped yet: using {shipped[0]!r}")
        name = shipped[0]
    files = sorted((REPO_ROOT / "samples").glob("*.jpg"))
    blobs = [f.read_bytes() for f in files]
    clf = Classifier(load_model(name), cfg.get("app", {}).get("unsure_below", 0.6))
    gc.collect()
    start = rss_mb()
    trace, peak = [], start
    t0 = time.time()
    for i in range(iterations):
        data = blobs[i % len(blobs)]
        gray = decode_image(data)
        if guard is not None:
            guard.check(gray)
        clf.predict_gray(gray).as_dict()
        explain(clf.model, gray)
        rss = rss_mb()
        peak = max(peak, rss)
        trace.append(round(rss, 1))
    gc.collect()
    end = rss_mb()
    half = trace[len(trace) // 2:]
    out = {"model": name, "iterations": iterations, "with_guard": guard is not None,
           "rss_start_mb": round(start, 1), "rss_after_first_mb": trace[0] if trace else None,
           "rss_end_mb": round(end, 1), "rss_peak_mb": round(peak, 1),
           "growth_second_half_mb": round(half[-1] - half[0], 1) if half else None,
           "seconds_per_iteration": round((time.time() - t0) / iterations, 3),
           "rss_every_20": trace[::20],
           "rss_source": "psutil" if _has_psutil() else "/proc/self/status VmRSS"}
    log(f"  {name}: {iterations} x (decode + guard + classify + Grad-CAM): RSS start "
        f"{out['rss_start_mb']} MB, after the first {out['rss_after_first_mb']} MB, end "
        f"{out['rss_end_mb']} MB, peak {out['rss_peak_mb']} MB, growth over the second half "
        f"{out['growth_second_half_mb']} MB "
        f"({out['seconds_per_iteration']} s/iteration)")
    return out


def recompression_figures(cfg: dict, qualities=(95, 85, 75), every: int = 1, log=print) -> dict:
    """How the default model's answer moves when a test slice is re-saved as JPEG.

    Uploads are often re-compressed (messaging apps, PACS exports, screenshots);
    the guard passes them (they are lung CT slices), so the classifier must be
    stable under it. Per quality: label agreement with the original file, mean
    and max change of any class probability, malignant -> other flips.
    """
    from lungct.config import resolve
    from lungct.data.splits import read_manifest
    from lungct.inference import Classifier
    from lungct.models import list_shipped, load_model
    from lungct.preprocess import decode_image, load_image

    name = cfg.get("app", {}).get("default_model", "student_kd")
    shipped = list_shipped()
    if name not in shipped:
        if not shipped:
            return {"skipped": "no shipped model"}
        name = shipped[0]
    clf = Classifier(load_model(name), cfg.get("app", {}).get("unsure_below", 0.6))
    root = resolve(cfg["data"]["root"])
    rows = [r for r in read_manifest(resolve(cfg["data"]["manifest"]))
            if r["grouped_split"] == "test"][::every]
    grays = [load_image(root / r["path"]) for r in rows]
    base = np.array([[p.probabilities[c] for c in clf.classes] for p in clf.predict_many(grays)])
    out = {"model": name, "n": len(rows), "source": "grouped test slices re-saved as 8-bit JPEG",
           "per_quality": {}}
    mal = list(clf.classes).index("malignant") if "malignant" in clf.classes else None
    for q in qualities:
        probs = np.array([[p.probabilities[c] for c in clf.classes]
                          for p in clf.predict_many([decode_image(_jpeg_bytes(g, q))
                                                     for g in grays])])
        same = base.argmax(1) == probs.argmax(1)
        delta = np.abs(probs - base).max(1)
        flips = (int(((base.argmax(1) == mal) & (probs.argmax(1) != mal)).sum())
                 if mal is not None else None)
        out["per_quality"][str(q)] = {
            "label_agreement": _rate(same), "mean_max_abs_dp": round(float(delta.mean()), 4),
            "max_abs_dp": round(float(delta.max()), 4), "malignant_to_other": flips}
        log(f"  {name}: JPEG q{q}: same label {100 * float(same.mean()):.1f}% of {len(rows)}, "
            f"mean |dp| {delta.mean():.3f}, max |dp| {delta.max():.3f}, "
            f"malignant -> other: {flips}")
    return out


def _jpeg_bytes(gray: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8)).save(
        buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lungct.safety_report",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", help="params.yaml to read")
    parser.add_argument("--out", help="JSON path (default: reports/safety.json)")
    parser.add_argument("--every", type=int, default=1,
                        help="use every N-th test slice for the other-source set (default 1)")
    parser.add_argument("--iterations", type=int, default=200, help="memory test iterations")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)

    from lungct.config import load_config, resolve
    from lungct.ood import GuardLoadError, OODGuard

    cfg = load_config(args.params)
    report: dict = {"created": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        guard = OODGuard.load(cfg=cfg)
    except GuardLoadError as err:
        print(f"== OOD guard: {err} ==")
        guard = None
        report["guard"] = {"skipped": str(err)}
    if not args.skip_memory:  # first, so the figures are those of a fresh app-like process
        print(f"== memory over {args.iterations} classifications + heatmaps ==")
        report["memory"] = memory_figures(cfg, args.iterations, guard)
    if guard is not None:
        print(f"== OOD guard: threshold {guard.threshold:.4f} ==")
        report["guard"] = guard_figures(guard, cfg, every=max(1, args.every),
                                        log=lambda s: print("  " + s))
    print("== calibration: ECE before -> after temperature scaling "
          "(model cards, own test split) ==")
    report["calibration"] = calibration_figures()
    print("== stability of the default model under JPEG re-compression ==")
    report["recompression"] = recompression_figures(cfg, every=max(1, args.every))
    reports = resolve(cfg.get("reports", {}).get("dir", "reports"))
    out = Path(args.out) if args.out else reports / "safety.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
