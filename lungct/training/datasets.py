"""Training tensors: slices decoded once, augmented on the fly, classes balanced.

Decoding 1097 JPEGs every epoch would cost more than the forward pass of a
small model on a 2-core CPU, so every slice is decoded once through the same
``lungct.preprocess`` path the app uses, resized to the model size and kept
as uint8 in memory (about 55 MB at 224 px). Augmentation follows the paper:
horizontal flip, rotation up to 15 degrees, zoom and shift; optionally also
JPEG re-compression, because slices reach the app re-saved by PACS exports,
screenshots and e-mail at qualities the training JPEGs never had.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from lungct import CLASSES
from lungct.preprocess import load_image, model_view


def preload(root: str | Path, rows: list[dict], size: int,
            view: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every row's image into the model's view: (N, size, size) uint8 and (N,) labels."""
    images = np.empty((len(rows), size, size), dtype=np.uint8)
    for i, row in enumerate(rows):
        gray = model_view(load_image(Path(root) / row["path"]), size, view)
        images[i] = np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
    labels = torch.tensor([CLASSES.index(r["label"]) for r in rows], dtype=torch.long)
    return torch.from_numpy(images), labels


def preload_lung_masks(root: str | Path, rows: list[dict], size: int,
                       view: str = "full") -> np.ndarray:
    """Every row's lung fields in the model's view, (N, size, size) bool, from the same
    segmentation the view is made with (where ``LesionPainter`` paints)."""
    from lungct.lungs import segment
    from lungct.preprocess import view_mask

    masks = np.zeros((len(rows), size, size), dtype=bool)
    for i, row in enumerate(rows):
        masks[i] = view_mask(segment(load_image(Path(root) / row["path"])), size, view)
    return masks


class RenderJitter(v2.Transform):
    """What differs between hospitals' renderings of the same anatomy, drawn at random.

    Gamma (display curve), contrast, reconstruction-kernel sharpness (blur or
    unsharp masking), noise and a lower acquisition/export resolution; each
    with its own probability. Works on the (1, H, W) uint8 training tensor.
    Why: one source's rendering carries its labels (darker slices per class);
    a model must not be able to lean on it. A torchvision v2 transform: given an
    image and a ``tv_tensors.Mask`` (a painted mass), it changes the image only.
    """

    def __init__(self, gamma=(0.6, 1.6), contrast: float = 0.2, blur_p: float = 0.25,
                 sharpen_p: float = 0.25, noise_std: float = 0.03, lowres_p: float = 0.25,
                 p: float = 0.8):
        super().__init__()
        self.gamma, self.contrast, self.p = tuple(gamma), float(contrast), float(p)
        self.blur_p, self.sharpen_p = float(blur_p), float(sharpen_p)
        self.noise_std, self.lowres_p = float(noise_std), float(lowres_p)

    def transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        import torch.nn.functional as F
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        if isinstance(x, tv_tensors.Mask) or torch.rand(()) > self.p:
            return x
        y = x.float().div(255)
        lo, hi = np.log(self.gamma[0]), np.log(self.gamma[1])
        y = y.clamp(0, 1).pow(float(np.exp(np.random.uniform(lo, hi))))
        if self.contrast:
            c = 1 + np.random.uniform(-self.contrast, self.contrast)
            y = (y - 0.4) * c + 0.4
        r = np.random.random()
        if r < self.blur_p:
            y = TF.gaussian_blur(y, kernel_size=7, sigma=float(np.random.uniform(0.4, 1.6)))
        elif r < self.blur_p + self.sharpen_p:
            soft = TF.gaussian_blur(y, kernel_size=7, sigma=1.0)
            y = y + float(np.random.uniform(0.3, 1.5)) * (y - soft)
        if np.random.random() < self.lowres_p:
            side = y.shape[-1]
            small = max(32, int(side * np.random.uniform(0.35, 0.8)))
            y = F.interpolate(F.interpolate(y[None], size=(small, small), mode="bilinear",
                                            antialias=True, align_corners=False),
                              size=y.shape[-2:], mode="bilinear", align_corners=False)[0]
        if self.noise_std:
            y = y + torch.randn_like(y) * float(np.random.uniform(0, self.noise_std))
        out = (y.clamp(0, 1) * 255).round().to(torch.uint8)
        return tv_tensors.wrap(out, like=x) if isinstance(x, tv_tensors.TVTensor) else out


def train_transform(aug: dict) -> v2.Compose:
    """The paper's augmentation, each part switchable from params.yaml ``augment``,
    plus (``augment.render``) the rendering changes of :class:`RenderJitter`."""
    steps = []
    render = aug.get("render")
    if render:
        steps.append(RenderJitter(**render))
    if aug.get("hflip", True):
        steps.append(v2.RandomHorizontalFlip())
    zoom, shift = float(aug.get("zoom", 0.1)), float(aug.get("shift", 0.1))
    degrees = float(aug.get("rotation_deg", 15))
    if degrees or zoom or shift:
        steps.append(v2.RandomAffine(degrees=degrees, translate=(shift, shift),
                                     scale=(1 - zoom, 1 + zoom)))
    quality = aug.get("jpeg_quality")
    if quality and float(aug.get("jpeg_p", 0.5)) > 0:
        lo, hi = (int(quality[0]), int(quality[1])) if isinstance(quality, (list, tuple)) \
            else (int(quality), int(quality))
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"augment.jpeg_quality must be 1 <= low <= high <= 100, got {quality}")
        steps.append(v2.RandomApply([v2.JPEG(quality=(lo, hi))], p=float(aug.get("jpeg_p", 0.5))))
    return v2.Compose(steps) if steps else v2.Identity()


