"""The command line is one parser (``lungct.cli``): the users' commands, and ``lab`` for research.

No model, no data: only parsing, help and one error path.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lungct.cli import build_parser, main
from lungct.cli.parser import COMMANDS, LAB_COMMANDS
from lungct.config import REPO_ROOT

USER_COMMANDS = ["predict", "case", "pacs", "guard", "lab"]
LAB = {"split", "leakage", "train", "half", "evaluate", "cards", "export", "quantize", "tracking",
       "cv", "probe", "external", "pointing", "robustness", "lesion-check", "findings", "bench",
       "bench-app", "bench-study", "safety-report", "results-table"}

NEW_COMMANDS = [["lab", "bench"], ["lab", "bench-app"], ["lab", "bench-app", "cam"],
                ["lab", "bench-app", "fidelity"], ["lab", "bench-app", "memory"],
                ["lab", "bench-study"], ["lab", "safety-report"], ["lab", "results-table"],
                ["guard"], ["guard", "fit"], ["guard", "check"], ["lab", "tracking"],
                ["lab", "tracking", "import"], ["pacs", "serve"], ["lab", "findings"]]


def _commands(parser) -> list[str]:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(action.choices)


def _exit_code(run) -> int:
    with pytest.raises(SystemExit) as exit_info:
        run()
    return exit_info.value.code


def _lab_commands(parser) -> list[str]:
    lab = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return _commands(lab.choices["lab"])


def test_users_see_four_commands_and_the_lab():
    """The users' commands at the top, every research command under ``lab``."""
    assert _commands(build_parser()) == USER_COMMANDS
    assert set(_lab_commands(build_parser())) == LAB


def test_each_registry_entry_registers_its_own_command():
    """``main`` builds only the command it runs: each entry must register exactly that name."""
    assert [name for name, _ in COMMANDS] == _commands(build_parser())
    for name, _ in COMMANDS:
        assert _commands(build_parser(name)) == [name]
    for name, _ in LAB_COMMANDS:
        assert _lab_commands(build_parser("lab", name)) == [name]


def test_no_module_keeps_a_private_entry_point():
    """One parser: ``python -m lungct`` is the only program in the package."""
    package = REPO_ROOT / "lungct"
    mains = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
             if "__name__ == \"__main__\"" in p.read_text() or p.name == "__main__.py"]
    assert mains == ["__main__.py"]


def test_scripts_and_docs_call_the_one_command():
    """What users and CI run (Makefile, CI, training scripts, dvc.yaml, README, cards) calls
    ``python -m lungct ...``: a ``python -m lungct.<module>`` left over names a program
    that no longer exists, and fails only when that script runs."""
    import re

    files = [REPO_ROOT / n for n in ("Makefile", "dvc.yaml", "README.md", ".ci/run")]
    files += sorted((REPO_ROOT / "training").glob("*.sh"))
    files += sorted((REPO_ROOT / "models").glob("*/README.md"))
    stale = [f"{f.relative_to(REPO_ROOT)}: {m}" for f in files if f.is_file()
             for m in re.findall(r"-m lungct\.[\w.]+", f.read_text(encoding="utf-8"))]
    assert not stale, stale


@pytest.mark.parametrize("argv", NEW_COMMANDS, ids=" ".join)
def test_help_of_the_new_commands(argv, capsys):
    assert _exit_code(lambda: main([*argv, "--help"])) == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m lungct {' '.join(argv)}")


@pytest.mark.parametrize("argv", [["guard", "--params", "p.yaml", "fit"],
                                  ["guard", "fit", "--params", "p.yaml"],
                                  ["pacs", "--params", "p.yaml", "studies"],
                                  ["lab", "tracking", "import", "m", "--params", "p.yaml"]])
def test_config_options_before_or_after_a_verb(argv):
    """A verb repeats --params/--preset/--set without wiping what came before it."""
    args = build_parser().parse_args(argv)
    assert args.params == "p.yaml"


def test_an_unknown_model_is_one_error_line_and_status_2():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lungct", "lab", "evaluate", "--model", "nope"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert done.stdout == ""
