"""The import contracts in ``.importlinter`` hold: layers only import downwards, no cycles.

A new module must be placed in a layer (the layers contract is exhaustive).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"


@pytest.mark.parametrize("contract", ["layers", "acyclic"])
def test_import_contract_holds(contract, capsys):
    from importlinter.cli import lint_imports
    code = lint_imports(config_filename=str(CONFIG), limit_to_contracts=(contract,),
                        no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out[-4000:]


def code_map() -> list[tuple[str, str]]:
    """(path cell, description cell) of each row of the README's "Code map" table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ", 1) for line in section.splitlines()
            if line.startswith("| `") and " | " in line]
    return [(path, text) for path, text in rows]


def test_the_code_map_places_every_module_in_its_package_row():
    """Each subpackage's row names every module in it; each top-level module is in a row's
    path cell; no row points at a path that does not exist (a map that went stale)."""
    import re

    rows = code_map()
    assert rows, "the README has no Code map table"
    missing, stale = [], []
    for path in sorted((ROOT / "lungct").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.stem == "__init__" or "__pycache__" in rel.parts:
            continue
        if len(rel.parts) == 2:   # a top-level module: its own path in a path cell
            if not any(f"`{rel.as_posix()}`" in cells for cells, _ in rows):
                missing.append(rel.as_posix())
            continue
        package = "/".join(rel.parts[:-1]) + "/"
        row = [text for cells, text in rows if f"`{package}`" in cells]
        if not row or f"`{path.stem}`" not in row[0]:
            missing.append(rel.as_posix())
    for cells, _ in rows:
        for named in re.findall(r"`([^`]+)`", cells):
            if not (ROOT / named.replace("<name>/", "student_kd/")).exists():
                stale.append(named)
    assert not missing, f"the Code map does not place: {missing}"
    assert not stale, f"the Code map names paths that do not exist: {stale}"


def test_the_package_top_stays_small():
    """The product is found in subpackages: at most 12 modules at the top of ``lungct/``."""
    top = sorted(p.name for p in (ROOT / "lungct").glob("*.py"))
    assert len(top) <= 12, top


def test_the_public_api_imports_only_the_product():
    """``import lungct``'s lazy names (``lungct._LAZY``) come from the product path and the
    layers below it, never from the lab, the app or the command line (import-linter does
    not see these string imports), and each resolves."""
    import lungct

    allowed = ("lungct.pipeline", "lungct.inference", "lungct.guard", "lungct.findings",
               "lungct.explain", "lungct.models", "lungct.preprocess", "lungct.lungs")
    for name, module in lungct._LAZY.items():
        assert module.startswith(allowed), (name, module)
        assert getattr(lungct, name) is not None
