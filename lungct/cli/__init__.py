"""The command line: ``python -m lungct COMMAND``, one parser for every command.

Split by job: ``parser`` (the parser, the order of the commands, ``main``),
``data`` (split, leakage), ``models`` (train, cards, half, evaluate),
``predict`` and ``case``. Commands whose logic lives lower in the package
(``export``, ``pacs``, ``external``, ``pointing``, ``bench``, ``bench-app``,
``bench-study``, ``safety-report``, ``results-table``, ``guard``,
``tracking``) register themselves with their module's ``add_command``; those
modules never import this package. The benchmarks, the safety report, the
results table, the guard and tracking also keep their own ``python -m``
entry (``python -m lungct.bench``, made by ``lungct.entry_points``).
``parser.COMMANDS`` lists every command and where it lives: a new command
is one line there.

>>> from lungct.cli import main
>>> main(["evaluate", "--model", "student_kd"])  # doctest: +SKIP
"""

from lungct.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
