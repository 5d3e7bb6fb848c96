"""One door to every architecture: ``create_model(name)`` and ``list_models()``.

In the manner of ``timm.create_model``: each architecture is a small function
registered by a decorator; the registry entry also records what the rest of
lungct needs to know about it (input size, normalisation, Grad-CAM target
layers, and for transformers the token-to-grid reshape). Names that are not
registered pass through to timm with a generic entry built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import timm
import torch.nn as nn

from lungct import CLASSES
from lungct.models.weights import hub_failure


@dataclass
class ArchInfo:
    """What lungct knows about an architecture beyond its nn.Module."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    input_size: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    cam_layers: Callable[[nn.Module], dict[str, nn.Module]] | None = None
    is_transformer: bool = False
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ArchInfo] = {}


def register(name: str, description: str, **info):
    """Decorator: register ``fn(num_classes, pretrained, **kw) -> nn.Module`` as ``name``."""
    def wrap(fn):
        _REGISTRY[name] = ArchInfo(name=name, builder=fn, description=description, **info)
        return fn
    return wrap


def list_models() -> list[str]:
    """Registered architecture names (any other timm name also works in create_model)."""
    return sorted(_REGISTRY)


def arch_info(name: str) -> ArchInfo:
    """Registry entry of ``name``; timm names get a generic entry built on the fly."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    return _timm_info(name)


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


def _timm_info(name: str) -> ArchInfo:
    """A registry entry for a timm name lungct does not register, or a ValueError listing
    valid names."""
    if name not in timm.list_models():
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


def create_model(name: str, num_classes: int = len(CLASSES), pretrained: bool = False,
                 input_size: int | None = None, **kwargs) -> nn.Module:
    """Build an architecture with a ``num_classes`` head.

    The returned module carries ``arch``, ``classes`` (when 3-class),
    ``input_size``, ``mean`` and ``std`` attributes, so the app, the CLI and
    Grad-CAM can use it without knowing where it came from.

    >>> m = create_model("efficientnet_lite0", pretrained=False)
    >>> m.input_size, m.arch
    (224, 'efficientnet_lite0')
    """
    info = arch_info(name)
    size = input_size or info.input_size
    model = info.builder(num_classes=num_classes, pretrained=pretrained,
                         input_size=size, **{**info.defaults, **kwargs})
    model.arch = name
    model.arch_kwargs = dict(kwargs)
    model.input_size = size
    model.mean, model.std = tuple(info.mean), tuple(info.std)
    model.classes = CLASSES if num_classes == len(CLASSES) else tuple(
        f"class_{i}" for i in range(num_classes))
    return model


def cam_target_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named candidate Grad-CAM layers of a model, the recommended one first."""
    info = arch_info(model.arch)
    if info.cam_layers is None:
        raise ValueError(f"no Grad-CAM target layers known for {model.arch!r}")
    return info.cam_layers(model)
