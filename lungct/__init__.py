"""lungct: lung CT slice classification (normal / benign / malignant) with Grad-CAM.

Research decision support, not a medical device. Labels always come in the
fixed order of ``CLASSES``; every array of probabilities, every confusion
matrix and every model head in the package uses it.
"""

__version__ = "0.1.0"

CLASSES = ("normal", "benign", "malignant")
"""The one class order used everywhere (model heads, manifests, metrics)."""
