"""The input guard: which slices may be classified, and why the others may not.

Split by job: ``verdict`` (the four cases and their words), ``anatomy`` (body
outline and lung fields), ``features`` (fixed ImageNet features), ``density``
(the learned Gaussian), ``variants`` (other renderings, for fitting),
``model`` (the guard itself); fitting and building it is
``lungct.training.guard_fit``, its command ``lungct.cli.guard`` (``lungct guard``).

>>> from lungct.guard import load_guard
>>> load_guard().check(gray).status        # doctest: +SKIP
'accepted'
"""

from lungct.guard.model import (CARD_FILE, GUARD_NAME, WEIGHTS_FILE, GuardLoadError, InputGuard,
                                OODGuard, guard_config, guard_dir)
from lungct.guard.verdict import (ACCEPTED, NON_CT_MODALITIES, NOT_CT, NOT_IMAGE, OUTSIDE,
                                  OUTSIDE_LUNGS, REJECTED, STATUSES, OutOfDistribution, Verdict,
                                  colour_verdict, modality_verdict)


def load_guard(path=None, cfg: dict | None = None) -> InputGuard:
    """The shipped guard (``models/ood_guard``) or the one in ``path``; GuardLoadError if absent."""
    return InputGuard.load(path, cfg)


__all__ = ["ACCEPTED", "CARD_FILE", "GUARD_NAME", "GuardLoadError", "InputGuard",
           "NON_CT_MODALITIES", "NOT_CT", "NOT_IMAGE", "OODGuard", "OUTSIDE", "OUTSIDE_LUNGS",
           "OutOfDistribution", "REJECTED", "STATUSES", "Verdict", "WEIGHTS_FILE",
           "colour_verdict", "guard_config", "guard_dir", "load_guard", "modality_verdict"]
