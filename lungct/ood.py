"""The first release's module name for the input guard, kept so old imports work.

The guard now lives in :mod:`lungct.guard`, split by job; import from there.
"""

from lungct.guard import *  # noqa: F401,F403
from lungct.guard import __all__ as _guard_all
from lungct.guard.density import PPCAGaussian  # noqa: F401
from lungct.guard.features import (EXTRACTOR, EXTRACTOR_SIZE, LAYERS,  # noqa: F401
                                   FeatureExtractor, shared_extractor)
from lungct.guard.model import DEFAULTS, guard_config as ood_config  # noqa: F401
from lungct.guard.variants import (affine, border, crop, jpeg, random_variant,  # noqa: F401
                                   resample, retissue, tissue_masks, window)
from lungct.guard.verdict import as_gray, spread  # noqa: F401

__all__ = list(_guard_all)
