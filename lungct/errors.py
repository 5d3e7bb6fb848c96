"""lungct's own errors: the one base class, and how a command reports them.

Every error the package raises on purpose (an unusable model, a missing
guard, an unreadable image, an ONNX file that cannot be used) derives from
``LungctError``, so the command line catches one type and prints its
message: a user sees what was wrong, never a traceback (``run_command``).
"""

from __future__ import annotations

import sys


class LungctError(Exception):
    """Base of the package's deliberate errors; the message is meant for the user."""


USER_ERRORS = (LungctError, FileNotFoundError, ValueError)
"""What a command reports as one line: the package's own errors, a missing file, a bad value."""


def run_command(parser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command (``args.func``); a ``USER_ERRORS`` error is status 2.

    The message goes to stderr as one ``error: ...`` line, never a traceback.
    Every entry point calls this: ``python -m lungct`` and the modules' own
    ``python -m lungct lab bench`` and the like.
    """
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
