"""Any timm architecture name that lungct does not register itself."""

from __future__ import annotations

import timm
import torch.nn as nn

from lungct.models.registry import ArchInfo
from lungct.models.weights import hub_failure


def _generic_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Last block of a timm ViT, else the last 2-D convolution-bearing child."""
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return {"blocks.-1.norm1": model.blocks[-1].norm1}
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last = (name, module)
    if last is None:
        raise ValueError(f"no convolution found for Grad-CAM in {type(model).__name__}")
    return {last[0]: last[1]}


def info_for(name: str) -> ArchInfo:
    """A registry entry for a timm name, or a ValueError listing valid names."""
    if name not in timm.list_models():
        from lungct.models.registry import list_models
        raise ValueError(f"unknown model {name!r}; lungct models: {list_models()} "
                         "(any timm.list_models() name also works)")

    def build(num_classes=3, pretrained=False, input_size=224, **kw):
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kw)
        except Exception as err:
            if pretrained:
                raise hub_failure(name, err) from err
            raise

    cfg = timm.get_pretrained_cfg(name)
    mean = tuple(cfg.mean) if cfg else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg else (0.229, 0.224, 0.225)
    size = int(cfg.input_size[-1]) if cfg else 224
    return ArchInfo(name=name, builder=build, description=f"timm {name}", input_size=size,
                    mean=mean, std=std, cam_layers=_generic_layers,
                    is_transformer=any(k in name for k in ("vit", "deit", "eva")))
