"""The one base class of lungct's own errors.

Every error the package raises on purpose (an unusable model, a missing
guard, an unreadable image, an ONNX file that cannot be used) derives from
``LungctError``, so the command line catches one type and prints its
message: a user sees what was wrong, never a traceback.
"""

from __future__ import annotations


class LungctError(Exception):
    """Base of the package's deliberate errors; the message is meant for the user."""