def preload_raw(root: str | Path, rows: list[dict], side: int = 256) -> list[np.ndarray]:
    """Every row's decoded slice as uint8, longest side ``side``, aspect kept (for
    augmentations that must see the whole slice before the lung view is made)."""
    from PIL import Image
    out = []
    for row in rows:
        gray = load_image(Path(root) / row["path"])
        h, w = gray.shape
        scale = side / max(h, w)
        img = Image.fromarray(gray).resize((max(8, round(w * scale)), max(8, round(h * scale))),
                                           Image.Resampling.BILINEAR)
        out.append(np.clip(np.round(np.asarray(img) * 255), 0, 255).astype(np.uint8))
    return out


class LungWindowRerender:
    """With probability ``p``, a slice re-rendered as a lung window shows it, then viewed again.

    IQ-OTH/NCCD exports in narrow windows (black lungs, dark speckled soft tissue);
    most hospitals read and export lung windows (grey lungs with vessels, light grey
    soft tissue). No monotone remapping turns one into the other, so the training
    slice itself is re-rendered tissue class by tissue class
    (``lungct.guard.variants.retissue``) and put through ``lungs.lung_view``
    again: the model meets both renderings of the same anatomy under one label.
    """

    def __init__(self, raws: list[np.ndarray], size: int, p: float = 0.5):
        self.raws, self.size, self.p = raws, int(size), float(p)

    def __call__(self, i: int) -> tuple[torch.Tensor, np.ndarray] | None:
        """None, or the re-rendered view and its lung fields (for ``LesionPainter``)."""
        from lungct.guard.variants import retissue
        from lungct.lungs import lung_view, segment
        from lungct.preprocess import view_mask

        if np.random.random() >= self.p:
            return None
        rng = np.random.default_rng(np.random.randint(1 << 31))
        g = retissue(self.raws[i].astype(np.float32) / 255, soft=rng.uniform(0.7, 0.95),
                     lung=rng.uniform(0.12, 0.4), detail=rng.uniform(0.2, 0.8),
                     blur=rng.uniform(0.5, 1.5), seed=int(rng.integers(1 << 31)))
        seg = segment(g)
        view = lung_view(g, self.size, seg)
        return (torch.from_numpy(np.clip(np.round(view * 255), 0, 255).astype(np.uint8)),
                view_mask(seg, self.size, "lungs"))


class SliceDataset(Dataset):
    """Preloaded uint8 slices -> (normalised 3-channel float tensor, label, mass).

    ``mass`` is (H, W) uint8: 1 where a mass was painted into a slice of another
    class (``lesions``), the target of the localisation loss
    (``lungct.training.localise``); all 0 otherwise, and always for validation.
    The geometric augmentation moves the mass with the slice.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std,
                 transform=None, rerender: LungWindowRerender | None = None, lesions=None):
        self.images, self.labels, self.transform = images, labels, transform
        self.rerender, self.lesions = rerender, lesions
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from torchvision import tv_tensors

        other = self.rerender(i) if self.rerender is not None else None
        x, label = (self.images[i] if other is None else other[0]), self.labels[i]
        mass = torch.zeros(x.shape[-2:], dtype=torch.uint8)
        if self.lesions is not None:   # training only: a painted mass, relabelled
            plain = x.numpy()
            painted, new, where = self.lesions(plain, i, int(label),
                                               None if other is None else other[1])
            if where is not None:
                if int(label) != new:   # a malignant slice's own tumour is elsewhere
                    mass = torch.from_numpy(where.astype(np.uint8))
                x, label = torch.from_numpy(painted), torch.tensor(new, dtype=torch.long)
        x = x.unsqueeze(0)
        if self.transform is not None:
            if self.lesions is not None:
                x, m = self.transform(tv_tensors.Image(x), tv_tensors.Mask(mass[None]))
                x, mass = x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)[0]
            else:
                x = self.transform(x)
        x = x.float().div_(255).expand(3, -1, -1)
        return (x - self.mean) / self.std, label, mass


def balanced_sampler(labels: torch.Tensor, num_samples: int | None = None,
                     seed: int = 0) -> WeightedRandomSampler:
    """Oversample minority classes so every class is equally likely in each epoch."""
    counts = torch.bincount(labels, minlength=len(CLASSES)).clamp(min=1).float()
    weights = (1.0 / counts)[labels]
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(labels), replacement=True,
                                 generator=gen)
