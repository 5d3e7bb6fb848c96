"""Model factory, architectures and self-describing checkpoints."""

from lungct.models import architectures  # noqa: F401  (registers the architectures)
from lungct.models.checkpoint import (ModelLoadError, list_shipped, load_model,  # noqa: F401
                                      save_model)
from lungct.models.registry import (arch_info, cam_target_layers, create_model,  # noqa: F401
                                    list_models)
from lungct.models.weights import PretrainedWeightsUnavailable  # noqa: F401
