"""The command line is one parser (``lungct.cli``) with every command; old entry points run too.

No model, no data: only parsing, help and one error path.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from lungct.cli import build_parser, main
from lungct.cli.parser import COMMANDS
from lungct.config import REPO_ROOT

EVERY_COMMAND = {"split", "leakage", "train", "evaluate", "predict", "export", "quantize", "cards", "half",
                 "case", "pacs", "external", "pointing", "robustness", "lesion-check", "cv", "probe", "bench", "bench-app", "bench-study",
                 "safety-report", "results-table", "guard", "tracking", "lab"}

NEW_COMMANDS = [["bench"], ["bench-app"], ["bench-app", "cam"], ["bench-app", "fidelity"],
                ["bench-app", "memory"], ["bench-study"], ["safety-report"], ["results-table"],
                ["guard"], ["guard", "fit"], ["guard", "check"], ["tracking"],
                ["tracking", "import"]]

OWN_ENTRY_POINTS = {  # python -m MODULE: dvc.yaml, the Makefile and the reports name these
    "lungct.bench": [], "lungct.bench_app": ["cam"], "lungct.bench_study": [],
    "lungct.safety_report": [], "lungct.results_table": [], "lungct.guard.cli": ["fit"],
    "lungct.training.tracking": ["import"]}


def _commands(parser) -> list[str]:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(action.choices)


def _exit_code(run) -> int:
    with pytest.raises(SystemExit) as exit_info:
        run()
    return exit_info.value.code


def test_the_parser_lists_every_command():
    assert set(_commands(build_parser())) == EVERY_COMMAND


def test_each_registry_entry_registers_its_own_command():
    """``main`` builds only the command it runs: each entry must register exactly that name."""
    assert [name for name, _ in COMMANDS] == _commands(build_parser())
    for name, _ in COMMANDS:
        assert _commands(build_parser(name)) == [name]


@pytest.mark.parametrize("argv", NEW_COMMANDS, ids=" ".join)
def test_help_of_the_new_commands(argv, capsys):
    assert _exit_code(lambda: main([*argv, "--help"])) == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m lungct {' '.join(argv)}")


@pytest.mark.parametrize("module", sorted(OWN_ENTRY_POINTS))
def test_the_modules_own_entry_points_still_parse(module, capsys):
    argv = [*OWN_ENTRY_POINTS[module], "--help"]
    assert _exit_code(lambda: importlib.import_module(module).main(argv)) == 0
    assert capsys.readouterr().out.startswith("usage: python -m lungct.")


@pytest.mark.parametrize("argv", [["guard", "--params", "p.yaml", "fit"],
                                  ["guard", "fit", "--params", "p.yaml"],
                                  ["pacs", "--params", "p.yaml", "studies"],
                                  ["tracking", "import", "m", "--params", "p.yaml"]])
def test_config_options_before_or_after_a_verb(argv):
    """A verb repeats --params/--preset/--set without wiping what came before it."""
    args = build_parser().parse_args(argv)
    assert args.params == "p.yaml"


def test_an_unknown_model_is_one_error_line_and_status_2():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lungct", "evaluate", "--model", "nope"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert done.stdout == ""
