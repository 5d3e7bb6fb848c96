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

# The public API, loaded on first use so that ``import lungct`` stays fast
# (torch is imported only when a classifier is asked for).
_LAZY = {
    "Classifier": "lungct.inference",
    "load_guard": "lungct.case",
    "run_case": "lungct.case",
    "classify_series": "lungct.case",
    "Case": "lungct.case",
    "load_study": "lungct.series",
}
__all__ = ["CLASSES", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lungct' has no attribute {name!r}")
