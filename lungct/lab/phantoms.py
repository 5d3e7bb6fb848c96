"""Images that are not lung CT slices, and lung CT slices as other sources render them.

The input guard's test material (``python -m lungct lab safety-report``, the test
suite and ``tests/make_corpus.py``): procedural brain-CT, abdominal-CT and
chest X-ray phantoms, two-tone chest segmentation masks, rendered documents, scikit-image's sample photos, noise
and patterns (``non_ct_set``); lung CT slices re-windowed, cropped, resized,
re-compressed or captured as screenshots (``other_source_variants``); and
pydicom's real ``CT_small.dcm`` (``ct_small``). Deterministic for a seed.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lungct.preprocess import hu_window

WINDOWS_HU = {"lung": (1500.0, -600.0), "mediastinal": (350.0, 50.0), "brain": (80.0, 40.0),
              "bone": (2000.0, 500.0), "abdomen": (400.0, 40.0),
              "dataset_like": (900.0, 450.0)}
"""(width, level) in HU; ``dataset_like`` roughly imitates the training slices' display."""


def rendered(hu: np.ndarray, name: str) -> np.ndarray:
    """A phantom's HU in the named window of ``WINDOWS_HU``."""
    return hu_window(hu, *WINDOWS_HU[name])


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


def chest_mask(seed: int = 0, n: int = 512, kind: str = "body") -> np.ndarray:
    """A two-tone segmentation mask of an axial chest, as a mask PNG shows it: ``body``
    (body white, lung fields black), ``lungs`` (lung fields white on black) or
    ``inverted`` (the body mask's complement). Shaped like a chest, grey levels of
    none: a mask, a drawing of the outline, is not a CT slice."""
    rng = np.random.default_rng(seed)
    x, y = _grid(n)
    j = lambda v: v * float(rng.uniform(0.9, 1.1))  # noqa: E731
    body = _ellipse(x, y, 0, 0.02, j(0.86), j(0.62))
    lungs = (_ellipse(x, y, j(-0.36), -0.05, j(0.26), j(0.44), 0.1)
             | _ellipse(x, y, j(0.36), -0.05, j(0.26), j(0.44), -0.1))
    out = {"body": body & ~lungs, "lungs": lungs, "inverted": ~(body & ~lungs)}[kind]
    return out.astype(np.float32)


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
            # binary_blobs draws new blobs each call unless seeded
            img = getattr(skd, name)(**({"rng": 0} if name == "binary_blobs" else {}))
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
    for i, kind in enumerate(("body", "lungs", "inverted", "body", "lungs", "inverted")):
        out.append(("chest_mask", f"mask_{i}_{kind}", chest_mask(seed * 100 + i, kind=kind)))
    for i in range(8):
        out.append(("chest_xray_phantom", f"cxr_{i}", chest_xray_phantom(seed * 100 + i)))
    for i, win in enumerate(("brain", "bone", "lung", "dataset_like", "brain", "mediastinal")):
        out.append(("brain_ct_phantom", f"brain_{i}_{win}",
                    rendered(brain_ct_phantom(seed * 100 + i), win)))
    for i, win in enumerate(("abdomen", "lung", "dataset_like", "mediastinal", "abdomen", "bone")):
        out.append(("abdomen_ct_phantom", f"abdomen_{i}_{win}",
                    rendered(abdomen_ct_phantom(seed * 100 + i), win)))
    return [(c, nm, np.clip(np.asarray(g, np.float32), 0, 1)) for c, nm, g in out]


# ------------------------------------------------------ other-source lung CTs

def screenshot(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit PNG screenshot of a viewer: grey frame, a title bar, slight rescale."""
    from lungct.guard.variants import border, resample
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
    from lungct.guard.variants import crop, jpeg, resample, retissue, window
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
