"""The localisation loss on painted masses: masses move with the augmentation, the loss
rewards a class map on the mass, the teacher never labels a painted slice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lungct import CLASSES
from lungct.training import loop
from lungct.training.datasets import SliceDataset, train_transform
from lungct.training.lesions import LesionPainter
from lungct.training.localise import class_map, localisation_loss, supports

from tiny_net import HALF

MAL, NORMAL = CLASSES.index("malignant"), CLASSES.index("normal")
CPU = torch.device("cpu")


def _chest(side=64):
    yy, xx = np.mgrid[0:side, 0:side]
    body = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.45 * side) ** 2
    lungs = np.zeros_like(body)
    for cx in (0.3 * side, 0.7 * side):
        lungs |= (yy - side / 2) ** 2 / (0.3 * side) ** 2 + (xx - cx) ** 2 / (0.15 * side) ** 2 < 1
    g = np.where(body, 0.65, 0.0)
    g = np.where(lungs, 0.1, g)
    return np.clip(g * 255, 0, 255).astype(np.uint8), lungs


class MapNet(nn.Module):
    """Features on a 4x4 grid, average-pooled, one linear layer: the timm split."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.classifier = nn.Linear(8, 3)
        self.mean, self.std = HALF, HALF

    def forward_features(self, x):
        return F.relu(F.adaptive_avg_pool2d(self.conv(x), 4))

    def forward_head(self, f):
        return self.classifier(f.mean((2, 3)))

    def get_classifier(self):
        return self.classifier

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_the_mass_moves_with_the_slice():
    img, lungs = _chest()
    painter = LesionPainter(lungs[None], sources=(NORMAL,), target=MAL, p=1.0,
                            diameter=(0.2, 0.25))
    flip = train_transform({"hflip": True, "rotation_deg": 0, "zoom": 0, "shift": 0,
                            "render": {"p": 1.0, "noise_std": 0.0}})
    ds = SliceDataset(torch.from_numpy(img)[None], torch.tensor([NORMAL]), HALF, HALF,
                      flip, lesions=painter)
    for seed in range(6):
        np.random.seed(seed)
        torch.manual_seed(seed)
        x, label, mass = ds[0]
        grey = x[0] * 0.5 + 0.5
        assert int(label) == MAL and mass.dtype == torch.uint8 and mass.sum() > 20
        inside = grey[mass.bool()].mean()
        ring = torch.from_numpy(lungs).flip(-1) | torch.from_numpy(lungs)
        lung_grey = grey[ring & ~mass.bool()].median()
        assert inside > lung_grey + 0.2          # the mask sits on the painted mass
    plain = SliceDataset(torch.from_numpy(img)[None], torch.tensor([NORMAL]), HALF, HALF)
    assert plain[0][2].sum() == 0                # no mass, an empty mask


def test_a_painted_malignant_slice_is_no_localisation_target():
    img, lungs = _chest()
    painter = LesionPainter(lungs[None], sources=(MAL,), target=MAL, p=1.0)
    ds = SliceDataset(torch.from_numpy(img)[None], torch.tensor([MAL]), HALF, HALF,
                      lesions=painter)
    x, label, mass = ds[0]
    assert int(label) == MAL and mass.sum() == 0   # its own tumour may lie anywhere


def test_loss_rewards_a_map_on_the_mass():
    mass = torch.zeros(1, 16, 16, dtype=torch.uint8)
    mass[0, :8, :8] = 1
    flat = torch.zeros(1, 4, 4)
    assert localisation_loss(flat, mass).item() == pytest.approx(math.log(16), rel=1e-5)
    on = torch.full((1, 4, 4), -5.0)
    on[0, :2, :2] = 5.0
    off = torch.full((1, 4, 4), -5.0)
    off[0, 2:, 2:] = 5.0
    # the least it can be is the footprint's own entropy (4 cells: log 4), reached by a
    # map spread evenly on the mass; a map elsewhere costs far more
    assert localisation_loss(on, mass).item() == pytest.approx(math.log(4), abs=1e-3)
    assert localisation_loss(off, mass) > math.log(16) + 5


def test_class_map_is_what_grad_cam_sees():
    """At the last feature map, Grad-CAM's weights are the classifier row / (h w)."""
    torch.manual_seed(0)
    net = MapNet()
    assert supports(net) and not supports(nn.Linear(2, 2))
    x = torch.randn(1, 3, 8, 8)
    f = net.forward_features(x)
    f.retain_grad()
    net.forward_head(f)[0, MAL].backward()
    weights = f.grad[0].mean((1, 2))
    grad_cam = torch.einsum("c,chw->hw", weights, f[0].detach())
    assert torch.allclose(grad_cam * 16, class_map(net, f.detach(), MAL)[0], atol=1e-5)


@pytest.mark.parametrize("arch,ok", [("efficientnet_lite0", True),
                                     ("hybrid_vit_lite0", False), ("vgg16", False)])
def test_only_map_then_linear_networks_take_the_loss(arch, ok):
    from lungct.models import create_model
    assert supports(create_model(arch, pretrained=False, input_size=64)) is ok


def test_a_recipe_for_another_network_is_a_clear_error(tmp_path):
    from lungct.config import apply_overrides, load_config
    from lungct.training.run import train_from_config

    cfg = apply_overrides(load_config(), ["train.model=hybrid_vit_lite0",
                                          "train.pretrained=false",
                                          "augment.lesion.localise=1.0"])
    with pytest.raises(ValueError, match="localise"):
        train_from_config(cfg, "x", out_dir=tmp_path / "x", track=False)
    assert not (tmp_path / "x").exists()


def test_painted_slices_learn_their_label_not_the_teachers():
    """A teacher that never saw the mass would call a painted slice normal."""
    torch.manual_seed(0)
    net = MapNet()

    class Stubborn(nn.Module):
        def forward(self, x):
            return torch.tensor([[9.0, 0.0, 0.0]]).expand(len(x), 3)

    x = torch.randn(4, 3, 8, 8)
    y = torch.full((4,), MAL)
    mass = torch.zeros(4, 8, 8, dtype=torch.uint8)
    mass[:, 2:5, 2:5] = 1
    loader = [(x, y, mass)]
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    stats = loop.train_one_epoch(net, loader, opt, CPU, teacher=Stubborn(), alpha=0.5,
                                 localise=0.0, target_class=MAL)
    ce = F.cross_entropy(net(x), y).item()
    assert stats["train_loss"] == pytest.approx(ce, rel=1e-5)
    plain = [(x, y, torch.zeros_like(mass))]
    stats = loop.train_one_epoch(net, plain, opt, CPU, teacher=Stubborn(), alpha=0.5)
    assert stats["train_loss"] > ce + 1.0      # unpainted slices do hear the teacher


def test_training_gathers_the_map_on_the_mass():
    torch.manual_seed(0)
    net = MapNet()
    x = torch.randn(8, 3, 8, 8)
    y = torch.full((8,), MAL)
    mass = torch.zeros(8, 8, 8, dtype=torch.uint8)
    mass[:, :4, :4] = 1
    x[:, :, :4, :4] += 2.0                      # the mass is brighter than the rest
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    first = loop.train_one_epoch(net, [(x, y, mass)], opt, CPU, localise=1.0,
                                 target_class=MAL)["train_loc_loss"]
    for _ in range(30):
        last = loop.train_one_epoch(net, [(x, y, mass)], opt, CPU, localise=1.0,
                                    target_class=MAL)["train_loc_loss"]
    assert last < first - 0.5
