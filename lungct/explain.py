"""Grad-CAM and friends through pytorch-grad-cam: one ``explain`` call.

We wrap the library instead of re-implementing it. Two things matter for an
app where many users share one cached model:
- CAM objects register hooks on the model; they are used as context managers
  so the hooks are removed on exit, even on error;
- hooks on a shared model would also catch the forward passes of other
  users' plain classifications (and theirs would feed this heatmap), so CAMs
  run on a private copy of the model, one CAM at a time per model (a lock).
  The copy is made for each heatmap and freed after it: copying takes
  milliseconds, while copies kept per model would hold a second set of weights
  for every model the server ever explained. Plain classification on the
  shared model never waits for a heatmap.
For transformers (timm ViT and the hybrid ViT) the token sequence is reshaped
to the patch grid taken from the model, after dropping every prefix token.

The gradient-free AblationCAM and ScoreCAM cost one forward pass per channel
of the target layer (1280 at EfficientNet-Lite0's ``bn2``: about 100 s on a
2-core CPU). They score the ``SLOW_CHANNELS`` most informative channels only,
in batches of ``SLOW_BATCH``, on a channels-last copy of the model, and report
the share of passes done to a ``progress`` callback (the app's progress bar).
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from lungct.lungs import lung_view, segment, view_to_slice
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
SLOW_METHODS = ("AblationCAM", "ScoreCAM")
CLASS_AGNOSTIC = ("EigenCAM",)
"""Methods whose map is the same whatever the target class (EigenCAM: first principal
component of the activations): their result names no class."""
SLOW_CHANNELS = 128
"""Channels AblationCAM and ScoreCAM score, one forward pass each (all of them when the
layer has fewer): those whose maps vary most over the slice (the "Faster Score-CAM"
shortcut: a flat map masks or removes nothing in particular). The others get weight 0."""
SLOW_BATCH = 8
"""Masked images per forward pass: larger batches ran slower per image on a 2-core CPU."""

_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock]" = \
    weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.Lock:
    """The lock that serialises hook-based work on one model object."""
    with _LOCKS_GUARD:
        if model not in _LOCKS:
            _LOCKS[model] = threading.Lock()
        return _LOCKS[model]


def cam_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A private copy of ``model`` to carry CAM hooks for one heatmap (call under model_lock).

    Channels-last: it runs EfficientNet's depthwise convolutions 2-3x faster on CPU.
    """
    return copy.deepcopy(model).eval().to(memory_format=torch.channels_last)


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


class _PassCounter:
    """Forward hook that reports the share of a slow method's masked images done."""

    def __init__(self, model: torch.nn.Module, report: Callable[[float], None]):
        self.report, self.done, self.total = report, 0, 0
        self.handle = model.register_forward_hook(self)

    def expect(self, images: int) -> None:
        self.done, self.total = 0, images

    def __call__(self, module, inputs, output) -> None:
        if self.total:
            self.done += len(inputs[0])
            self.report(min(1.0, self.done / self.total))


def _top_variance_channels(activations: np.ndarray, k: int | None) -> np.ndarray:
    """Indices of the ``k`` channels whose maps vary most over space (batch maximum); all
    channels when ``k`` is None."""
    flat = activations.reshape(activations.shape[0], activations.shape[1], -1)
    return np.sort(np.argsort(-flat.var(axis=-1).max(axis=0), kind="stable")[:k])


def _slow_cam_classes(channels: int | None = SLOW_CHANNELS):
    """ScoreCAM and AblationCAM on the ``channels`` top-variance channels (None: all),
    announcing their passes."""
    import pytorch_grad_cam as pgc

    def top_channel_layer(base):
        class TopChannels(base):
            def activations_to_be_ablated(self, activations, ratio_channels_to_ablate=1.0):
                keep = _top_variance_channels(activations[None], channels)
                self.indices = keep.astype(np.int32)
                return self.indices
        return TopChannels()

    class FasterScoreCAM(pgc.ScoreCAM):
        counter: _PassCounter | None = None

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            keep = _top_variance_channels(activations, channels)
            if self.counter:
                self.counter.expect(len(keep) * len(input_tensor))
            kept = super().get_cam_weights(input_tensor, target_layer, targets,
                                           activations[:, keep], grads)
            weights = np.zeros(activations.shape[:2], dtype=np.float32)
            weights[:, keep] = kept
            return weights

    class CountedAblationCAM(pgc.AblationCAM):
        counter: _PassCounter | None = None

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            if self.counter:  # one unmasked pass, then one per ablated channel
                ablated = len(_top_variance_channels(activations[:1], channels))
                self.counter.expect(len(input_tensor) * (1 + ablated))
            return super().get_cam_weights(input_tensor, target_layer, targets, activations,
                                           grads)

    return {"ScoreCAM": FasterScoreCAM, "AblationCAM": CountedAblationCAM,
            "layer": top_channel_layer}


