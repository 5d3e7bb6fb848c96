"""Aim a model's class map at the painted masses: the localisation loss.

Why: a class label says that a slice is malignant, not where. Trained on
labels alone, the default student's Grad-CAM for "malignant" pointed at the
tumour on 4 of 38 Lung-PET-CT-Dx slices, and a mass painted into a lung
barely moved its score (README, "Other hospitals' chest CT"). Painted masses
(``lungct.training.lesions``) come with the one thing the labels lack: where
the disease is. This loss uses it.

For a network that ends in global average pooling and one linear layer, the
class activation map (Zhou et al. 2016) of class k is ``w_k . f(x, y)`` over
the last feature map, and Grad-CAM at that layer is its positive part (the
gradient of the logit is ``w_k / (h w)`` at every location). Read as a
distribution over locations (a softmax), the map is pulled toward the mass's
footprint at the same resolution: a cross-entropy between the two (as in
attention supervision, e.g. Li et al. 2018, "Tell me where to look"). The
classification loss is unchanged; only slices with a painted mass take part.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def supports(model: nn.Module) -> bool:
    """Whether ``model`` has the split this loss needs: a (B, C, h, w) feature map, then
    average pooling and one linear layer (timm's CNNs). A transformer's tokens are not a
    map, and a VGG head has several layers."""
    from lungct.models.registry import arch_info

    arch = getattr(model, "arch", None)
    if arch is not None and arch_info(arch).is_transformer:
        return False
    return (hasattr(model, "forward_features") and hasattr(model, "forward_head")
            and isinstance(getattr(model, "get_classifier", lambda: None)(), nn.Linear))


def class_map(model: nn.Module, features: torch.Tensor, k: int) -> torch.Tensor:
    """(B, h, w) class activation map of class ``k`` from (B, C, h, w) last features."""
    return torch.einsum("c,bchw->bhw", model.get_classifier().weight[k], features)


def localisation_loss(cam: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the mass's footprint and the softmax of the class map.

    ``cam``: (B, h, w) class maps; ``mass``: (B, H, W) 0/1 masks, each with a mass.
    The footprint is the share of each map cell the mass covers, normalised; the
    loss is ``log(h w)`` for a flat map and falls as the map's weight gathers on it.
    """
    target = F.adaptive_avg_pool2d(mass.float()[:, None], cam.shape[-2:]).flatten(1)
    target = target / target.sum(1, keepdim=True).clamp_min(1e-8)
    return -(target * F.log_softmax(cam.flatten(1).float(), dim=1)).sum(1).mean()
