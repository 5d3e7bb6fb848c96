"""Grad-CAM and friends through pytorch-grad-cam: one ``explain`` call.

We wrap the library instead of re-implementing it. Two things matter for an
app where many users share one cached model:
- CAM objects register hooks on the model; they are used as context managers
  so the hooks are removed on exit, even on error;
- hooks on a shared model would also catch the forward passes of other
  users' plain classifications (and theirs would feed this heatmap), so CAMs
  run on a private copy of the model, made once per model and kept as long
  as the model lives, one CAM at a time per model (a lock). Plain
  classification on the shared model never waits for a heatmap.
For transformers (timm ViT and the hybrid ViT) the token sequence is reshaped
to the patch grid taken from the model, after dropping every prefix token.
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lungct.models.registry import arch_info, cam_target_layers
from lungct.preprocess import to_tensor

CAM_METHODS = {
    "Grad-CAM": "GradCAM",
    "Grad-CAM++": "GradCAMPlusPlus",
    "EigenCAM": "EigenCAM",          # gradient-free (principal component of activations)
    "LayerCAM": "LayerCAM",
    "AblationCAM": "AblationCAM",    # gradient-free; one forward per channel batch (slow)
    "ScoreCAM": "ScoreCAM",          # gradient-free; one forward per channel (slowest)
}
FAST_METHODS = ("Grad-CAM", "Grad-CAM++", "EigenCAM", "LayerCAM")

_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock]" = \
    weakref.WeakKeyDictionary()
_CAM_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = \
    weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.Lock:
    """The lock that serialises hook-based work on one model object."""
    with _LOCKS_GUARD:
        if model not in _LOCKS:
            _LOCKS[model] = threading.Lock()
        return _LOCKS[model]


def cam_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The private copy of ``model`` that carries CAM hooks (call under model_lock)."""
    twin = _CAM_COPIES.get(model)
    if twin is None:
        twin = copy.deepcopy(model).eval()
        _CAM_COPIES[model] = twin
    return twin


def vit_reshape(model: torch.nn.Module):
    """Tokens (B, prefix + H*W, C) -> (B, C, H, W), grid from the model's patch embedding."""
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    grid = tuple(model.patch_embed.grid_size)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not fill a {grid} grid")
        return patches.reshape(tokens.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)

    return reshape


@dataclass
class Explanation:
    heatmap: np.ndarray        # (size, size) float32 in [0, 1]
    target_class: str
    method: str
    layer: str

    def overlay(self, gray: np.ndarray, opacity: float = 0.45) -> np.ndarray:
        """RGB uint8 overlay of the heatmap on the slice, at the slice's own size."""
        return overlay(gray, self.heatmap, opacity)


def overlay(gray: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured heatmap onto a grey slice (both resized to the slice)."""
    from matplotlib import colormaps
    h, w = gray.shape
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F")
                      .resize((w, h), Image.BILINEAR))
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    base = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
    mixed = (1 - opacity) * base + opacity * colour
    return (np.clip(mixed, 0, 1) * 255).astype(np.uint8)


def explain(model: torch.nn.Module, gray: np.ndarray, method: str = "Grad-CAM",
            target_class: int | str | None = None, layer: str | None = None) -> Explanation:
    """Heatmap of ``method`` for one grey slice; the target defaults to the predicted class."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {list(CAM_METHODS)}")
    layers = cam_target_layers(model)
    layer = layer or next(iter(layers))
    shared = model
    if layer not in layers:
        raise ValueError(f"unknown layer {layer!r} for {model.arch}; choose from {list(layers)}")
    classes = tuple(model.classes)
    x = to_tensor(gray, model.input_size, model.mean, model.std).unsqueeze(0)
    device = next(model.parameters()).device
    x = x.to(device)
    is_vit = arch_info(model.arch).is_transformer
    kwargs = {"reshape_transform": vit_reshape(model)} if is_vit else {}
    if method == "AblationCAM" and is_vit:
        kwargs["ablation_layer"] = pgc.AblationLayerVit()
    cam_cls = getattr(pgc, CAM_METHODS[method])
    with model_lock(shared):
        model = cam_copy(shared)
        layers = cam_target_layers(model)
        if target_class is None:
            with torch.no_grad():
                target_class = int(model(x).argmax(1).item())
        elif isinstance(target_class, str):
            if target_class not in classes:
                raise ValueError(f"unknown class {target_class!r}; choose from {list(classes)}")
            target_class = classes.index(target_class)
        if not 0 <= int(target_class) < len(classes):
            raise ValueError(f"target class {target_class} out of range for {list(classes)}")
        # frozen parameters (e.g. a frozen VGG base) still need input gradients
        with torch.enable_grad(), cam_cls(model=model, target_layers=[layers[layer]],
                                          **kwargs) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 64
            heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target_class)])[0]
    heat = np.nan_to_num(heat.astype(np.float32))
    if heat.max() > 0:
        heat = heat / heat.max()
    return Explanation(heatmap=heat, target_class=classes[target_class], method=method,
                       layer=layer)