@dataclass
class Explanation:
    heatmap: np.ndarray        # (H, W) of the slice, float32 in [0, 1], 0 outside the body
    target_class: str | None   # None for a class-agnostic method (EigenCAM)
    method: str
    layer: str

    @property
    def caption(self) -> str:
        return caption(self.method, self.target_class)

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


def on_slice(heat: np.ndarray, seg, view: str = "full") -> np.ndarray:
    """A heatmap over the model input, on the slice's own pixels, zero where it explains nothing.

    A "lungs" model saw the lung crop: its map goes back into the crop box and is
    kept inside the chest (the lung fields' convex hull: lungs, masses, hila,
    mediastinum; ``Segmentation.mask("chest")``). A "full" model saw the whole
    slice squashed to a square: its map is stretched back and kept inside the
    body. Either way nothing is drawn on air, table or text.
    """
    if view == "lungs":
        return view_to_slice(heat, seg)
    h, w = seg.shape
    full = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((w, h),
                      Image.BILINEAR), dtype=np.float32)
    return full * seg.mask("body")


def caption(method: str, target_class: str | None) -> str:
    """What a heatmap shows, for a caption: the class only where the method depends on it."""
    if method in CLASS_AGNOSTIC or target_class is None:
        return f"{method} (the same for every class)"
    return f"{method}, class {target_class}"


def explain(model: torch.nn.Module, gray: np.ndarray, method: str = "Grad-CAM",
            target_class: int | str | None = None, layer: str | None = None,
            progress: Callable[[float], None] | None = None,
            channels: int | None = SLOW_CHANNELS, seg=None) -> Explanation:
    """Heatmap of ``method`` for one grey slice; the target defaults to the predicted class.

    ``progress(share)`` is called as the masked forward passes of AblationCAM and
    ScoreCAM complete (share in [0, 1]); the other methods do not call it.
    ``channels``: how many channels AblationCAM and ScoreCAM score (None: every
    channel, the methods as published; ``python -m lungct lab bench-app fidelity``).
    ``seg``: the slice's ``lungct.lungs.Segmentation`` when the pipeline made it already
    (``SliceResult.seg``): a lung-view model's crop and the heatmap's placement back on
    the slice come from it, and nothing is segmented twice.
    """
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
    seg = seg if seg is not None else segment(gray)
    view = getattr(model, "view", "full")
    model_input = lung_view(gray, model.input_size, seg) if view == "lungs" else gray
    x = to_tensor(model_input, model.input_size, model.mean, model.std).unsqueeze(0)
    device = next(model.parameters()).device
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    is_vit = arch_info(model.arch).is_transformer
    kwargs = {"reshape_transform": vit_reshape(model)} if is_vit else {}
    slow = _slow_cam_classes(channels)
    if method == "AblationCAM":
        # a fresh ablation layer per call: the library's default instance is shared
        kwargs["ablation_layer"] = slow["layer"](pgc.AblationLayerVit if is_vit
                                                 else pgc.AblationLayer)
        kwargs["batch_size"] = SLOW_BATCH
    cam_cls = slow[method] if method in SLOW_METHODS else getattr(pgc, CAM_METHODS[method])
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
        target_layer = layers[layer]
        counter = _PassCounter(model, progress) if progress and method in SLOW_METHODS else None
        try:
            # frozen parameters (e.g. a frozen VGG base) still need input gradients
            with torch.enable_grad(), cam_cls(model=model, target_layers=[target_layer],
                                              **kwargs) as cam:
                cam.batch_size = SLOW_BATCH
                cam.counter = counter
                heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target_class)])[0]
        finally:
            if counter:
                counter.handle.remove()
    heat = np.nan_to_num(heat.astype(np.float32))
    heat = on_slice(heat, seg, view)
    if heat.max() > 0:
        heat = heat / heat.max()
    explained = None if method in CLASS_AGNOSTIC else classes[target_class]
    return Explanation(heatmap=heat, target_class=explained, method=method, layer=layer)
