"""Command line: ``python -m lungct {split,leakage,train,evaluate,predict,...}``.

Every command reads params.yaml (``--params``, ``--preset``, ``--set key=value``)
so the CLI, the DVC stages and the app share one configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lungct.config import config_options
from lungct.errors import run_command

COMMANDS = (
    ("split", "lungct.cli.data:add_split"),
    ("leakage", "lungct.cli.data:add_leakage"),
    ("train", "lungct.cli.models:add_train"),
    ("cards", "lungct.cli.models:add_cards"),
    ("half", "lungct.cli.models:add_half"),
    ("predict", "lungct.cli.predict:add_command"),
    ("evaluate", "lungct.cli.models:add_evaluate"),
    ("export", "lungct.onnx_export:add_command"),
    ("quantize", "lungct.quantize:add_command"),
    ("case", "lungct.cli.case:add_command"),
    ("pacs", "lungct.pacs.cli:add_command"),
    ("external", "lungct.external:add_command"),
    ("pointing", "lungct.pointing:add_command"),
    ("robustness", "lungct.robustness:add_command"),
    ("lesion-check", "lungct.lesion_check:add_command"),
    ("cv", "lungct.training.crossval:add_command"),
    ("probe", "lungct.probe:add_command"),
    ("bench", "lungct.bench:add_command"),
    ("bench-app", "lungct.bench_app:add_command"),
    ("bench-study", "lungct.bench_study:add_command"),
    ("safety-report", "lungct.safety_report:add_command"),
    ("results-table", "lungct.results_table:add_command"),
    ("guard", "lungct.guard.cli:add_command"),
    ("tracking", "lungct.training.tracking:add_command"),
    ("lab", "lungct.lab.cli:add_command"),
)
"""Every command in ``--help`` order, and the ``add_command(sub, common)`` that registers it.

Named as ``module:function`` and imported when needed, so a command loads
only its own module (``case`` does not import the benchmarks); ``--help``
loads them all.
"""


def _registrar(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, only that one gets its arguments."""
    parser = argparse.ArgumentParser(prog="python -m lungct", description=__doc__.split("\n")[0])
    common = config_options()
    sub = parser.add_subparsers(dest="command", required=True)
    for name, target in COMMANDS:
        if command in (None, name):
            _registrar(target)(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error a user can fix is one ``error:`` line and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in dict(COMMANDS) else None
    return run_command(build_parser(command), argv)
