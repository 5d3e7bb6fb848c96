"""Command line: ``python -m lungct COMMAND``: the users' commands, and ``lab`` for research.

Users: ``predict`` (images or folders), ``case`` (one study), ``pacs`` (a
PACS round trip), ``guard`` (is this a lung CT slice?). Researchers:
``python -m lungct lab COMMAND`` (data splits, training, evaluation, export,
benchmarks, safety report, findings fit). Every command reads params.yaml
(``--params``, ``--preset``, ``--set key=value``) so the CLI, the DVC stages
and the app share one configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lungct.config import config_options
from lungct.errors import run_command

COMMANDS = (
    ("predict", "lungct.cli.predict:add_command"),
    ("case", "lungct.cli.case:add_command"),
    ("pacs", "lungct.pacs.cli:add_command"),
    ("guard", "lungct.cli.guard:add_command"),
    ("lab", "lungct.cli.parser:add_lab"),
)
"""The users' commands in ``--help`` order, and the ``add_command(sub, common)`` of each.

Named as ``module:function`` and imported when needed, so a command loads
only its own module (``case`` does not import the benchmarks); ``--help``
loads them all.
"""

LAB_COMMANDS = (
    ("split", "lungct.cli.data:add_split"),
    ("leakage", "lungct.cli.data:add_leakage"),
    ("train", "lungct.cli.models:add_train"),
    ("half", "lungct.cli.models:add_half"),
    ("evaluate", "lungct.cli.models:add_evaluate"),
    ("cards", "lungct.cli.models:add_cards"),
    ("export", "lungct.training.onnx_export:add_command"),
    ("quantize", "lungct.training.quantize:add_command"),
    ("tracking", "lungct.training.tracking:add_command"),
    ("cv", "lungct.lab.crossval:add_command"),
    ("probe", "lungct.lab.probe:add_command"),
    ("external", "lungct.lab.external:add_command"),
    ("pointing", "lungct.lab.pointing:add_command"),
    ("robustness", "lungct.lab.robustness:add_command"),
    ("lesion-check", "lungct.lab.lesion_check:add_command"),
    ("findings", "lungct.lab.findings:add_command"),
    ("bench", "lungct.lab.bench:add_command"),
    ("bench-app", "lungct.lab.bench_app:add_command"),
    ("bench-study", "lungct.lab.bench_study:add_command"),
    ("safety-report", "lungct.lab.safety_report:add_command"),
    ("results-table", "lungct.lab.results_table:add_command"),
)
"""The research commands, under ``python -m lungct lab``: the pipeline (dvc.yaml) and the
measurements behind every figure in the README and the model cards."""


def _registrar(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def add_lab(sub, common, command: str | None = None) -> None:
    """``lab`` and its commands (only ``command`` when given: ``main`` loads what it runs)."""
    p = sub.add_parser("lab", help="research: data, training, export, measurements",
                       description="The research commands: what builds and measures the "
                                   "models and the findings layer the product ships.")
    lab = p.add_subparsers(dest="lab_command", required=True)
    for name, target in LAB_COMMANDS:
        if command in (None, name):
            _registrar(target)(lab, common)


def build_parser(command: str | None = None,
                 lab_command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command`` (and ``lab_command``), only that one."""
    parser = argparse.ArgumentParser(prog="python -m lungct", description=__doc__.split("\n")[0])
    common = config_options()
    sub = parser.add_subparsers(dest="command", required=True)
    for name, target in COMMANDS:
        if command in (None, name):
            if name == "lab":
                add_lab(sub, common, lab_command)
            else:
                _registrar(target)(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error a user can fix is one ``error:`` line and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in dict(COMMANDS) else None
    lab_command = (argv[1] if command == "lab" and len(argv) > 1
                   and argv[1] in dict(LAB_COMMANDS) else None)
    return run_command(build_parser(command, lab_command), argv)
