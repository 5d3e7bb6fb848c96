"""One door to every architecture: ``create_model(name)`` and ``list_models()``.

In the manner of ``timm.create_model``: each architecture is a small function
registered by a decorator; the registry entry also records what the rest of
lungct needs to know about it (input size, normalisation, Grad-CAM target
layers, and for transformers the token-to-grid reshape). Names that are not
registered pass through to timm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from lungct import CLASSES


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
    from lungct.models import timm_passthrough
    return timm_passthrough.info_for(name)


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
