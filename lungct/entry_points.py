"""Modules that are both a command of ``python -m lungct`` and a program of their own.

``lungct.bench`` is ``python -m lungct bench`` and also ``python -m lungct.bench``
(dvc.yaml, the Makefile and the model cards name the latter). Such a module
writes one ``add_arguments(parser)`` and gets both entry points from it, so the
two spell the command alike:

    add_command, main = entry_points("lungct.bench", "bench", add_arguments, __doc__,
                                     "size and CPU speed of every model")

``add_command(sub, common)`` is what ``lungct.cli`` registers; ``main(argv)``
is what ``if __name__ == "__main__"`` runs. Both read the config options of
``lungct.config.config_options`` and report errors through
``lungct.errors.run_command``.
"""

from __future__ import annotations

import argparse
from typing import Callable

from lungct.config import config_options
from lungct.errors import run_command


def entry_points(module: str, command: str, add_arguments: Callable, description: str,
                 help: str) -> tuple[Callable, Callable]:
    """``(add_command, main)`` of ``module``, which is ``command`` under ``python -m lungct``."""

    def add_command(sub, common) -> None:
        add_arguments(sub.add_parser(command, parents=[common], help=help,
                                     description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter))

    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter,
                                         parents=[config_options()])
        add_arguments(parser)
        return run_command(parser, argv)

    return add_command, main
