"""Many users, one cached model: six threads classify six slices and compute Grad-CAM
heatmaps on one shared model object (as ``st.cache_resource`` shares it) at the same
time. Every result must equal the single-threaded one, and no hook may remain."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lungct import guard as ood
from lungct.config import REPO_ROOT, load_config
from lungct.models.checkpoint import MODELS_DIR, WEIGHTS_FILE, list_shipped
from lungct.preprocess import load_image

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))
THREADS = 6
ROUNDS = 2


def _model():
    """The default shipped model, else any shipped one, else a seeded random Lite0."""
    from lungct.models import create_model, load_model
    default = load_config()["app"]["default_model"]
    names = [n for n in list_shipped() if (MODELS_DIR / n / WEIGHTS_FILE).exists()]
    if names:
        return load_model(default if default in names else names[0])
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=128)
    model.name = "random_lite0"
    return model.eval()


def hooks(model: torch.nn.Module) -> list[str]:
    """Every hook registered on any submodule (forward, pre-forward, backward)."""
    found = []
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            if getattr(m, attr, None):
                found.append(f"{name or '<root>'}.{attr}")
    return found


@pytest.fixture(scope="module")
def setup():
    from lungct.inference import Classifier
    assert len(SAMPLES) >= THREADS
    model = _model()
    clf = Classifier(model)
    grays = [load_image(p) for p in SAMPLES[:THREADS]]
    guard = ood.InputGuard.load() if (ood.guard_dir() / ood.WEIGHTS_FILE).exists() else None
    return clf, grays, guard


def run_one(clf, gray, guard):
    from lungct.explain import explain
    pred = clf.predict_gray(gray)
    heat = explain(clf.model, gray).heatmap
    verdict = guard.check(gray) if guard is not None else None
    return pred, heat, verdict


def test_threads_match_single_threaded(setup):
    clf, grays, guard = setup
    before_hooks = hooks(clf.model)
    grad_flags = [p.requires_grad for p in clf.model.parameters()]
    reference = [run_one(clf, g, guard) for g in grays]

    barrier = threading.Barrier(THREADS)
    results: dict[tuple[int, int], tuple] = {}
    errors: list[BaseException] = []

    def worker(i):
        try:
            for r in range(ROUNDS):
                barrier.wait(timeout=120)
                results[(i, r)] = run_one(clf, grays[i], guard)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert len(results) == THREADS * ROUNDS

    for (i, _), (pred, heat, verdict) in results.items():
        ref_pred, ref_heat, ref_verdict = reference[i]
        assert pred.label == ref_pred.label
        for c, p in ref_pred.probabilities.items():
            assert abs(pred.probabilities[c] - p) < 1e-5, (i, c)
        assert heat.shape == ref_heat.shape
        diff = float(np.abs(heat - ref_heat).max())
        assert diff < 1e-4, f"thread {i}: heatmap differs by {diff:.3f} from single-threaded"
        if guard is not None:
            assert verdict.in_distribution == ref_verdict.in_distribution
            assert abs(verdict.score - ref_verdict.score) < 1e-4

    assert hooks(clf.model) == before_hooks == []
    assert [p.requires_grad for p in clf.model.parameters()] == grad_flags
    assert not clf.model.training


def test_classification_alongside_heatmaps(setup):
    """Plain classification takes no lock: run it while other threads compute heatmaps."""
    from lungct.explain import explain
    clf, grays, _ = setup
    ref_probs = [clf.predict_gray(g).probabilities for g in grays]
    ref_heat = [explain(clf.model, g).heatmap for g in grays[:3]]
    stop = threading.Event()
    errors, heats = [], {}

    def cam_worker(i):
        try:
            for _ in range(2):
                heats.setdefault(i, []).append(explain(clf.model, grays[i]).heatmap)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    def clf_worker(i):
        try:
            while not stop.is_set():
                probs = clf.predict_gray(grays[i]).probabilities
                for c, p in ref_probs[i].items():
                    assert abs(probs[c] - p) < 1e-5
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    cams = [threading.Thread(target=cam_worker, args=(i,)) for i in range(3)]
    clfs = [threading.Thread(target=clf_worker, args=(i,)) for i in range(3, THREADS)]
    for t in cams + clfs:
        t.start()
    for t in cams:
        t.join(timeout=600)
    stop.set()
    for t in clfs:
        t.join(timeout=120)
    assert not errors, errors
    for i, hs in heats.items():
        for h in hs:
            diff = float(np.abs(h - ref_heat[i]).max())
            assert diff < 1e-4, (
                f"heatmap {i} differs by {diff:.3f} while other threads classify: the Grad-CAM "
                "hooks on the shared model also record the other threads' forward passes")
    assert hooks(clf.model) == []
