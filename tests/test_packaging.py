"""A plain ``pip install -e .`` must give a working product: every third-party module the
package imports is declared in pyproject.toml, and requirements.txt pins each declaration.

Why: ONNX Runtime, OpenCV and scikit-image were only in requirements.txt, so an install by
pip alone (no ``make``) lacked the runtime that serves the shipped int8 models and the
segmentation every slice goes through.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"psutil"}
"""Imported inside ``try`` with a fallback (``lungct.resources``: /proc when absent)."""


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _third_party_imports() -> set[str]:
    mods: set[str] = set()
    for path in (ROOT / "lungct").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "lungct"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in project["dependencies"]}


def _pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_name(name)] = version.strip()
    return pins


def test_every_imported_module_is_a_declared_dependency():
    dists = packages_distributions()
    declared = _declared()
    missing = []
    for module in sorted(_third_party_imports() - OPTIONAL):
        names = {_name(d) for d in dists.get(module, [])}
        assert names, f"{module} is imported but installed by no distribution here"
        if not names & declared:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported but not in pyproject.toml dependencies: {missing}"


def test_requirements_pin_every_declared_dependency():
    pins = _pinned()
    unpinned = sorted(d for d in _declared() if d not in pins)
    assert not unpinned, f"pyproject.toml dependencies without a pin in requirements.txt: {unpinned}"
