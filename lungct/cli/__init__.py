"""The command line: ``python -m lungct COMMAND``, one parser for every command.

Users run ``predict``, ``case``, ``pacs`` and ``guard``; research runs under
``python -m lungct lab COMMAND``. Split by job: ``parser`` (the parser, the
order of the commands, ``main``), ``data`` (split, leakage), ``models``
(train, cards, half, evaluate), ``predict`` and ``case``. Commands whose logic
lives lower in the package register themselves with their module's
``add_command(sub, common)``; those modules never import this package.
``parser.COMMANDS`` and ``parser.LAB_COMMANDS`` list every command and where it
lives: a new command is one line there.

>>> from lungct.cli import main
>>> main(["lab", "evaluate", "--model", "student_kd"])  # doctest: +SKIP
"""

from lungct.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
