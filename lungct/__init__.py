"""lungct: lung CT slice classification (normal / benign / malignant) with Grad-CAM.

Research decision support, not a medical device. The public API: ``Classifier``
(a model with its preprocessing and calibration), ``load_guard`` (is this a lung
CT slice?), ``load_study`` and ``run_case`` (files, folders or .zip -> a classified
case). Labels always come in the
fixed order of ``CLASSES``; every array of probabilities, every confusion
matrix and every model head in the package uses it.
"""

__version__ = "0.1.0"

CLASSES = ("normal", "benign", "malignant")
"""The one class order used everywhere (model heads, manifests, metrics)."""

MALIGNANT_THRESHOLD = 0.5
"""P(malignant) from which a slice is labelled malignant (``slice_label``)."""


def slice_label(probabilities, threshold: float = MALIGNANT_THRESHOLD,
                classes=CLASSES) -> str:
    """The one decision rule for a slice, used by ``Classifier``, the case verdict and every
    screen and export: malignant if P(malignant) >= ``threshold``, otherwise the likeliest
    class, where a likeliest malignant below the threshold is read as benign (abnormal, but
    not called malignant). So no slice below the threshold is ever labelled malignant, and
    no such slice is called normal either.

    ``probabilities``: a mapping class -> probability, or a sequence in ``classes`` order.

    >>> slice_label({"normal": 0.30, "benign": 0.21, "malignant": 0.49})
    'benign'
    >>> slice_label([0.02, 0.05, 0.93])
    'malignant'
    """
    p = (dict(probabilities) if hasattr(probabilities, "keys")
         else dict(zip(classes, probabilities)))
    top = max(p, key=lambda c: float(p[c]))     # ties: the first in class order, as argmax
    if "malignant" not in p:
        return top
    if float(p["malignant"]) >= threshold:
        return "malignant"
    if top != "malignant":
        return top
    others = [c for c in p if c != "malignant"]
    return "benign" if "benign" in p else max(others, key=lambda c: float(p[c]), default=top)

# The public API, loaded on first use so that ``import lungct`` stays fast
# (torch is imported only when a classifier is asked for).
_LAZY = {
    "Classifier": "lungct.inference",
    "load_guard": "lungct.guard",
    "run_case": "lungct.pipeline",
    "classify_series": "lungct.pipeline",
    "Case": "lungct.pipeline",
    "load_study": "lungct.pipeline.series",
}
__all__ = ["CLASSES", "MALIGNANT_THRESHOLD", "__version__", "slice_label", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lungct' has no attribute {name!r}")
